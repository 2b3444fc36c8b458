"""Loopback clusters for tests and benchmarks: a directory with a cluster config and one
``netstorm-dp`` + ``netstorm-cp`` process per node on 127.0.0.1, killed by :meth:`stop`.

>>> from netstorm.testing import Cluster
>>> cl = Cluster("/tmp/c", nodes=3, buffer_elems=4810)
>>> s = netstorm.Session(cl.config, "a")
"""

import os
import shutil
import socket
import subprocess
from pathlib import Path


def bin_dir():
    """Where netstorm-dp and netstorm-cp are: $NETSTORM_BIN_DIR, else the repository's
    target/release or target/debug (this file in python/netstorm of a checkout), else PATH."""
    if os.environ.get("NETSTORM_BIN_DIR"):
        return Path(os.environ["NETSTORM_BIN_DIR"])
    root = Path(__file__).resolve().parents[2]
    for profile in ("release", "debug"):
        d = root / "target" / profile
        if (d / "netstorm-dp").exists() and (d / "netstorm-cp").exists():
            return d
    found = shutil.which("netstorm-dp")
    if found:
        return Path(found).parent
    raise FileNotFoundError(
        "netstorm-dp / netstorm-cp not found: build them (cargo build --release -p "
        "netstorm-node --bins) or set NETSTORM_BIN_DIR"
    )


def free_ports(n):
    """n ports free for both TCP and UDP right now (the coordinator's TCP, workers' UDP)."""
    socks, ports = [], []
    while len(ports) < n:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            t.close()
            continue
        socks += [t, u]
        ports.append(port)
    for s in socks:
        s.close()
    return ports


class Cluster:
    """n loopback nodes named a, b, c, ... (coordinator on a)."""

    def __init__(self, directory, nodes=2, buffer_elems=4000, segment_elems=1000, start=True,
                 trainer_timeout_s=60, mbps=2000):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.names = [chr(ord("a") + i) for i in range(nodes)]
        self.buffer_elems = buffer_elems
        self.procs = []
        ports = free_ports(nodes + 1)
        ncpu = os.cpu_count() or 1
        # Real-host binaries refuse to run without the job secret: a fresh one (mode 0600).
        key = self.dir / "job.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, os.urandom(32).hex().encode() + b"\n")
        os.close(fd)
        os.chmod(key, 0o600)
        lines = [
            'secret_file = "job.key"',
            f"job = {os.getpid() % 60000 + 1}",
            f"buffer_elems = {buffer_elems}",
            f"segment_elems = {segment_elems}",
            f'shm_dir = "{self.dir}"',
            "idle_backoff_us = 200",
            "replan_interval_ms = 600000",
            f"trainer_timeout_s = {trainer_timeout_s}",
            "",
            "[coordinator]",
            'node = "a"',
            f"port = {ports[0]}",
        ]
        for i, n in enumerate(self.names):
            lines += ["", "[[node]]", f'name = "{n}"', f'address = "127.0.0.1:{ports[i + 1]}"',
                      f"cores = [{i % ncpu}]"]
        for i, a in enumerate(self.names):
            for b in self.names[i + 1:]:
                lines += ["", "[[link]]", f'from = "{a}"', f'to = "{b}"', f"mbps = {mbps}",
                          "bidirectional = true"]
        self.config = self.dir / "cluster.toml"
        self.config.write_text("\n".join(lines) + "\n")
        if start:
            for n in self.names:
                self.start(n)

    def start(self, node):
        for b in ("netstorm-dp", "netstorm-cp"):
            log = open(self.dir / f"{b}-{node}.log", "ab")
            self.procs.append(subprocess.Popen(
                [str(bin_dir() / b), "--config", str(self.config), "--node", node],
                stdout=subprocess.DEVNULL, stderr=log))

    def logs(self):
        out = []
        for p in sorted(self.dir.glob("*.log")):
            text = p.read_text(errors="replace").splitlines()[-15:]
            out.append(f"--- {p.name}\n" + "\n".join(text))
        return "\n".join(out)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []
