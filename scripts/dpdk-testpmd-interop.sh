#!/usr/bin/env bash
# Interop check of NetStorm's DPDK port against an independent implementation:
# dpdk-testpmd (5tswap forwarding: parses Ethernet/IPv4/UDP and swaps MACs, addresses and
# ports) serves a net_memif link; dataplane/tests/dpdk_testpmd_interop.rs sends frames over the
# client end and checks each one comes back valid and intact. Then a pcap of NetStorm frames is
# written and decoded by tcpdump (checksums verified). No NICs, no hugepages; bounded (~1 min
# worst case); testpmd is killed on exit whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! pkg-config --exists libdpdk 2>/dev/null; then
  echo "skipping DPDK interop: libdpdk not found"; exit 0
fi
TESTPMD=$(command -v dpdk-testpmd || true)
if [ -z "$TESTPMD" ]; then
  echo "skipping DPDK interop: dpdk-testpmd not found (package dpdk-dev)"; exit 0
fi
work=$(mktemp -d /tmp/netstorm-interop.XXXXXX)
sock="$work/memif.sock"
prefix="netstorm-testpmd-$$"
pmd_pid=""
cleanup() {
  if [ -n "$pmd_pid" ] && kill -0 "$pmd_pid" 2>/dev/null; then
    kill -INT "$pmd_pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pmd_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pmd_pid" 2>/dev/null || true
  fi
  rm -rf "/var/run/dpdk/$prefix" "$work"
  # EAL runtime directories of finished NetStorm test processes (named after their pid).
  for d in /var/run/dpdk/netstorm-test-* /var/run/dpdk/netstorm-eal-fail-* /var/run/dpdk/netstorm-interop-*; do
    [ -d "$d" ] || continue
    kill -0 "${d##*-}" 2>/dev/null || rm -rf "$d"
  done
}
trap cleanup EXIT INT TERM
# Build first so testpmd's lifetime is only the test's.
cargo test -p netstorm-dataplane --features dpdk --test dpdk_testpmd_interop --test dpdk_pcap --no-run -q
# testpmd needs a main lcore and a forwarding lcore; on a one-CPU machine both share CPU 0.
if [ "$(nproc)" -ge 2 ]; then lcores="-l 0-1"; else lcores="--lcores=0@0,1@0"; fi
# shellcheck disable=SC2086 # $lcores is two words on purpose
timeout 60 "$TESTPMD" $lcores --no-huge --no-pci -m 512 --file-prefix="$prefix" --no-telemetry \
  --vdev="net_memif0,role=server,id=0,socket=$sock" -- \
  --forward-mode=5tswap --nb-cores=1 --total-num-mbufs=4096 --no-mlockall --stats-period=2 \
  >"$work/testpmd.log" 2>&1 &
pmd_pid=$!
for _ in $(seq 50); do
  grep -q "Press enter\|Port statistics\|Start automatic packet forwarding\|io packet forwarding\|5tswap packet forwarding" "$work/testpmd.log" 2>/dev/null && break
  kill -0 "$pmd_pid" 2>/dev/null || { echo "dpdk-testpmd exited early:"; cat "$work/testpmd.log"; exit 1; }
  sleep 0.2
done
echo "dpdk-testpmd (pid $pmd_pid) serving net_memif at $sock"
status=0
NETSTORM_TESTPMD_MEMIF_SOCKET="$sock" timeout 120 \
  cargo test -p netstorm-dataplane --features dpdk --test dpdk_testpmd_interop -- --nocapture || status=$?
if [ $status -ne 0 ]; then
  echo "interop test failed ($status); testpmd log:"; tail -40 "$work/testpmd.log"; exit $status
fi
pcap="$work/netstorm-frames.pcap"
NETSTORM_PCAP_OUT="$pcap" cargo test -p netstorm-dataplane --features dpdk --test dpdk_pcap -q -- --nocapture
if command -v tshark >/dev/null; then
  # A second, independent decoder when present: every frame must be UDP without expert errors.
  n=$(tshark -r "$pcap" -Y 'udp && !_ws.expert.severity >= error' 2>/dev/null | wc -l)
  echo "tshark: $n frames decoded as valid UDP"
  [ "$n" -eq 10 ] || { echo "tshark disagrees"; exit 1; }
fi
echo "DPDK interop OK"
