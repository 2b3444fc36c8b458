"""The namespace testbed's efficiency run (scripts/testbed.sh --static --vs-gloo): NetStorm's
sync rate beside the fluid limit and PyTorch gloo's all_reduce of the same buffer on the same
namespaces, in one run. Needs root (network namespaces)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_testbed_reports_netstorm_beside_the_limit_and_gloo():
    env = dict(os.environ, NETSTORM_VENV=str(Path(sys.executable).parents[1]))
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "testbed.sh"), "--static", "-k", "3", "-r", "3",
         "-e", "200000", "-c", "0", "-m", "200", "--warmup", "1", "--vs-gloo", "-t", "120"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0 and "testbed: PASS" in out.stdout, out.stdout + out.stderr
    # Both sides checked their results (the trainer bit-exact, gloo exact) on every node.
    assert len(re.findall(r"trainer: OK 4 rounds", out.stdout)) == 3, out.stdout
    assert len(re.findall(r"gloo \d: OK 3 rounds .*exact", out.stdout)) == 3, out.stdout
    m = re.search(r"testbed: sync ([0-9.]+) Mbit/s .*; fluid limit ([0-9.]+) Mbit/s \(([0-9.]+)x of it\); "
                  r"gloo ([0-9.]+) Mbit/s \(([0-9.]+)x NetStorm vs gloo\)", out.stdout)
    assert m, out.stdout
    sync, limit, ratio, gloo, vs = map(float, m.groups())
    # The limit of a 3-node mesh at 200 Mbit/s per direction is 1.5 x 200 (fluid optimum);
    # neither side can beat it by more than tbf's bursts allow.
    assert limit == pytest.approx(300.0, rel=0.01)
    assert 0 < sync <= 1.1 * limit and 0 < gloo <= 1.1 * limit
    assert ratio == pytest.approx(sync / limit, abs=0.01)
    assert vs == pytest.approx(sync / gloo, abs=0.01)
