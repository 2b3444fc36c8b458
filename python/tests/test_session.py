"""netstorm.Session on 2- and 3-node loopback clusters: in-place all-reduce of numpy arrays
and torch tensors bit-identical on every node, AVG, broadcast, packing over several rounds,
and every refusal with the message that says what to do."""

import builtins

import numpy as np
import pytest
import torch

import netstorm
from conftest import run_nodes


def int_grads(node_id, n, seed=0):
    """Small integers as float32: their sum is exact in any order, so the reference sum is
    the one value every correct reduction order gives."""
    rng = np.random.default_rng(seed * 1000 + node_id)
    return rng.integers(-1000, 1000, size=n).astype(np.float32)


def connect(config, node, **kw):
    return netstorm.Session(config, node, connect_timeout=60, **kw)


@pytest.mark.parametrize("nodes", [2, 3])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_allreduce_is_the_exact_sum_on_every_node(make_cluster, nodes, kind):
    cl = make_cluster(nodes=nodes, buffer_elems=5000)

    def node(config, name):
        s = connect(config, name)
        out = []
        for step in range(3):
            g = int_grads(s.node_id, s.buffer_elems, step)
            buf = torch.from_numpy(g.copy()) if kind == "torch" else g.copy()
            st = s.allreduce(buf)
            assert st.round == step and st.rounds == 1 and st.contributors == nodes
            assert st.elems == 5000 and st.time > 0
            out.append(np.asarray(buf).copy())
        return out

    results = run_nodes(cl, node)
    for step in range(3):
        want = sum(int_grads(i, 5000, step) for i in range(nodes))
        for i, got in enumerate(results):
            assert got[step].tobytes() == want.tobytes(), f"node {i} step {step}"


def test_arbitrary_floats_agree_bit_for_bit_across_nodes(make_cluster):
    cl = make_cluster(nodes=3, buffer_elems=3000)

    def node(config, name):
        s = connect(config, name)
        x = np.random.default_rng(s.node_id).standard_normal(3000).astype(np.float32)
        ref = x.copy()
        s.allreduce(x)
        return x, ref

    res = run_nodes(cl, node)
    assert res[0][0].tobytes() == res[1][0].tobytes() == res[2][0].tobytes()
    np.testing.assert_allclose(res[0][0], res[0][1] + res[1][1] + res[2][1], rtol=1e-5, atol=1e-5)


def test_avg_divides_by_the_contributors(make_cluster):
    cl = make_cluster(nodes=3, buffer_elems=2000)

    def node(config, name):
        s = connect(config, name)
        x = torch.from_numpy(int_grads(s.node_id, 2000))
        st = s.allreduce(x, op="avg")
        return x.numpy().copy(), st.contributors

    res = run_nodes(cl, node)
    want = sum(int_grads(i, 2000) for i in range(3)) / np.float32(3)
    for got, contributors in res:
        assert contributors == 3
        assert got.tobytes() == want.astype(np.float32).tobytes()


def test_allreduce_many_packs_buffers_into_rounds(make_cluster):
    cl = make_cluster(nodes=2, buffer_elems=1000)
    sizes = [10, 0, 2500, 1, 489]  # 3000 floats: 3 rounds of 1000, one element to spare

    def node(config, name):
        s = connect(config, name)
        bufs = [torch.from_numpy(int_grads(s.node_id * 10 + k, n)) for k, n in enumerate(sizes)]
        bufs[1] = np.zeros(0, dtype=np.float32)
        st = s.allreduce_many(bufs)
        assert st.rounds == 3 and st.elems == 3000
        st2 = s.allreduce_many([np.ones(7, dtype=np.float32)])
        assert st2.round == st.round + 1 and st2.rounds == 1
        return [np.asarray(b).copy() for b in bufs]

    res = run_nodes(cl, node)
    for k, n in enumerate(sizes):
        want = int_grads(k, n) + int_grads(10 + k, n) if n and k != 1 else np.zeros(n, np.float32)
        for r in res:
            assert r[k].tobytes() == want.tobytes(), f"buffer {k}"


def test_broadcast_is_bit_identical_to_the_root(make_cluster):
    cl = make_cluster(nodes=3, buffer_elems=1000)
    special = np.array([-0.0, 0.0, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0],
                       dtype=np.float32)

    def node(config, name):
        s = connect(config, name)
        rng = np.random.default_rng(s.node_id)
        a = np.concatenate([special, rng.standard_normal(2491).astype(np.float32)])
        b = torch.from_numpy(rng.standard_normal(123).astype(np.float32))
        st = s.broadcast([a, b], root="b")
        assert st.rounds == 3
        c = torch.from_numpy(rng.standard_normal(1000).astype(np.float32))
        s.broadcast(c, root=0)
        return a, b.numpy().copy(), c.numpy().copy()

    res = run_nodes(cl, node)
    for r in res:
        for k in range(3):
            assert r[k].tobytes() == res[1 if k < 2 else 0][k].tobytes()
    assert np.signbit(res[0][0][0]) and not np.signbit(res[0][0][1])


def test_sync_state_copies_the_roots_bytes_exactly(make_cluster):
    cl = make_cluster(nodes=3, buffer_elems=100)
    # Every byte value, then signalling NaN, quiet NaN, -0.0 and +inf as f32 bit patterns:
    # more than one round (300 state bytes per round at 3 bytes per float).
    root_state = bytes(range(256)) * 3 + np.array(
        [0x7F800001, 0x7FC00000, 0x80000000, 0x7F800000], dtype="<u4").tobytes()

    def node(config, name):
        s = connect(config, name)
        mine = root_state if s.node_id == 1 else bytes(len(root_state))
        synced = s.sync_state(mine, 1)
        # A state of another length is refused, nothing copied, the members still in step.
        short = bytes(5) if s.node_id == 2 else root_state
        try:
            s.sync_state(short, 1)
            refused = False
        except netstorm.BufferError as e:
            refused = "the root's state is" in str(e)
        return synced, refused

    res = run_nodes(cl, node)
    assert [r[0] for r in res] == [root_state] * 3
    assert [r[1] for r in res] == [False, False, True]
    assert issubclass(netstorm.MembersJoinedError, netstorm.NetstormError)


def test_bad_buffers_are_refused_with_what_to_do(make_cluster):
    cl = make_cluster(nodes=2, buffer_elems=64)
    s = connect(str(cl.config), "a")
    cases = [
        (np.zeros(64, dtype=np.float64), "numpy float64 array: NetStorm all-reduces float32; convert with x.astype(numpy.float32)"),
        (torch.zeros(64, dtype=torch.int32), "torch.int32 tensor: NetStorm all-reduces float32; convert with tensor.float()"),
        (np.zeros(128, dtype=np.float32)[::2], "non-contiguous numpy array"),
        (torch.zeros(8, 8).t(), "non-contiguous torch tensor"),
        (torch.zeros(64, device="meta"), "torch tensor on meta: NetStorm reduces host memory; move it with tensor.cpu()"),
        (np.zeros(63, dtype=np.float32), f"buffer has 63 floats, the cluster's buffer_elems is 64: set buffer_elems = 63 in {cl.config}"),
        (memoryview(b"\0" * 256), "is not a float32 buffer"),
    ]
    ro = np.zeros(64, dtype=np.float32)
    ro.flags.writeable = False
    cases.append((ro, "read-only numpy array"))
    for buf, msg in cases:
        with pytest.raises(netstorm.BufferError) as e:
            s.allreduce(buf)
        assert msg in str(e.value), str(e.value)
        assert isinstance(e.value, ValueError)
    x = torch.zeros(32)
    with pytest.raises(netstorm.BufferError, match="overlap in memory"):
        s.allreduce_many([x[:20], x[10:]])
    with pytest.raises(netstorm.NetstormError, match='op "max" is not supported'):
        s.allreduce(np.zeros(64, np.float32), op="max")
    with pytest.raises(netstorm.NetstormError, match="broadcast root 'zz' is not a node"):
        s.broadcast(np.zeros(4, np.float32), root="zz")
    assert s.next_round == 0  # nothing was started
    s.timeout = float("inf")  # forever, not a panic
    assert s.timeout == float("inf")


def test_a_round_nobody_answers_raises_the_typed_timeout(make_cluster):
    cl = make_cluster(nodes=2, buffer_elems=100, start=False)
    cl.start("a")  # b never comes up
    s = connect(str(cl.config), "a", timeout=0.5)
    assert s.timeout == 0.5
    with pytest.raises(netstorm.TimeoutError) as e:
        s.allreduce(np.ones(100, np.float32))
    assert isinstance(e.value, builtins.TimeoutError)
    assert e.value.round == 0 and e.value.waited >= 0.5
    assert "round 0: netstorm-dp (pid" in str(e.value)
    # The round may still run: this session refuses more calls, a new one waits for it.
    with pytest.raises(netstorm.NetstormError, match="timed out in round 0, which the dp may"):
        s.allreduce(np.ones(100, np.float32))


def test_a_missing_dp_is_named_after_the_connect_timeout(make_cluster):
    cl = make_cluster(nodes=2, start=False)
    with pytest.raises(netstorm.DataPlaneNotFoundError) as e:
        netstorm.Session(cl.config, "b", connect_timeout=0.3)
    msg = str(e.value)
    assert "no netstorm-dp serves node 'b'" in msg and "netstorm up --config" in msg, msg
    assert isinstance(e.value, ConnectionError)


def test_config_errors_carry_file_line_and_key(make_cluster):
    cl = make_cluster(nodes=2, start=False)
    with pytest.raises(netstorm.ConfigError) as e:
        netstorm.Session(cl.config, "zz", connect_timeout=0)
    assert e.value.key == "node" and e.value.file == str(cl.config)
    assert "no node named 'zz' (nodes: a, b)" in str(e.value)
    text = cl.config.read_text()
    cl.config.write_text(text.replace("mbps =", "mbsp =", 1))
    with pytest.raises(netstorm.ConfigError) as e:
        netstorm.Session(cl.config, "a", connect_timeout=0)
    assert e.value.file == str(cl.config) and e.value.line is not None
    assert "unknown key 'mbsp'" in str(e.value)
    line = text.splitlines()[e.value.line - 1]
    assert line.startswith("mbps"), line
    with pytest.raises(netstorm.ConfigError) as e:
        netstorm.Session(cl.dir / "missing.toml", "a", connect_timeout=0)
    assert "cannot read cluster config" in str(e.value)


def test_nodes_packing_different_layouts_fail_instead_of_mixing(make_cluster):
    cl = make_cluster(nodes=2, buffer_elems=500)

    def node(config, name):
        s = connect(config, name)
        bufs = [np.ones(100, np.float32)] if name == "a" else [np.ones(60, np.float32), np.ones(40, np.float32)]
        with pytest.raises(netstorm.BufferError) as e:
            s.allreduce_many(bufs)
        return str(e.value)

    for msg in run_nodes(cl, node):
        assert "the nodes packed different buffer layouts" in msg, msg
