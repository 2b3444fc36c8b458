#!/usr/bin/env python3
"""All-reduce of a ResNet-50-sized buffer (25.6 M floats) through the Python package against
the Rust ``Session`` (``netstorm-trainer``), on the same 2-node loopback cluster in the same
run, alternating: R rounds by the Rust trainers, then R by Python sessions (one process per
node, as the trainers, filling the buffer before each round, as they do), K times.

    python examples/bench_allreduce.py [--elems 25600000] [--rounds 5] [--repeats 3]

Prints the median round time of each (the time ``Session::allreduce`` measures, hand-over to
result back; for Python also the wall time of the whole ``allreduce`` call) and the ratio.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from netstorm.testing import Cluster, bin_dir


def rust_rounds(cl, rounds):
    procs = [
        subprocess.Popen(
            [str(bin_dir() / "netstorm-trainer"), "--config", str(cl.config), "--node", n,
             "--rounds", str(rounds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in cl.names
    ]
    times = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            sys.exit(f"netstorm-trainer failed: {err}")
        times += [float(m) / 1e3 for m in re.findall(r"ok in ([0-9.]+) ms", out)]
    return times


NODE_SCRIPT = """
import json, sys, time
import numpy as np
import netstorm
config, node, rounds, elems = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = netstorm.Session(config, node, connect_timeout=60)
src = np.arange(elems, dtype=np.float32) % 1024
buf = np.empty(elems, dtype=np.float32)
times, walls = [], []
for _ in range(rounds):
    np.copyto(buf, src)  # like netstorm-trainer, which fills its buffer before each round
    t0 = time.perf_counter()
    st = s.allreduce(buf)
    walls.append(time.perf_counter() - t0)
    times.append(st.time)
print(json.dumps([times, walls]))
"""


def python_rounds(cl, rounds, elems):
    """One Python process per node, like the Rust trainers."""
    procs = [
        subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, str(cl.config), n, str(rounds),
                          str(elems)], stdout=subprocess.PIPE, text=True)
        for n in cl.names
    ]
    times, walls = [], []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            sys.exit("python node failed")
        t, w = json.loads(out)
        times += t
        walls += w
    return times, walls


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elems", type=int, default=25_600_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mbps", type=int, default=20000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="netstorm-bench-") as d, Cluster(
        d, nodes=2, buffer_elems=a.elems, segment_elems=1024, mbps=a.mbps, trainer_timeout_s=300
    ) as cl:
        rust, py, wall = [], [], []
        rust_rounds(cl, 1)  # warm-up: policy installed, pages touched
        for k in range(a.repeats):
            rust += rust_rounds(cl, a.rounds)
            t, w = python_rounds(cl, a.rounds, a.elems)
            py += t
            wall += w
            print(f"repeat {k}: rust median {statistics.median(rust) * 1e3:.1f} ms, "
                  f"python median {statistics.median(py) * 1e3:.1f} ms", flush=True)
        r, p, w = (statistics.median(x) for x in (rust, py, wall))
        print(f"allreduce of {a.elems} floats, 2 loopback nodes, {len(rust)} rounds each:")
        print(f"  rust Session      median {r * 1e3:8.1f} ms")
        print(f"  python package    median {p * 1e3:8.1f} ms (round), {w * 1e3:.1f} ms (whole call)")
        print(f"  ratio python/rust {p / r:.3f} (round), {w / r:.3f} (whole call)")


if __name__ == "__main__":
    main()
