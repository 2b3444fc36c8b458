#!/usr/bin/env bash
# UDP goodput on loopback: iperf3 (-u -b 0) vs `netstorm bench udp` with the same datagram
# size and duration; prints both receiver goodputs and the ratio (target: >= 0.8x iperf3).
#
#   scripts/bench-udp.sh [DATAGRAM_BYTES] [SECONDS]        (defaults: 1408 B, 3 s)
#
# Traffic stays on 127.0.0.1. The iperf3 server is a one-off (-1), bounded by `timeout`, and
# killed on exit. Needs iperf3 (scripts/install-deps.sh as root) and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

BYTES="${1:-1408}"
SECONDS_EACH="${2:-3}"
PORT="${IPERF_PORT:-$((20000 + RANDOM % 20000))}"

for tool in iperf3 jq; do
  command -v "$tool" >/dev/null || {
    echo "bench-udp: $tool not found (run scripts/install-deps.sh as root)" >&2
    exit 1
  }
done

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

cargo build --release --quiet --bin netstorm
NETSTORM=target/release/netstorm

# --- iperf3 ----------------------------------------------------------------------------
timeout "$((SECONDS_EACH + 30))" iperf3 -s -1 -B 127.0.0.1 -p "$PORT" --json >"$tmp/server.json" &
server_pid=$!
for i in $(seq 50); do # wait until the server listens (at most 5 s)
  if command -v ss >/dev/null; then
    ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q . && break
  elif [ "$i" -ge 5 ]; then
    break
  fi
  sleep 0.1
done
echo "== iperf3 -u -b 0 -l $BYTES -t $SECONDS_EACH -c 127.0.0.1 -p $PORT --json"
iperf3 -u -b 0 -l "$BYTES" -t "$SECONDS_EACH" -c 127.0.0.1 -p "$PORT" --json >"$tmp/iperf3.json"
wait "$server_pid" 2>/dev/null || true
server_pid=""
iperf_rx_bps="$(jq -r '(.end.sum_received // .end.sum).bits_per_second' "$tmp/iperf3.json")"
iperf_tx_bps="$(jq -r '(.end.sum_sent // .end.sum).bits_per_second' "$tmp/iperf3.json")"
iperf_loss="$(jq -r '.end.sum.lost_percent' "$tmp/iperf3.json")"

# --- netstorm --------------------------------------------------------------------------
echo "== $NETSTORM bench udp --segment-bytes $BYTES --seconds $SECONDS_EACH --json FILE"
"$NETSTORM" bench udp --segment-bytes "$BYTES" --seconds "$SECONDS_EACH" --json "$tmp/netstorm.json"
ns_rx_bps="$(jq -r '.port.payload_gbps * 1e9' "$tmp/netstorm.json")"
ns_loss="$(jq -r '.port.loss * 100' "$tmp/netstorm.json")"

echo
echo "== UDP goodput on loopback, $BYTES-byte datagrams, $SECONDS_EACH s (received payload)"
awk -v i="$iperf_rx_bps" -v it="$iperf_tx_bps" -v il="$iperf_loss" \
    -v n="$ns_rx_bps" -v nl="$ns_loss" 'BEGIN {
  printf "iperf3          %8.3f Gbit/s received (%.3f sent, %.1f%% lost)\n", i / 1e9, it / 1e9, il
  printf "netstorm udp    %8.3f Gbit/s received (%.1f%% lost)\n", n / 1e9, nl
  r = (i > 0) ? n / i : 0
  printf "ratio netstorm / iperf3: %.2fx (target >= 0.8x): %s\n", r, (r >= 0.8) ? "ok" : "BELOW TARGET"
}'
