#!/usr/bin/env bash
# Websocket fan-out benchmark: a fresh chat_trio per scenario pinned to one core, the load tool
# (python -m load.fanout) pinned to the other, then a markdown table of the results.
#
#   load/fanout.sh [duration]        seconds of sending per fan-out scenario, default 10, at most 10
#
# Scenarios:
#   1. 1 sender → 100 subscribers in 1 room at 400 msgs/s   (≈ 40,000 deliveries/s asked)
#   2. 1 sender → 1000 subscribers in 1 room at 40 msgs/s   (≈ 40,000 deliveries/s asked)
#   3. 10,000 idle authenticated websockets: server RSS before/after → memory per connection
#
# Server flags: cheap argon2 (registering ~1000 users otherwise costs minutes of hashing), no
# per-user send limit (--send-rate 0), no per-address registration limit (--register-limit 0:
# setup registers one user per socket from 127.0.0.1), no inbound frame limit (--ws-rate 0: one sender socket
# sends 400 frames/s, the default allows 50), and a 4096-frame outbox per socket. The fd limit is
# raised before starting the server (10,000 sockets); the tool raises its own.
#
# Environment knobs (all optional):
#   PORT=18095                       server port (must be free)
#   SERVER_CPU=0 CLIENT_CPU=1        cores to pin to
#   SERVER_EXTRA="--durability normal"   extra server flags (e.g. to take fsync out of the picture)
#   IDLE=10000 HOLD=5                idle sockets and seconds to hold them
#   DRAIN=10                         seconds the tool waits for late deliveries after sending
#   WAIT_MAX=300                     seconds to wait for other benchmarks (wrk, baseline_server) to end
#   OUT=dir                          where JSON, PNG and logs go (default: a temp dir)
# Only 127.0.0.1 is ever targeted.

set -euo pipefail

cd "$(dirname "$0")/.."
source load/lib.sh   # PY, HOST, start_fresh, stop_fresh
DUR=${1:-10}
PORT=${PORT:-18095}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVER_EXTRA=${SERVER_EXTRA:-}
IDLE=${IDLE:-10000}
HOLD=${HOLD:-5}
DRAIN=${DRAIN:-10}
WAIT_MAX=${WAIT_MAX:-300}
# On top of lib.sh's LOAD_FLAGS (see the comment at the top of this file).
SERVER_FLAGS="--argon2-time-cost 1 --argon2-memory-kib 1024 --argon2-parallelism 1 --ws-rate 0 --ws-queue 4096"

if ! [[ $DUR =~ ^[0-9]+$ ]] || (( DUR < 1 || DUR > 10 )); then
    echo "duration must be 1..10 seconds (got '$DUR')" >&2
    exit 2
fi
for tool in taskset curl timeout; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
$PY -c 'import matplotlib' 2>/dev/null || { echo "missing matplotlib: $PY -m pip install -e '.[dev,load]'" >&2; exit 2; }

OUT=${OUT:-$(mktemp -d /tmp/chat_trio_fanout.XXXXXX)}
mkdir -p "$OUT"

trap stop_fresh EXIT

wait_for_quiet() {
    # Other benchmarks on this machine would disturb the figures (and ours theirs): wait them out.
    local waited=0
    while pgrep -x wrk >/dev/null || pgrep -f baseline_server >/dev/null; do
        if (( waited >= WAIT_MAX )); then
            echo "another benchmark is still running after ${WAIT_MAX}s; giving up" >&2
            exit 3
        fi
        (( waited == 0 )) && echo "waiting for another benchmark (wrk / baseline_server) to finish..." >&2
        sleep 5
        waited=$((waited + 5))
    done
}

start_server() {
    start_fresh "$PORT" "$SERVER_CPU" "$OUT/$1.server.log" $SERVER_FLAGS $SERVER_EXTRA || exit 1
}

run_tool() {
    local name=$1
    shift
    wait_for_quiet
    start_server "$name"
    echo "== $name" >&2
    timeout 300 taskset -c "$CLIENT_CPU" "$PY" -m load.fanout --url "http://$HOST:$PORT" \
        --server-pid "$SERVER_PID" --json "$OUT/$name.json" "$@" | tee "$OUT/$name.txt"
    stop_fresh
}

run_tool 1-100subs --subscribers 100 --rooms 1 --senders 1 --rate 400 --duration "$DUR" --drain "$DRAIN" \
    --png "$OUT/1-100subs.png"
run_tool 2-1000subs --subscribers 1000 --rooms 1 --senders 1 --rate 40 --duration "$DUR" --drain "$DRAIN" \
    --png "$OUT/2-1000subs.png"
run_tool 3-idle --idle "$IDLE" --hold "$HOLD"

echo
echo "server flags: ${LOAD_FLAGS[*]} $SERVER_FLAGS $SERVER_EXTRA"
echo "server on core $SERVER_CPU, tool on core $CLIENT_CPU; results in $OUT"
echo
$PY -m load.fanout.report "$OUT/1-100subs.json" "$OUT/2-1000subs.json" "$OUT/3-idle.json"
