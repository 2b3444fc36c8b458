"""PyTorch gloo's all_reduce of one float32 buffer, timed like netstorm-trainer: the baseline
the testbed (scripts/testbed.sh --vs-gloo) runs on the same namespaces, links and buffer.

One process per node. Rank 0 serves the rendezvous store at --master; every rank binds gloo
to its own --addr (inside a network namespace the host name resolves to nothing useful, so
the device is created for that address explicitly). Each round all-reduces ranks' buffers
(rank r holds r + 1 + i % 7, so the sum is known exactly) and is checked; the first
--warmup rounds are not timed. The last line ends like the trainer's:
``gloo <rank>: OK <R> rounds of <N> elements ...; <X> Mbit/s of buffer per second of sync``.
"""

import argparse
import datetime
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world", type=int, required=True)
    ap.add_argument("--master", required=True, help="HOST:PORT of rank 0's store")
    ap.add_argument("--addr", required=True, help="this rank's address for gloo")
    ap.add_argument("--elems", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timeout-s", type=float, default=120)
    a = ap.parse_args()

    import torch
    import torch.distributed as dist

    host, port = a.master.rsplit(":", 1)
    timeout = datetime.timedelta(seconds=a.timeout_s)
    store = dist.TCPStore(host, int(port), a.world, a.rank == 0, timeout)
    opts = dist.ProcessGroupGloo._Options()
    opts._devices = [dist.ProcessGroupGloo.create_device(hostname=a.addr)]
    opts._timeout = timeout
    pg = dist.ProcessGroupGloo(store, a.rank, a.world, opts)

    pattern = torch.arange(a.elems, dtype=torch.float32) % 7
    expected = pattern * a.world + sum(range(1, a.world + 1))
    total = 0.0
    for r in range(a.warmup + a.rounds):
        buf = pattern + (a.rank + 1)
        t0 = time.perf_counter()
        pg.allreduce([buf]).wait()
        dt = time.perf_counter() - t0
        if not torch.equal(buf, expected):
            bad = int((buf != expected).nonzero()[0])
            sys.exit(f"gloo {a.rank}: round {r}: element {bad} is {buf[bad]}, expected {expected[bad]}")
        if r >= a.warmup:
            total += dt
        print(f"gloo {a.rank}: round {r} ok in {dt * 1e3:.3f} ms", flush=True)
    mbps = a.elems * 32.0 * a.rounds / max(total, 1e-9) / 1e6
    print(f"gloo {a.rank}: OK {a.rounds} rounds of {a.elems} elements (+{a.warmup} warm-up), "
          f"exact; {mbps:.1f} Mbit/s of buffer per second of sync", flush=True)


if __name__ == "__main__":
    main()
