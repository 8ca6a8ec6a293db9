#!/usr/bin/env bash
# Worker-count sweep: the same server at each --workers count, the same load on each, so the cost
# of the supervisor + workers split (on one core) or its scaling (on many) reads off one table.
#
#   load/workers.sh COUNTS [duration]    e.g. load/workers.sh 1,2 10   (duration ≤ 10 s per run)
#
# Per count: a fresh server (count 1 = the single process, no --workers flag), a user, a room and
# 60 messages, then wrk on GET /healthz, POST messages (--durability full) and GET messages
# (newest 50), then a fresh server for the websocket fan-out (1 sender → FANOUT_SUBS subscribers at
# FANOUT_RATE msgs/s, python -m load.fanout). Around each run the server's CPU time is summed over
# its processes (the supervisor and its workers, /proc via load/cpu.py), giving CPU-µs per request
# and per delivered frame. Writes $OUT/workers.tsv (one line per count and scenario) and a markdown
# table on stdout; load/render_benchmarks.py turns the tsv into BENCHMARKS.md's workers section.
#
# Environment knobs (all optional):
#   PORT=18097                 server port (must be free)
#   SERVER_CPU=0 CLIENT_CPU=1  cores (taskset lists, e.g. SERVER_CPU=0-7) for the server / the load
#   CONNS=100                  wrk connections
#   FANOUT_SUBS=100 FANOUT_RATE=400   fan-out subscribers and messages/s (40,000 deliveries/s asked)
#   OUT=dir                    raw outputs and server logs (default: a temp dir)
# Only 127.0.0.1 is ever targeted.

set -euo pipefail

cd "$(dirname "$0")/.."
source load/lib.sh   # PY, HOST, LOAD_FLAGS, start_fresh, stop_fresh, seed_user_room
COUNTS=${1:?usage: load/workers.sh COUNTS [duration], e.g. 1,2,4,8}
DUR=${2:-10}
PORT=${PORT:-18097}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CONNS=${CONNS:-100}
FANOUT_SUBS=${FANOUT_SUBS:-100}
FANOUT_RATE=${FANOUT_RATE:-400}
CHEAP=(--argon2-time-cost 1 --argon2-memory-kib 1024 --argon2-parallelism 1 --ws-rate 0 --ws-queue 4096)

[[ $COUNTS =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "COUNTS is a comma-separated list of worker counts" >&2; exit 2; }
if ! [[ $DUR =~ ^[0-9]+$ ]] || (( DUR < 1 || DUR > 10 )); then
    echo "duration must be 1..10 seconds (got '$DUR')" >&2
    exit 2
fi
for tool in wrk taskset curl timeout; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install -y $tool)" >&2; exit 2; }
done

OUT=${OUT:-$(mktemp -d /tmp/chat_trio_workers.XXXXXX)}
mkdir -p "$OUT"
: >"$OUT/workers.tsv"
API="http://$HOST:$PORT"

trap stop_fresh EXIT
trap 'exit 130' INT TERM

# start N NAME: a fresh server with N workers on core(s) SERVER_CPU.
start() {
    local n=$1 name=$2 flags=()
    (( n > 1 )) && flags=(--workers "$n")
    start_fresh "$PORT" "$SERVER_CPU" "$OUT/$name.server.log" "${CHEAP[@]}" "${flags[@]}" || exit 1
    sleep 1   # every worker listening (the first answer may come before the last one is up)
}

cpu_us() { "$PY" -m load.cpu "$SERVER_PID"; }

# record N SCENARIO OPS_PER_S P99_MS OPS CPU_US: one tsv line (CPU-µs per operation computed here).
record() {
    local per_op
    per_op=$(awk -v c="$6" -v o="$5" 'BEGIN { if (o > 0) printf "%.1f", c / o; else printf "" }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$per_op" >>"$OUT/workers.tsv"
}

# wrk_run N SCENARIO SCRIPT: one bounded wrk run on the client core(s), with the server's CPU around it.
wrk_run() {
    local n=$1 scenario=$2 script=$3 f="$OUT/$1-$2.txt" c0 c1 rps p99 total
    c0=$(cpu_us)
    RUN_ID="w$n$scenario$RANDOM" taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --timeout 5s \
        --latency -s "load/wrk/$script" "$API/" >"$f" 2>&1 || true
    c1=$(cpu_us)
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$f")
    p99=$(awk '$1 == "99%" {v = $2; if (v ~ /us$/) printf "%.2f", v / 1000; else if (v ~ /ms$/) printf "%.2f", v + 0;
                            else if (v ~ /s$/) printf "%.2f", v * 1000}' "$f")
    total=$(awk '/requests in/ {print $1}' "$f")
    record "$n" "$scenario" "${rps:-}" "${p99:-}" "${total:-0}" "$((c1 - c0))"
}

for n in ${COUNTS//,/ }; do
    echo "== $n worker(s): HTTP" >&2
    start "$n" "$n-http"
    seed_user_room "$API" bench 60
    export TOKEN ROOM_ID
    wrk_run "$n" healthz healthz.lua
    wrk_run "$n" send send.lua
    wrk_run "$n" history history.lua
    stop_fresh

    echo "== $n worker(s): fan-out" >&2
    start "$n" "$n-fanout"
    timeout 300 taskset -c "$CLIENT_CPU" "$PY" -m load.fanout --url "$API" --server-pid "$SERVER_PID" \
        --subscribers "$FANOUT_SUBS" --rooms 1 --senders 1 --rate "$FANOUT_RATE" --duration "$DUR" \
        --drain 5 --quiet --json "$OUT/$n-fanout.json" >"$OUT/$n-fanout.txt" 2>&1 || true
    stop_fresh
    # The tool's own window: deliveries/s, p99 and the server's CPU % (all its processes) while sending.
    read -r dps p99 frames cpu < <("$PY" - "$OUT/$n-fanout.json" "$DUR" <<'PYEOF' || echo "   "
import json, sys
r = json.load(open(sys.argv[1]))
cpu = r["cpu_pct"]["server"]
frames = r["delivered_in_window"]
print(r["delivered_per_s"], r["latency_in_window_ms"]["p99"], frames,
      round(cpu / 100 * float(sys.argv[2]) * 1e6) if cpu is not None else 0)
PYEOF
    )
    record "$n" fanout "${dps:-}" "${p99:-}" "${frames:-0}" "${cpu:-0}"
done

echo "| workers | scenario | req/s or deliveries/s | p99 ms | requests or frames | server CPU-µs each |"
echo "|---:|---|---:|---:|---:|---:|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}' "$OUT/workers.tsv"
echo
echo "server on core(s) $SERVER_CPU, load on core(s) $CLIENT_CPU; raw outputs in $OUT"
