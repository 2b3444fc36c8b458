#!/usr/bin/env python3
"""Data-parallel training of an MLP on scikit-learn's digits (shipped with scikit-learn: no
download), one process per site, through NetStorm (backend "netstorm" + the one-round-per-step
DDP hook) or plain gloo, same data and seed. Rank 0 prints one JSON line per epoch:
``{"backend", "epoch", "time", "acc", "loss"}`` (time: seconds since training started).

    python digits.py --backend netstorm --rank 0 --world 3 --master 10.88.0.1:29500 \\
        --config cluster.toml --node n1
    python digits.py --backend gloo --rank 0 --world 3 --master 10.88.0.1:29500 --host 10.88.0.1

``--host`` binds gloo to this site's address (the netstorm backend takes it from the cluster
config). scripts/train-digits.sh runs both on the namespace testbed and compares them.
"""

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

HIDDEN = 256


def model_for(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, 10),
    )


def param_count():
    return sum(p.numel() for p in model_for(0).parameters())


def data(rank, world, seed):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(len(x))
    x, y = torch.from_numpy(x[perm]), torch.from_numpy(y[perm])
    return x[:1400][rank::world], y[:1400][rank::world], x[1400:], y[1400:]


def gloo_at(host):
    """A gloo backend bound to ``host`` (a namespace's address, which the hostname does not
    resolve to)."""

    def create(store, rank, size, timeout):
        opts = dist.ProcessGroupGloo._Options()
        opts._timeout = timeout
        opts._devices = [dist.ProcessGroupGloo.create_device(hostname=host)]
        return dist.ProcessGroupGloo(store, rank, size, opts)

    dist.Backend.register_backend("gloo_at", create, devices=["cpu"])
    return "gloo_at"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["netstorm", "gloo"], required=True)
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world", type=int, required=True)
    ap.add_argument("--master", required=True, help="ADDR:PORT of rank 0's store")
    ap.add_argument("--config", help="cluster config (netstorm)")
    ap.add_argument("--node", help="this site's node (netstorm)")
    ap.add_argument("--host", help="address gloo binds to")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    addr, port = a.master.rsplit(":", 1)
    os.environ.update(MASTER_ADDR=addr, MASTER_PORT=port)
    timeout = datetime.timedelta(seconds=300)
    if a.backend == "netstorm":
        import netstorm.torch

        netstorm.torch.configure(config=a.config, node=a.node)
        dist.init_process_group("netstorm", rank=a.rank, world_size=a.world, timeout=timeout)
    else:
        backend = gloo_at(a.host) if a.host else "gloo"
        dist.init_process_group(backend, rank=a.rank, world_size=a.world, timeout=timeout)
    model = model_for(a.seed)
    ddp = DDP(model)
    if a.backend == "netstorm":
        # Every bucket of a step in one NetStorm round (the config's buffer_elems = the
        # model's parameters + 1).
        ddp.register_comm_hook(None, netstorm.torch.allreduce_hook)
    x, y, xs, ys = data(a.rank, a.world, a.seed)
    opt = torch.optim.SGD(ddp.parameters(), lr=a.lr, momentum=0.9)
    g = torch.Generator().manual_seed(a.seed)
    steps = len(x) // a.batch
    dist.barrier()
    t0 = time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(steps):
            idx = perm[i * a.batch:(i + 1) * a.batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(ddp(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item()
        elapsed = time.perf_counter() - t0
        if a.rank == 0:
            with torch.no_grad():
                acc = (model(xs).argmax(1) == ys).float().mean().item()
            print(json.dumps({"backend": a.backend, "epoch": epoch, "time": round(elapsed, 3),
                              "acc": round(acc, 4), "loss": round(total / steps, 4)}),
                  flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--param-count":
        print(param_count())
    else:
        main()
