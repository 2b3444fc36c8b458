#!/usr/bin/env bash
# Item 5 of the Python issue: real training across emulated sites. 3 network namespaces joined
# by veth pairs shaped with tbf into heterogeneous links (n1<->n2 and n2<->n3 at FAST Mbit/s,
# n1<->n3 at SLOW Mbit/s), one netstorm-dp + netstorm-cp per namespace; the digits MLP
# (python/examples/digits.py) trained data-parallel, one process per site, first through
# NetStorm (backend "netstorm", one round per step), then through plain gloo, same data and
# seed. Prints accuracy against wall time for both and the time each took to reach the
# accuracy targets. Needs root, iproute2, the venv (scripts/install-python-venv.sh) with the
# package built into it (scripts/test-python.sh does that), release binaries.
#
#   scripts/train-digits.sh [-f FAST_MBPS] [-s SLOW_MBPS] [-e EPOCHS] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
FAST=100 SLOW=10 EPOCHS=12 KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        -f) FAST=$2; shift 2 ;;
        -s) SLOW=$2; shift 2 ;;
        -e) EPOCHS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "train-digits: unknown argument $1" >&2; exit 2 ;;
    esac
done
VENV=${NETSTORM_VENV:-/opt/netstorm-venv}
PY=$VENV/bin/python
BIN=${NETSTORM_BIN_DIR:-$PWD/target/release}
EXAMPLE=$PWD/python/examples/digits.py
"$PY" -c 'import netstorm.torch' 2>/dev/null || { echo "train-digits: the netstorm package is not in $VENV: run scripts/test-python.sh" >&2; exit 2; }
[ -x "$BIN/netstorm-dp" ] || { echo "train-digits: no $BIN/netstorm-dp: cargo build --release -p netstorm-node --bins" >&2; exit 2; }
K=3
TAG=$(( $$ % 10000 ))
NS=nstd$TAG
WORK=$(mktemp -d "/tmp/netstorm-digits-$TAG.XXXX")
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.2
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for i in $(seq 1 "$K"); do ip netns del "$NS-$i" 2>/dev/null; done
    if [ "$KEEP" = 1 ]; then echo "train-digits: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -A RATE=([1,2]=$FAST [2,1]=$FAST [2,3]=$FAST [3,2]=$FAST [1,3]=$SLOW [3,1]=$SLOW)
for i in $(seq 1 "$K"); do
    ip netns add "$NS-$i"
    ip -n "$NS-$i" link set lo up
    ip -n "$NS-$i" addr add "10.88.0.$i/32" dev lo
done
for i in $(seq 1 "$K"); do
    for j in $(seq $((i + 1)) "$K"); do
        a="v$TAG-$i-$j" b="v$TAG-$j-$i"
        ip link add "$a" type veth peer name "$b"
        ip link set "$a" netns "$NS-$i"
        ip link set "$b" netns "$NS-$j"
        ip -n "$NS-$i" link set "$a" up
        ip -n "$NS-$j" link set "$b" up
        ip -n "$NS-$i" route add "10.88.0.$j/32" dev "$a" src "10.88.0.$i"
        ip -n "$NS-$j" route add "10.88.0.$i/32" dev "$b" src "10.88.0.$j"
        for d in "$i $j $a" "$j $i $b"; do
            set -- $d
            kbit=$(( RATE[$1,$2] * 1000 ))
            burst=$(( kbit / 4 > 15000 ? kbit / 4 : 15000 ))
            ip netns exec "$NS-$1" tc qdisc add dev "$3" root tbf rate "${kbit}kbit" burst "$burst" latency 100ms
        done
    done
done

PARAMS=$("$PY" "$EXAMPLE" --param-count)
CFG=$WORK/cluster.toml
mkdir -p "$WORK/shm"
# The job secret the real-host binaries require (mode 0600, 64 hex digits).
(umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$WORK/job.key")
{
    echo "job = $(( TAG + 1 ))"
    echo "# the model's parameters + 1 (the hook's layout check): one round per step"
    echo "buffer_elems = $(( PARAMS + 1 ))"
    echo "shm_dir = \"$WORK/shm\""
    echo "secret_file = \"job.key\""
    echo "idle_backoff_us = 100"
    echo "trainer_timeout_s = 60"
    echo "replan_interval_ms = 600000"
    printf '\n[coordinator]\nnode = "n1"\nport = 7700\n'
    for i in $(seq 1 "$K"); do
        printf '\n[[node]]\nname = "n%d"\naddress = "10.88.0.%d:9000"\ncores = [%d]\n' "$i" "$i" $(( (i - 1) % $(nproc) ))
    done
    for key in "${!RATE[@]}"; do
        printf '\n[[link]]\nfrom = "n%s"\nto = "n%s"\nmbps = %s\n' "${key%,*}" "${key#*,}" "${RATE[$key]}"
    done
} > "$CFG"
echo "train-digits: 3 sites, n1<->n2 and n2<->n3 at $FAST Mbit/s, n1<->n3 at $SLOW Mbit/s (tbf); MLP of $PARAMS parameters, $EPOCHS epochs; work dir $WORK"

run_training() { # backend
    local port=$(( 29500 + RANDOM % 1000 )) procs=()
    for i in $(seq 1 "$K"); do
        args=(--backend "$1" --rank $((i - 1)) --world "$K" --master "10.88.0.1:$port" --epochs "$EPOCHS")
        if [ "$1" = netstorm ]; then args+=(--config "$CFG" --node "n$i"); else args+=(--host "10.88.0.$i"); fi
        ip netns exec "$NS-$i" "$PY" "$EXAMPLE" "${args[@]}" > "$WORK/$1-n$i.out" 2> "$WORK/$1-n$i.err" &
        procs+=($!)
    done
    local ok=0
    for p in "${procs[@]}"; do wait "$p" || ok=1; done
    if [ "$ok" != 0 ]; then
        echo "train-digits: $1 training failed:" >&2
        tail -n 20 "$WORK/$1"-n*.err >&2
        exit 1
    fi
}

# NetStorm: dp + cp per site, then the trainers.
for i in $(seq 1 "$K"); do
    ip netns exec "$NS-$i" "$BIN/netstorm-dp" --config "$CFG" --node "n$i" > "$WORK/dp-n$i.log" 2>&1 &
    PIDS+=($!)
    ip netns exec "$NS-$i" "$BIN/netstorm-cp" --config "$CFG" --node "n$i" > "$WORK/cp-n$i.log" 2>&1 &
    PIDS+=($!)
done
run_training netstorm
# gloo on the same shaped links, the NetStorm processes stopped (their pollers would share
# the cores).
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
PIDS=()
run_training gloo

"$PY" - "$WORK/netstorm-n1.out" "$WORK/gloo-n1.out" <<'PY'
import json, sys
runs = {}
for path in sys.argv[1:]:
    rows = [json.loads(l) for l in open(path) if l.startswith("{")]
    runs[rows[0]["backend"]] = rows
print(f"{'epoch':>5}  {'netstorm time':>13} {'acc':>6}   {'gloo time':>9} {'acc':>6}")
for a, b in zip(runs["netstorm"], runs["gloo"]):
    print(f"{a['epoch']:>5}  {a['time']:>12.2f}s {a['acc']:>6.3f}   {b['time']:>8.2f}s {b['acc']:>6.3f}")
for target in (0.90, 0.95):
    cells = []
    for name in ("netstorm", "gloo"):
        hit = next((r["time"] for r in runs[name] if r["acc"] >= target), None)
        cells.append(f"{name} {'%.2f s' % hit if hit is not None else 'not reached'}")
    print(f"time to {target:.0%} test accuracy: " + ", ".join(cells))
n, g = runs["netstorm"][-1], runs["gloo"][-1]
print(f"final: netstorm acc {n['acc']:.3f} in {n['time']:.2f} s, gloo acc {g['acc']:.3f} in {g['time']:.2f} s, speed-up {g['time'] / n['time']:.2f}x")
PY
echo "train-digits: PASS"
