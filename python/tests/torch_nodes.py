"""What each process of the torch.distributed tests runs (a module of its own, so spawned
children can import it)."""

import datetime
import os

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def digits(rank, world, seed=0):
    """scikit-learn's digits (shipped with the package: no download), standardized, a fixed
    split; this rank's shard of the training set."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(len(x))
    x, y = x[perm], y[perm]
    xt, yt, xs, ys = x[:1400], y[:1400], x[1400:], y[1400:]
    return (torch.from_numpy(xt[rank::world]), torch.from_numpy(yt[rank::world]),
            torch.from_numpy(xs), torch.from_numpy(ys))


def mlp(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def init(backend, rank, world, port, config=None, node=None):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    if backend == "netstorm":
        import netstorm.torch  # noqa: F401  (registers the backend)

        os.environ["NETSTORM_CONFIG"] = config
        os.environ["NETSTORM_NODE"] = node
    dist.init_process_group(backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))


def train_ddp(rank, config, node, backend, world, port, hook, epochs=15):
    """DDP training of the digits MLP; returns (test accuracy, final parameters). ``hook``:
    the netstorm run packs each step's buckets with ``netstorm.torch.allreduce_hook``."""
    torch.set_num_threads(1)
    init(backend, rank, world, port, config, node)
    # Each rank starts from another init: DDP's broadcast from rank 0 must make them equal.
    model = mlp(seed=rank)
    ddp = DDP(model)
    if hook and backend == "netstorm":
        import netstorm.torch

        ddp.register_comm_hook(None, netstorm.torch.allreduce_hook)
    x, y, xs, ys = digits(rank, world)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - 31, 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        acc = (model(xs).argmax(1) == ys).float().mean().item()
    params = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy().copy()
    dist.destroy_process_group()
    return acc, params


def side_ops(rank, config, node, world, port):
    """What goes to the gloo side group: broadcast, int64 allgather, int allreduce, barrier;
    AVG of float32 through NetStorm; refusals."""
    import netstorm
    import netstorm.torch

    init("netstorm", rank, world, port, config, node)
    out = {"backend": dist.get_backend()}
    t = torch.arange(5, dtype=torch.float64) * (rank + 1)
    dist.broadcast(t, src=1)
    out["broadcast"] = t.tolist()
    meta = torch.tensor([rank, 10 * rank], dtype=torch.int64)
    gathered = [torch.zeros(2, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(gathered, meta)
    out["allgather"] = [g.tolist() for g in gathered]
    n = torch.tensor([rank + 1], dtype=torch.int64)
    dist.all_reduce(n)
    out["int_sum"] = n.item()
    f = torch.full((1000,), float(rank + 1))
    dist.all_reduce(f, op=dist.ReduceOp.AVG)
    out["avg"] = f.unique().tolist()
    w = dist.all_reduce(torch.ones(3), async_op=True)
    w.wait()
    dist.barrier()
    refusals = []
    for bad, op in [(torch.ones(4).t()[None].expand(2, 4), dist.ReduceOp.SUM),
                    (torch.ones(4, dtype=torch.int32), dist.ReduceOp.AVG),
                    (torch.ones(4), dist.ReduceOp.MAX)]:
        try:
            dist.all_reduce(bad, op=op)
            refusals.append(None if op != dist.ReduceOp.MAX else "gloo")
        except Exception as e:  # noqa: BLE001
            refusals.append(f"{type(e).__name__}: {e}")
    out["refusals"] = refusals
    dist.destroy_process_group()
    return out


def hierarchical(rank, config, node, port, integer_data):
    """4 processes = 2 sites x 2; gradients through the hierarchical hook (site group =
    the site's 2 processes, leaders 0 and 2 hold the sessions of nodes a and b) and through a
    flat all-reduce over all 4 (gloo); returns both."""
    import netstorm
    import netstorm.torch

    torch.set_num_threads(1)
    init("gloo", rank, 4, port)
    sites = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    site = sites[rank // 2]
    session = netstorm.Session(config, "ab"[rank // 2], connect_timeout=60) if rank % 2 == 0 else None
    torch.manual_seed(5)
    if integer_data:
        # Integer gradients: every summation order gives the same bits, so the hierarchical
        # result must equal the flat one exactly (the division by 4 is exact too).
        model = torch.nn.Sequential(torch.nn.Linear(64, 40, bias=False), torch.nn.Linear(40, 3, bias=False))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randint(-3, 4, p.shape).float())
        x = torch.randint(-4, 5, (8, 64), generator=torch.Generator().manual_seed(rank)).float()
        loss_of = lambda out: (out * torch.arange(1.0, 4.0)).sum()  # noqa: E731
    else:
        model = mlp(seed=5)
        xs, ys, _, _ = digits(rank, 4)
        x, y = xs[:32], ys[:32]
        loss_of = lambda out: torch.nn.functional.cross_entropy(out, y)  # noqa: E731
    flat_model = __import__("copy").deepcopy(model)
    ddp = DDP(model, process_group=site, bucket_cap_mb=0.004)  # several buckets per step
    state = netstorm.torch.HierarchicalState(site, session)
    ddp.register_comm_hook(state, netstorm.torch.hierarchical_hook)
    loss_of(ddp(x)).backward()
    hier = [p.grad.clone() for p in model.parameters()]
    loss_of(flat_model(x)).backward()
    flat = []
    for p in flat_model.parameters():
        dist.all_reduce(p.grad)
        flat.append(p.grad / 4)
    stats = session.last_stats if session else None
    dist.destroy_process_group()
    return ([h.numpy() for h in hier], [f.numpy() for f in flat],
            None if stats is None else (stats.rounds, stats.contributors, stats.elems))
