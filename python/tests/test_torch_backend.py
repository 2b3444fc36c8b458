"""The "netstorm" torch.distributed backend and the DDP hooks, on loopback clusters: DDP
trains the digits MLP to the accuracy gloo reaches with the same data and seed; what is not
a float all-reduce goes to gloo; the hierarchical hook equals a flat all-reduce."""

import numpy as np
import pytest

import torch_nodes
from conftest import free_ports, spawn_nodes

PARAMS = 64 * 64 + 64 + 64 * 10 + 10  # the digits MLP


@pytest.mark.parametrize("hook", [False, True], ids=["ddp-default", "allreduce-hook"])
def test_ddp_over_netstorm_trains_like_gloo(make_cluster, hook):
    # One spare float for the layout check: the whole model is one round per step.
    cl = make_cluster(nodes=3, buffer_elems=PARAMS + 1)
    ns = spawn_nodes(cl, torch_nodes.train_ddp, "netstorm", 3, free_ports(1)[0], hook)
    gloo = spawn_nodes(cl, torch_nodes.train_ddp, "gloo", 3, free_ports(1)[0], hook)
    # Every rank holds the same model (bit for bit) in both runs.
    for run in (ns, gloo):
        assert all(r[1].tobytes() == run[0][1].tobytes() for r in run)
    acc_ns, acc_gloo = ns[0][0], gloo[0][0]
    assert acc_gloo > 0.9, acc_gloo
    assert abs(acc_ns - acc_gloo) <= 0.02, (acc_ns, acc_gloo)
    # Same updates up to float rounding (the sum order differs from gloo's ring).
    np.testing.assert_allclose(ns[0][1], gloo[0][1], atol=2e-3)


def test_side_ops_go_to_gloo_and_refusals_say_why(make_cluster):
    cl = make_cluster(nodes=3, buffer_elems=2000)
    res = spawn_nodes(cl, torch_nodes.side_ops, 3, free_ports(1)[0])
    for r in res:
        assert r["backend"] == "netstorm"
        assert r["broadcast"] == [0.0, 2.0, 4.0, 6.0, 8.0]
        assert r["allgather"] == [[0, 0], [1, 10], [2, 20]]
        assert r["int_sum"] == 6
        assert r["avg"] == [2.0]
        nc, avg_int, mx = r["refusals"]
        assert "BufferError" in nc and "non-contiguous torch tensor" in nc, nc
        assert "ReduceOp.AVG goes through NetStorm, which reduces float32" in avg_int, avg_int
        assert mx == "gloo"


@pytest.mark.parametrize("integer_data", [True, False], ids=["exact", "mlp"])
def test_hierarchical_hook_equals_a_flat_allreduce(make_cluster, integer_data):
    cl = make_cluster(nodes=2, buffer_elems=6000)
    port = free_ports(1)[0]
    jobs = [(r, str(cl.config), "ab"[r // 2]) for r in range(4)]
    # Ranks 0, 1 (site a) and 2, 3 (site b); the process derives its site from its rank.
    res = spawn_nodes(cl, torch_nodes.hierarchical, port, integer_data, extra=jobs[2:])
    for hier, flat, stats in res:
        for h, f in zip(hier, flat):
            if integer_data:
                assert h.tobytes() == f.tobytes()
            else:
                np.testing.assert_allclose(h, f, rtol=1e-5, atol=1e-7)
    leaders = [s for _, _, s in res if s is not None]
    assert len(leaders) == 2
    for rounds, contributors, elems in leaders:
        # Every bucket of the step plus the process count in one round, both sites in.
        assert rounds == 1 and contributors == 2
        assert elems == sum(h.size for h in res[0][0]) + 1


def test_backend_setup_errors_say_what_to_set(make_cluster, monkeypatch):
    import datetime

    import torch.distributed as dist

    import netstorm
    import netstorm.torch

    monkeypatch.delenv("NETSTORM_CONFIG", raising=False)
    monkeypatch.delenv("NETSTORM_NODE", raising=False)
    t = datetime.timedelta(seconds=10)
    with pytest.raises(netstorm.ConfigError, match="set NETSTORM_CONFIG and NETSTORM_NODE"):
        netstorm.torch.ProcessGroupNetStorm(dist.HashStore(), 0, 1, t)
    cl = make_cluster(nodes=2, buffer_elems=100)
    with pytest.raises(netstorm.ConfigError, match=r"world_size=1\), but .* has 2 nodes \(a, b\)"):
        netstorm.torch.ProcessGroupNetStorm(dist.HashStore(), 0, 1, t, config=str(cl.config), node="a")
