#!/usr/bin/env bash
# The README's test command: installs what the tests need (when root), then runs the whole
# suite (unit, property, end-to-end tests of every crate).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
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
