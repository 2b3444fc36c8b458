#!/usr/bin/env bash
# The README's test command: installs what the tests need (when root), then runs the whole
# suite (unit, property, end-to-end tests of every crate, then the Python package's pytest
# suite with real PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The venv with torch the Python tests and the testbed's gloo comparison share (one fixed path,
# created once; needs root for apt and /opt).
VENV=${NETSTORM_VENV:-/opt/netstorm-venv}
if [ "$(id -u)" = 0 ]; then
  bash scripts/install-python-venv.sh
fi
cargo test --workspace "$@"
# The DPDK port (feature `dpdk`) and its interop check against dpdk-testpmd, when libdpdk is
# installed (install-deps does that as root); bounded to seconds, no NICs or hugepages needed.
if pkg-config --exists libdpdk 2>/dev/null; then
  cargo test -p netstorm-dataplane --features dpdk "$@"
  cargo test -p netstorm --features dpdk --test bench_dataplane "$@"
  # netstorm-dp on DPDK: two nodes over net_memif, bad DPDK files, and (root) a DPDK node
  # against a kernel-UDP node in the namespace testbed.
  cargo test -p netstorm-node --features dpdk --test dpdk_cluster --test processes "$@"
  cargo test -p netstorm-node --features dpdk --test testbed "$@" -- dpdk_node
  bash scripts/dpdk-testpmd-interop.sh
else
  echo "skipping DPDK tests: libdpdk not found (pkg-config --exists libdpdk failed; run scripts/install-deps.sh as root)"
fi
# The Python package (pyo3 + maturin) against real PyTorch, on loopback clusters.
if [ -x "$VENV/bin/python" ]; then
  bash scripts/test-python.sh
else
  echo "skipping the Python tests: no venv at $VENV (run this script as root once to create it)"
fi
