#!/usr/bin/env bash
# NetStorm testbed on one Linux host: K network namespaces joined by a full mesh of veth
# pairs, each direction shaped with `tc qdisc tbf` (netem is not available here), one
# netstorm-dp + netstorm-cp per namespace, R rounds of netstorm-trainer in every namespace
# (results checked bit-for-bit against the reference sum by the trainer), a link rate changed
# with `tc` mid-run (nothing else is told: the dps measure it, the coordinator's estimator sees
# the change, re-plans and installs a new policy epoch), optionally a netstorm-cp killed and
# restarted mid-run; everything torn down on exit. Needs root and iproute2.
#
#   scripts/testbed.sh [-k NODES] [-r ROUNDS] [-m MBPS] [-n NEW_MBPS] [-e ELEMS]
#                      [-c COMPUTE_MS] [-t TIMEOUT_S] [-s SCENARIO.toml] [--restart-cp]
#                      [--dpdk] [--keep] [--static] [--warmup N] [--vs-gloo] [--gloo-rounds N]
#
# Efficiency (--static: no link change, and then no re-plan may happen): the summary line
# puts the sync rate (the slowest trainer's "Mbit/s of buffer per second of sync", --warmup
# rounds untimed) beside the topology's fluid limit (`netstorm plan`'s optimum for the
# buffer) and, with --vs-gloo, beside PyTorch gloo's all_reduce of the same buffer on the same
# namespaces in the same run (scripts/gloo_allreduce.py, torch from $NETSTORM_VENV, default
# /opt/netstorm-venv, same warm-up; --gloo-rounds, default ROUNDS: a ring across a slow link
# takes long). E.g. scripts/testbed.sh --static -r 10 -e 2000000 -c 0 --warmup 1 --vs-gloo
#
# --dpdk (with -k 2): n1's data plane runs on DPDK — net_af_packet on its veth, frames built
# by NetStorm's DPDK port — against n2's kernel UDP stack (needs a netstorm-dp built with
# `--features dpdk`, and ethtool: n2's veth computes its UDP checksums itself, since the port
# checks them and a veth would otherwise leave them to an offload that never happens).
#
# -s takes the nodes, links and rates from a scenario file (at most 9 nodes; link latency and
# loss are not emulated: tbf shapes rate only); the first link of the file is the one changed.
# Without -s: K nodes, a full mesh at MBPS. Pairs without a scenario link still get an
# unshaped veth, used only by the control plane's TCP (policies never route data over it).
#
# Binaries come from $NETSTORM_BIN_DIR (default: target/release, else target/debug).
# Prints "testbed: PASS" and exits 0 when every trainer checked every round, the coordinator
# re-planned because the measured estimate of n1 -> n2 changed ("replan: estimate of link
# n1->n2 changed from X to Y Mbit/s" in its log), and every dp installed at least two policy
# epochs through its shared-memory policy ring and ran its last rounds under a newer one.
set -euo pipefail

K=3 ROUNDS=80 MBPS=50 NEW_MBPS=10 ELEMS=50000 COMPUTE_MS=20 TIMEOUT_S=90 RESTART_CP=0 KEEP=0 DPDK=0
SCENARIO= STATIC=0 WARMUP=0 VS_GLOO=0 GLOO_ROUNDS=
VENV=${NETSTORM_VENV:-/opt/netstorm-venv}
while [ $# -gt 0 ]; do
    case "$1" in
        -k) K=$2; shift 2 ;;
        -r) ROUNDS=$2; shift 2 ;;
        -m) MBPS=$2; shift 2 ;;
        -n) NEW_MBPS=$2; shift 2 ;;
        -e) ELEMS=$2; shift 2 ;;
        -c) COMPUTE_MS=$2; shift 2 ;;
        -t) TIMEOUT_S=$2; shift 2 ;;
        -s) SCENARIO=$2; shift 2 ;;
        --restart-cp) RESTART_CP=1; shift ;;
        --dpdk) DPDK=1; shift ;;
        --keep) KEEP=1; shift ;;
        --static) STATIC=1; shift ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --vs-gloo) VS_GLOO=1; shift ;;
        --gloo-rounds) GLOO_ROUNDS=$2; shift 2 ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        *) echo "testbed: unknown argument $1" >&2; exit 2 ;;
    esac
done
# Directed link rates in kbit/s, RATE[i,j] for n<i> -> n<j> (1-based); empty = no link.
declare -A RATE
CHANGE_FROM=1 CHANGE_TO=2
if [ -n "$SCENARIO" ]; then
    LINES=$(python3 - "$SCENARIO" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    s = tomllib.load(f)
names = [n["name"] for n in s.get("node", [])]
print("K", len(names))
for l in s.get("link", []):
    a, b = names.index(l["from"]) + 1, names.index(l["to"]) + 1
    kbit = max(1, round(float(l["mbps"]) * 1000))
    print("L", a, b, kbit)
    if l.get("bidirectional", False):
        print("L", b, a, kbit)
PY
    ) || { echo "testbed: cannot read scenario $SCENARIO" >&2; exit 2; }
    K=$(echo "$LINES" | awk '$1 == "K" { print $2 }')
    FIRST=1
    while read -r tag a b kbit; do
        [ "$tag" = L ] || continue
        RATE[$a,$b]=$kbit
        if [ "$FIRST" = 1 ]; then CHANGE_FROM=$a CHANGE_TO=$b FIRST=0; fi
    done <<< "$LINES"
else
    for i in $(seq 1 "$K"); do for j in $(seq 1 "$K"); do
        [ "$i" = "$j" ] || RATE[$i,$j]=$(( MBPS * 1000 ))
    done; done
fi
[ "$K" -ge 2 ] && [ "$K" -le 9 ] || { echo "testbed: -k must be in 2..9 (scenario: at most 9 nodes)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "testbed: needs root (network namespaces)" >&2; exit 2; }
if [ "$DPDK" = 1 ]; then
    [ "$K" = 2 ] || { echo "testbed: --dpdk puts n1 on DPDK over its one veth: needs -k 2" >&2; exit 2; }
    command -v ethtool >/dev/null || { echo "testbed: --dpdk needs ethtool (scripts/install-deps.sh)" >&2; exit 2; }
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${NETSTORM_BIN_DIR:-}
if [ -z "$BIN" ]; then
    if [ -x "$ROOT/target/release/netstorm-dp" ]; then BIN=$ROOT/target/release; else BIN=$ROOT/target/debug; fi
fi
if [ "$VS_GLOO" = 1 ]; then
    "$VENV/bin/python" -c "import torch.distributed" 2>/dev/null \
        || { echo "testbed: --vs-gloo needs torch in $VENV (scripts/install-python-venv.sh)" >&2; exit 2; }
fi
for b in netstorm-dp netstorm-cp netstorm-trainer; do
    [ -x "$BIN/$b" ] || { echo "testbed: $BIN/$b missing (cargo build -p netstorm-node --bins)" >&2; exit 2; }
done

TAG=$(( $$ % 10000 ))
NS=nstb$TAG
WORK=$(mktemp -d "/tmp/netstorm-testbed-$TAG.XXXX")
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.2
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for i in $(seq 1 "$K"); do ip netns del "$NS-$i" 2>/dev/null; done
    rm -rf "/var/run/dpdk/$NS"
    if [ "$KEEP" = 1 ]; then echo "testbed: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "testbed: $K namespaces ($NS-*), veth pairs shaped with tbf (${SCENARIO:-full mesh at $MBPS Mbit/s}), $ROUNDS rounds of $ELEMS elements, work dir $WORK"
[ "$DPDK" = 0 ] || echo "testbed: n1 runs on DPDK (net_af_packet on v$TAG-1-2), n2 on kernel UDP"
for i in $(seq 1 "$K"); do
    ip netns add "$NS-$i"
    ip -n "$NS-$i" link set lo up
    ip -n "$NS-$i" addr add "10.88.0.$i/32" dev lo
done
# veth "v<i>-<j>" lives in namespace i and reaches namespace j; tbf on it shapes i -> j.
tbf() { # ns dev kbit add|change  (burst: 2 ms at the rate, at least 15 kB)
    local burst=$(( $3 / 4 > 15000 ? $3 / 4 : 15000 ))
    ip netns exec "$1" tc qdisc "$4" dev "$2" root tbf rate "${3}kbit" burst "$burst" latency 100ms
}
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
        [ -z "${RATE[$i,$j]:-}" ] || tbf "$NS-$i" "$a" "${RATE[$i,$j]}" add
        [ -z "${RATE[$j,$i]:-}" ] || tbf "$NS-$j" "$b" "${RATE[$j,$i]}" add
    done
done

CFG=$WORK/cluster.toml
mkdir -p "$WORK/shm"
# The job secret the real-host binaries require (mode 0600, 64 hex digits).
(umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$WORK/job.key")
if [ "$DPDK" = 1 ]; then
    # n1: a DPDK port on its veth (the kernel of n1's namespace still answers ARP for
    # 10.88.0.1 and carries the control plane's TCP; the port drops those frames as not UDP).
    ip netns exec "$NS-2" ethtool -K "v$TAG-2-1" tx off >/dev/null
    PEER_MAC=$(ip -n "$NS-2" -br link show "v$TAG-2-1" | awk '{print $3}')
    cat > "$WORK/dpdk-n1.toml" <<EOF
[eal]
lcores = "0"
memory_mb = 256
vdevs = ["net_af_packet0,iface=v$TAG-1-2,qdisc_bypass=0"]
file_prefix = "$NS"
no_huge = true
no_pci = true

[port]
device = "net_af_packet0"
node = 0
ip = "10.88.0.1"
udp_port = 9000
mempool_mbufs = 4095
rx_desc = 512
tx_desc = 512

[[port.neighbours]]
node = 1
mac = "$PEER_MAC"
ip = "10.88.0.2"
udp_port = 9000
EOF
fi
{
    echo "job = $(( TAG + 1 ))"
    echo "buffer_elems = $ELEMS"
    echo "shm_dir = \"$WORK/shm\""
    echo "secret_file = \"job.key\""
    echo "idle_backoff_us = 100"
    echo "trainer_timeout_s = 30"
    echo "replan_threshold = 0.4"
    echo "replan_interval_ms = 1000"
    echo "replan_settle_ms = 300"
    echo "telemetry_window_ms = 600"
    echo
    echo "[coordinator]"
    echo "node = \"n1\""
    echo "port = 7700"
    for i in $(seq 1 "$K"); do
        printf '\n[[node]]\nname = "n%d"\naddress = "10.88.0.%d:9000"\ncores = [%d]\n' "$i" "$i" $(( (i - 1) % $(nproc) ))
        if [ "$DPDK" = 1 ] && [ "$i" = 1 ]; then printf 'backend = "dpdk"\ndpdk = "dpdk-n1.toml"\n'; fi
    done
    for i in $(seq 1 "$K"); do
        for j in $(seq 1 "$K"); do
            [ -n "${RATE[$i,$j]:-}" ] || continue
            printf '\n[[link]]\nfrom = "n%d"\nto = "n%d"\nmbps = %s\n' "$i" "$j" \
                "$(awk -v k="${RATE[$i,$j]}" 'BEGIN { printf "%g", k / 1000 }')"
        done
    done
} > "$CFG"

start_cp() { # i
    ip netns exec "$NS-$1" "$BIN/netstorm-cp" --config "$CFG" --node "n$1" >> "$WORK/cp-n$1.log" 2>&1 &
    PIDS+=($!)
    CP_PID[$1]=$!
}
declare -a CP_PID
for i in $(seq 1 "$K"); do
    ip netns exec "$NS-$i" "$BIN/netstorm-dp" --config "$CFG" --node "n$i" --stats-interval-ms 100 > "$WORK/dp-n$i.log" 2>&1 &
    PIDS+=($!)
    start_cp "$i"
done

declare -a TR_PID
PAUSE=(--pause-before-round $(( ROUNDS / 4 )) --pause-file "$WORK/go")
[ "$STATIC" = 0 ] || PAUSE=()
for i in $(seq 1 "$K"); do
    ip netns exec "$NS-$i" timeout "$TIMEOUT_S" "$BIN/netstorm-trainer" --config "$CFG" --node "n$i" \
        --rounds $(( ROUNDS + WARMUP )) --warmup-rounds "$WARMUP" --compute-ms "$COMPUTE_MS" \
        "${PAUSE[@]}" > "$WORK/trainer-n$i.log" 2>&1 &
    TR_PID[$i]=$!
    PIDS+=($!)
done

rounds_done() { # i -> rounds completed at node i (from its dp counters file)
    sed -n 's/.*"rounds_completed":\([0-9]*\).*/\1/p' "$WORK/shm/netstorm-$(( TAG + 1 ))-n$1.dp-stats.json" 2>/dev/null || echo 0
}
dump_logs() {
    for f in "$WORK"/trainer-*.log "$WORK"/dp-*.log "$WORK"/cp-*.log "$WORK"/shm/*.json; do
        [ -e "$f" ] || continue
        echo "--- $f" >&2; tail -n 12 "$f" >&2
    done
}

# Every trainer pauses before round ROUNDS/4 until $WORK/go exists: the change lands at that
# round however busy the machine is (polling the counters raced the trainers under load).
wait_paused() {
    local deadline=$(( SECONDS + TIMEOUT_S ))
    for i in $(seq 1 "$K"); do
        while [ ! -e "$WORK/go.n$i.waiting" ]; do
            [ $SECONDS -lt $deadline ] || { echo "testbed: timeout waiting for the trainers to pause" >&2; dump_logs; return 1; }
            sleep 0.05
        done
    done
}
if [ "$STATIC" = 0 ]; then
wait_paused
echo "testbed: every trainer paused after $(( ROUNDS / 4 )) rounds; changing n$CHANGE_FROM -> n$CHANGE_TO to $NEW_MBPS Mbit/s with tc"
tbf "$NS-$CHANGE_FROM" "v$TAG-$CHANGE_FROM-$CHANGE_TO" $(( NEW_MBPS * 1000 )) change
fi
if [ "$RESTART_CP" = 1 ] && [ "$K" -ge 2 ]; then
    echo "testbed: killing netstorm-cp of n2 (pid ${CP_PID[2]}) and restarting it"
    kill -9 "${CP_PID[2]}"
    wait "${CP_PID[2]}" 2>/dev/null || true
    start_cp 2
fi
touch "$WORK/go"

FAIL=0
for i in $(seq 1 "$K"); do
    if wait "${TR_PID[$i]}" && grep -q "trainer: OK" "$WORK/trainer-n$i.log"; then
        echo "testbed: n$i $(tail -n 1 "$WORK/trainer-n$i.log")"
    else
        echo "testbed: n$i trainer FAILED:" >&2
        tail -n 5 "$WORK/trainer-n$i.log" >&2
        FAIL=1
    fi
done
# Every dp's counters file shows its last round (rewritten every 100 ms; waited for, not
# slept on: a starved dp writes late).
for i in $(seq 1 "$K"); do
    deadline=$(( SECONDS + 20 ))
    while [ "$(rounds_done "$i")" != "$(( ROUNDS + WARMUP ))" ] && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
done
for i in $(seq 1 "$K"); do
    STATS=$(cat "$WORK/shm/netstorm-$(( TAG + 1 ))-n$i.dp-stats.json" 2>/dev/null || echo '{}')
    EPOCHS=$(echo "$STATS" | sed -n 's/.*"installed_epochs":\[\([0-9,]*\)\].*/\1/p')
    echo "testbed: n$i installed_epochs [$EPOCHS] counters $STATS"
    [ "$STATIC" = 0 ] || continue
    case "$EPOCHS" in
        *,*) ;;
        *) echo "testbed: n$i installed no second policy epoch" >&2; FAIL=1 ;;
    esac
    ACTIVE=$(echo "$STATS" | sed -n 's/.*"active_epoch":\([0-9]*\).*/\1/p')
    [ "${ACTIVE:-0}" -ge 2 ] || { echo "testbed: n$i never ran a round under the new epoch (active epoch ${ACTIVE:-none})" >&2; FAIL=1; }
done
COORD=$(cat "$WORK/shm/netstorm-$(( TAG + 1 )).coordinator.json" 2>/dev/null || echo '{}')
echo "testbed: coordinator $COORD"
grep -h "coordinator: replan\|coordinator: epoch\|coordinator: proposing" "$WORK/cp-n1.log" | sed 's/^/testbed: /' || true
if [ "$STATIC" = 1 ]; then
    if grep -q "coordinator: replan" "$WORK/cp-n1.log"; then
        echo "testbed: the coordinator re-planned on a static network" >&2
        FAIL=1
    fi
elif ! grep -q "coordinator: replan: estimate of link n$CHANGE_FROM->n$CHANGE_TO changed" "$WORK/cp-n1.log"; then
    echo "testbed: the coordinator never re-planned for the measured change of n$CHANGE_FROM -> n$CHANGE_TO" >&2
    FAIL=1
fi
echo "testbed: qdisc n$CHANGE_FROM -> n$CHANGE_TO now: $(ip netns exec "$NS-$CHANGE_FROM" tc qdisc show dev "v$TAG-$CHANGE_FROM-$CHANGE_TO")"

# Where the shaped links dropped (tbf's queue overflowing its 100 ms): a dropped datagram costs
# a loss recovery, so drops are the first suspect when the sync rate trails the limit.
DROPS=
for i in $(seq 1 "$K"); do for j in $(seq 1 "$K"); do
    [ -n "${RATE[$i,$j]:-}" ] || continue
    d=$(ip netns exec "$NS-$i" tc -s qdisc show dev "v$TAG-$i-$j" 2>/dev/null | sed -n 's/.*dropped \([0-9]*\).*/\1/p' | head -n 1)
    DROPS="$DROPS n$i->n$j:${d:-?}"
done; done
echo "testbed: tbf drops per link:$DROPS"
RCVBUF=
for i in $(seq 1 "$K"); do
    e=$(ip netns exec "$NS-$i" awk '/^Udp:/ { if (!h) { for (c = 1; c <= NF; c++) col[$c] = c; h = 1 } else print $col["RcvbufErrors"] }' /proc/net/snmp)
    RCVBUF="$RCVBUF n$i:${e:-?}"
done
echo "testbed: UDP receive-buffer drops per namespace:$RCVBUF"

# Efficiency: the slowest node's sync rate, the fluid limit of the topology as configured
# (before any change) for this buffer, and gloo's all_reduce on the same namespaces.
slowest() { # files... -> the smallest "<X> Mbit/s of buffer per second of sync"
    sed -n 's/.* \([0-9.]*\) Mbit\/s of buffer per second of sync$/\1/p' "$@" | sort -g | head -n 1
}
NS_MBPS=$(slowest "$WORK"/trainer-n*.log)
{
    echo 'name = "testbed"'
    for i in $(seq 1 "$K"); do printf '\n[[node]]\nname = "n%d"\n' "$i"; done
    for i in $(seq 1 "$K"); do for j in $(seq 1 "$K"); do
        [ -n "${RATE[$i,$j]:-}" ] || continue
        printf '\n[[link]]\nfrom = "n%d"\nto = "n%d"\nmbps = %s\n' "$i" "$j" \
            "$(awk -v k="${RATE[$i,$j]}" 'BEGIN { printf "%g", k / 1000 }')"
    done; done
} > "$WORK/topology.toml"
OPT_S= CLI=
for c in "$BIN/netstorm" "$ROOT/target/release/netstorm" "$ROOT/target/debug/netstorm"; do
    [ -x "$c" ] && { CLI=$c; break; }
done
[ -n "$CLI" ] && OPT_S=$("$CLI" plan --scenario "$WORK/topology.toml" --model-mb "$(awk -v e="$ELEMS" 'BEGIN { printf "%.6f", e * 4 / 1e6 }')" --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["optimum_s"])') || OPT_S=
LIMIT=
[ -z "$OPT_S" ] || LIMIT=$(awk -v e="$ELEMS" -v t="$OPT_S" 'BEGIN { printf "%.1f", e * 32 / t / 1e6 }')
SUMMARY="testbed: sync ${NS_MBPS:-?} Mbit/s of buffer per second (slowest node); fluid limit ${LIMIT:-?} Mbit/s ($(awk -v a="${NS_MBPS:-0}" -v b="${LIMIT:-0}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "?" }') of it)"
if [ "$VS_GLOO" = 1 ]; then
    GLOO_ROUNDS=${GLOO_ROUNDS:-$ROUNDS}
    echo "testbed: PyTorch gloo all_reduce of the same $ELEMS floats on the same namespaces ($GLOO_ROUNDS rounds + $WARMUP warm-up)"
    declare -a GL_PID
    for i in $(seq 1 "$K"); do
        ip netns exec "$NS-$i" timeout "$TIMEOUT_S" "$VENV/bin/python" "$ROOT/scripts/gloo_allreduce.py" \
            --rank $(( i - 1 )) --world "$K" --master 10.88.0.1:7800 --addr "10.88.0.$i" \
            --elems "$ELEMS" --rounds "$GLOO_ROUNDS" --warmup "$WARMUP" > "$WORK/gloo-n$i.log" 2>&1 &
        GL_PID[$i]=$!
        PIDS+=($!)
    done
    for i in $(seq 1 "$K"); do
        if wait "${GL_PID[$i]}" && grep -q "gloo $(( i - 1 )): OK" "$WORK/gloo-n$i.log"; then
            echo "testbed: n$i $(tail -n 1 "$WORK/gloo-n$i.log")"
        else
            echo "testbed: n$i gloo FAILED:" >&2
            tail -n 5 "$WORK/gloo-n$i.log" >&2
            FAIL=1
        fi
    done
    GLOO_MBPS=$(slowest "$WORK"/gloo-n*.log)
    SUMMARY="$SUMMARY; gloo ${GLOO_MBPS:-?} Mbit/s ($(awk -v a="${NS_MBPS:-0}" -v b="${GLOO_MBPS:-0}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "?" }') NetStorm vs gloo)"
fi
echo "$SUMMARY"
if [ "$FAIL" = 0 ]; then
    echo "testbed: PASS"
else
    dump_logs
    echo "testbed: FAIL" >&2
    exit 1
fi
