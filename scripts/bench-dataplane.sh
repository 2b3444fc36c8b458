#!/usr/bin/env bash
# One aggregating core on DPDK net_ring next to dpdk-testpmd's macswap on the same vdev type,
# back to back in one run:
#   1. dpdk-testpmd, one forwarding core (the core netstorm's aggregator gets), one net_ring
#      ethdev looped onto itself (--port-topology=loop, seeded with --tx-first), macswap
#      forwarding, frames as long as netstorm's; its Rx-pps is read from --stats-period output.
#   2. `netstorm bench dataplane --backend dpdk` in raw mode (port + kernel) and engine mode
#      (the aggregator runs netstorm-dp's own worker loop: the path netstorm-dp ships) once
#      per packet protection: encrypt (the default), authenticate, off.
# Prints both packet rates, the same in Gbit/s of payload at netstorm's segment size, and the
# ratio netstorm / testpmd. No NICs, no hugepages; every step is bounded by `timeout`.
#
# Usage: scripts/bench-dataplane.sh [--seconds S] [--segment-bytes B] [--children C] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=3
seg=1024
children=2
json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --segment-bytes) seg="$2"; shift 2 ;;
    --children) children="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    *) echo "unknown argument $1 (want --seconds, --segment-bytes, --children, --json)" >&2; exit 2 ;;
  esac
done
if ! pkg-config --exists libdpdk 2>/dev/null; then
  echo "skipping: libdpdk not found (scripts/install-deps.sh installs it)"; exit 0
fi
TESTPMD=$(command -v dpdk-testpmd || true)
if [ -z "$TESTPMD" ]; then
  echo "skipping: dpdk-testpmd not found (package dpdk)"; exit 0
fi
for tool in jq awk; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
cargo build --release --features dpdk -q
work=$(mktemp -d /tmp/netstorm-bench-dataplane.XXXXXX)
prefix="netstorm-bench-testpmd-$$"
cleanup() { rm -rf "$work" "/var/run/dpdk/$prefix"; }
trap cleanup EXIT INT TERM

# testpmd's forwarding lcore = the first core (netstorm pins its aggregator there); its main
# lcore is the second. Frame = Ethernet/IPv4/UDP (42) + netstorm's raw header (16) + segment.
frame=$((42 + 16 + seg))
if [ "$(nproc)" -ge 2 ]; then lcores="-l 0-1 --main-lcore 1"; else lcores="--lcores=0@0,1@0 --main-lcore 1"; fi
# shellcheck disable=SC2086 # $lcores is several words on purpose
timeout -s INT "$((seconds + 2))" "$TESTPMD" $lcores --no-huge --no-pci -m 512 \
  --file-prefix="$prefix" --no-telemetry --vdev=net_ring0 -- \
  --forward-mode=macswap --port-topology=loop --nb-cores=1 --tx-first --txpkts="$frame" \
  --stats-period=1 --total-num-mbufs=8192 --no-mlockall >"$work/testpmd.log" 2>&1 || true
# The first period includes start-up: take the best of the later ones.
testpmd_pps=$(grep -o 'Rx-pps: *[0-9]*' "$work/testpmd.log" | awk '{print $2}' | tail -n +2 | sort -n | tail -1)
if [ -z "$testpmd_pps" ] || [ "$testpmd_pps" -eq 0 ]; then
  echo "dpdk-testpmd reported no rate; its log:"; tail -30 "$work/testpmd.log"; exit 1
fi
testpmd_mpps=$(awk -v p="$testpmd_pps" 'BEGIN { printf "%.3f", p / 1e6 }')

run_netstorm() { # name args... -> $work/<name>.json
  local name="$1"
  shift
  timeout "$((seconds * 4 + 60))" ./target/release/netstorm bench dataplane --backend dpdk \
    "$@" --segment-bytes "$seg" --children "$children" --seconds "$seconds" \
    --json "$work/$name.json" >"$work/$name.txt"
  cat "$work/$name.txt"
}
run_netstorm raw --mode raw
run_netstorm engine --mode engine --protection encrypt
run_netstorm engine-authenticate --mode engine --protection authenticate
run_netstorm engine-no-mac --mode engine --protection off

echo
echo "one core, net_ring, ${seg}-byte segments (${frame}-byte frames), ${children} children:"
printf '%-44s %10s %14s %8s %18s\n' "" "Mpps" "Gbit/s (seg)" "ratio" "capacity Gbit/s"
printf '%-44s %10.3f %14.2f %8s %18s\n' "dpdk-testpmd macswap (1 fwd core, net_ring)" "$testpmd_mpps" \
  "$(awk -v m="$testpmd_mpps" -v s="$seg" 'BEGIN { print m * 1e6 * s * 8 / 1e9 }')" "1.000" "-"
for mode in raw engine engine-authenticate engine-no-mac; do
  mpps=$(jq -r .child_mpps "$work/$mode.json")
  gbps=$(jq -r .child_payload_gbps "$work/$mode.json")
  cap=$(jq -r '.aggregator_capacity_gbps // "n/a" | if type == "number" then (. * 100 | round / 100) else . end' "$work/$mode.json")
  printf '%-44s %10.3f %14.2f %8.4f %18s\n' "netstorm aggregator ($mode mode)" "$mpps" "$gbps" \
    "$(awk -v a="$mpps" -v b="$testpmd_mpps" 'BEGIN { print a / b }')" "$cap"
done
raw_cap=$(jq -r '.aggregator_capacity_gbps // 0' "$work/raw.json")
for mode in engine engine-authenticate engine-no-mac; do
  cap=$(jq -r '.aggregator_capacity_gbps // 0' "$work/$mode.json")
  prot=$(jq -r '.protection' "$work/$mode.json")
  printf 'capacity engine, protection %-12s / raw: %s\n' "$prot" "$(awk -v a="$cap" -v b="$raw_cap" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')"
done
echo "(engine mode: the aggregator is netstorm-dp's worker loop, recv_each/send_each in place on"
echo " the mbufs, policy intake, node-file round gate and telemetry sampling included)"
echo "(capacity: child payload per second of the aggregator's busy time, i.e. what its core"
echo " takes when the senders keep up; on a 2-core machine the 2 children and the root share"
echo " the other core, so the end-to-end rate is the senders' limit, not the aggregator's)"
echo "(testpmd macswap only swaps MAC addresses; the aggregator parses every frame, sums C"
echo " payloads with the f32 kernel and builds one new frame per C segments)"
if [ -n "$json" ]; then
  jq -n --argjson testpmd_mpps "$testpmd_mpps" --slurpfile raw "$work/raw.json" \
    --slurpfile engine "$work/engine.json" --slurpfile engine_no_mac "$work/engine-no-mac.json" \
    --slurpfile engine_authenticate "$work/engine-authenticate.json" \
    --arg frame "$frame" \
    '{testpmd_macswap_mpps: $testpmd_mpps, frame_bytes: ($frame | tonumber),
      raw: $raw[0], engine: $engine[0], engine_authenticate: $engine_authenticate[0],
      engine_no_mac: $engine_no_mac[0],
      ratio_raw: ($raw[0].child_mpps / $testpmd_mpps),
      ratio_engine: ($engine[0].child_mpps / $testpmd_mpps)}' >"$json"
  echo "wrote $json"
fi
