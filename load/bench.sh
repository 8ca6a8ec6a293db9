#!/usr/bin/env bash
# Load benchmark: chat_trio against a bare Trio + h11 baseline, on one pinned core each side.
#
#   load/bench.sh [duration]        duration per wrk run, default 10s, at most 10s
#
# Part 1 (always): GET / on load/baseline_server.py and GET /healthz on chat_trio, alternating
#   baseline, chat_trio, baseline, chat_trio so run-to-run noise is visible, then a markdown table
#   (req/s, p50, p99, non-2xx) and the chat_trio/baseline req/s ratio.
# Part 2 (when the REST API exists): seeds a user, a room and messages with curl, then runs the
#   login, send and history scenarios against chat_trio. Skipped with a message if /register is 404.
#
# Layout: both servers run with `taskset -c 0`, wrk with `taskset -c 1` (the machine has 2 cores),
# so the client never steals the server's CPU. Only 127.0.0.1 is ever targeted.
#
# Environment knobs (all optional):
#   BASE_PORT=18081 CHAT_PORT=18080   ports for the two servers (must be free)
#   CONNS=100                         wrk connections for healthz, send and history
#   LOGIN_CONNS=10                    wrk connections for login (each login hashes with argon2id)
#   SERVER_CPU=0 CLIENT_CPU=1         cores to pin to
#   OUT=dir                           where raw wrk outputs and server logs go (default: a temp dir)

set -euo pipefail

cd "$(dirname "$0")/.."                       # repository root: paths below are relative to it
PY=.venv/bin/python
DUR=${1:-10s}
BASE_PORT=${BASE_PORT:-18081}
CHAT_PORT=${CHAT_PORT:-18080}
CONNS=${CONNS:-100}
LOGIN_CONNS=${LOGIN_CONNS:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
HOST=127.0.0.1                                # never anything else

# Every run is bounded: refuse durations above 10 s.
secs=${DUR%s}
if ! [[ $secs =~ ^[0-9]+$ ]] || (( secs < 1 || secs > 10 )); then
    echo "duration must be 1s..10s (got '$DUR')" >&2
    exit 2
fi
DUR=${secs}s

for tool in wrk taskset curl; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install -y $tool)" >&2; exit 2; }
done
[[ -x $PY ]] || { echo "missing $PY: create the venv first (see README.md)" >&2; exit 2; }

OUT=${OUT:-$(mktemp -d /tmp/chat_trio_bench.XXXXXX)}
mkdir -p "$OUT"
DATA=$(mktemp -d /tmp/chat_trio_db.XXXXXX)   # a fresh database every run

# -- server lifecycle ---------------------------------------------------------------------------
PIDS=()
cleanup() {
    # Kill exactly the servers this script started (by pid), then wait so ports are released.
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM                      # run the EXIT trap on Ctrl-C / kill too

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

wait_ready() {   # wait_ready URL PID: poll until the URL answers (10 s at most)
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { echo "server exited; see $OUT/*.log" >&2; return 1; }
        sleep 0.1
    done
    echo "server at $1 did not come up; see $OUT/*.log" >&2
    return 1
}

for port in "$BASE_PORT" "$CHAT_PORT"; do
    port_free "$port" || { echo "port $port is in use; set BASE_PORT/CHAT_PORT" >&2; exit 2; }
done

taskset -c "$SERVER_CPU" "$PY" load/baseline_server.py --host "$HOST" --port "$BASE_PORT" \
    >"$OUT/baseline.log" 2>&1 &
PIDS+=($!)
BASE_PID=$!
# --send-rate 0: the per-user send limit would otherwise turn the send scenario into 429s.
taskset -c "$SERVER_CPU" "$PY" -m chat_trio --host "$HOST" --port "$CHAT_PORT" --db "$DATA/chat.db" \
    --log-level warning --send-rate 0 >"$OUT/chat_trio.log" 2>&1 &
PIDS+=($!)
CHAT_PID=$!
wait_ready "http://$HOST:$BASE_PORT/" "$BASE_PID"
wait_ready "http://$HOST:$CHAT_PORT/healthz" "$CHAT_PID"

# -- wrk and its output -------------------------------------------------------------------------
# run_wrk NAME CONNS SCRIPT URL: one bounded wrk run on the client core; raw output in $OUT/NAME.txt
run_wrk() {
    local name=$1 conns=$2 script=$3 url=$4
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"$DUR" --timeout 5s --latency \
        -s "load/wrk/$script" "$url" >"$OUT/$name.txt" 2>&1 || true
}

# wrk prints latencies as 750.00us / 1.23ms / 1.05s: convert to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) printf "%.2f", v / 1000; else if (v ~ /ms$/) printf "%.2f", v + 0;
        else if (v ~ /m$/) printf "%.2f", v * 60000; else if (v ~ /s$/) printf "%.2f", v * 1000;
        else printf "?" }'
}

# field FILE WHAT: pull one number out of a wrk output (req/s, p50, p99, non2xx).
field() {
    local file=$1
    case $2 in
        rps)    awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$file" ;;
        p50)    to_ms "$(awk '$1 == "50%" {print $2}' "$file")" ;;
        p99)    to_ms "$(awk '$1 == "99%" {print $2}' "$file")" ;;
        non2xx) awk '/^non-2xx:/ {print $2}' "$file" ;;
        errors) awk '/^socket errors:/ {sub(/^socket errors: /, ""); print}' "$file" ;;
    esac
}

ROWS=()
row() {   # row LABEL NAME: one markdown table line from $OUT/NAME.txt
    local f="$OUT/$2.txt"
    if ! grep -q '^Requests/sec:' "$f"; then
        ROWS+=("| $1 | wrk failed: $(head -c 120 "$f" | tr '\n' ' ') | | | | |")
        return
    fi
    ROWS+=("| $1 | $(field "$f" rps) | $(field "$f" p50) | $(field "$f" p99) | $(field "$f" non2xx) | $(field "$f" errors) |")
}

print_table() {
    echo "| target | req/s | p50 ms | p99 ms | non-2xx | socket errors |"
    echo "|---|---:|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
}

echo "# chat_trio load benchmark"
echo
echo "- machine: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), nproc $(nproc)"
echo "- python: $("$PY" -c 'import sys, trio, h11; print(sys.version.split()[0], "trio", trio.__version__, "h11", h11.__version__)')"
echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- chat_trio 2>/dev/null || echo ' (+ uncommitted changes in chat_trio/)')"
echo "- servers on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU: wrk -t1 -c$CONNS -d$DUR --latency"
echo "- raw output: $OUT"
echo

# -- part 1: baseline / vs chat_trio /healthz, alternating ----------------------------------------
# A short warm-up each (not reported) so the first measured run is not the one that pays for
# connection setup and first-touch allocations.
DUR_SAVE=$DUR; DUR=1s
run_wrk warmup-baseline "$CONNS" healthz.lua "http://$HOST:$BASE_PORT/"
run_wrk warmup-chat "$CONNS" healthz.lua "http://$HOST:$CHAT_PORT/"
DUR=$DUR_SAVE

BASE_RPS=(); CHAT_RPS=()
for i in 1 2; do
    run_wrk "baseline-$i" "$CONNS" healthz.lua "http://$HOST:$BASE_PORT/"
    row "baseline GET / (run $i)" "baseline-$i"
    BASE_RPS+=("$(field "$OUT/baseline-$i.txt" rps)")
    run_wrk "healthz-$i" "$CONNS" healthz.lua "http://$HOST:$CHAT_PORT/"
    row "chat_trio GET /healthz (run $i)" "healthz-$i"
    CHAT_RPS+=("$(field "$OUT/healthz-$i.txt" rps)")
done
print_table
echo
# Ratio of the means, plus each run's extremes so the noise band is visible.
awk -v b="${BASE_RPS[*]}" -v c="${CHAT_RPS[*]}" 'BEGIN {
    nb = split(b, B, " "); nc = split(c, C, " "); sb = sc = 0
    for (i = 1; i <= nb; i++) sb += B[i]; for (i = 1; i <= nc; i++) sc += C[i]
    if (sb == 0) { print "ratio: n/a (baseline gave no numbers)"; exit }
    lo = hi = C[1] / B[1]
    for (i = 1; i <= nb; i++) for (j = 1; j <= nc; j++) { r = C[j] / B[i]; if (r < lo) lo = r; if (r > hi) hi = r }
    printf "**chat_trio/baseline req/s: %.2f** (mean %.0f vs %.0f; any-pair range %.2f-%.2f)\n",
        (sc / nc) / (sb / nb), sc / nc, sb / nb, lo, hi }'
echo

# -- part 2: REST scenarios (login, send, history) ------------------------------------------------
API="http://$HOST:$CHAT_PORT"
# post PATH JSON [TOKEN]: prints "<status> <body>"
post() {
    local auth=()
    [[ -n ${3:-} ]] && auth=(-H "Authorization: Bearer $3")
    curl -sS -o "$OUT/last_body.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        "${auth[@]}" --data "$2" "$API$1"
}
json_get() {   # json_get EXPR: evaluate EXPR on the last body (e.g. '["token"]')
    "$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))$1)" "$OUT/last_body.json"
}

echo "## REST scenarios (chat_trio only)"
echo
status=$(post /register '{"username":"testuser","password":"testpass"}')
if [[ $status == 404 ]]; then
    echo "SKIPPED: POST /register answers 404 — the accounts/rooms/messages API is not built yet."
    exit 0
fi
if [[ $status != 201 && $status != 409 ]]; then
    echo "SKIPPED: POST /register answered $status: $(head -c 300 "$OUT/last_body.json")"
    exit 1
fi
status=$(post /login '{"username":"testuser","password":"testpass"}')
[[ $status == 200 ]] || { echo "seed failed: POST /login $status $(head -c 300 "$OUT/last_body.json")"; exit 1; }
TOKEN=$(json_get '["token"]')
status=$(post /rooms "{\"name\":\"bench-$(date +%s)\"}" "$TOKEN")
[[ $status == 201 ]] || { echo "seed failed: POST /rooms $status $(head -c 300 "$OUT/last_body.json")"; exit 1; }
ROOM_ID=$(json_get '["room"]["id"]')
# 60 messages, so a limit=50 history page is full and has_more is true.
for n in $(seq 60); do
    status=$(post "/rooms/$ROOM_ID/messages" "{\"text\":\"seed message $n\",\"txn_id\":\"seed-$n\"}" "$TOKEN")
    [[ $status == 201 ]] || { echo "seed failed: message $n: $status $(head -c 300 "$OUT/last_body.json")"; exit 1; }
done
echo "seeded: user testuser, room $ROOM_ID, 60 messages"
echo

export TOKEN ROOM_ID
ROWS=()
run_wrk login "$LOGIN_CONNS" login.lua "$API/"
row "POST /login (c=$LOGIN_CONNS)" login
run_wrk send "$CONNS" send.lua "$API/"
row "POST /rooms/$ROOM_ID/messages" send
run_wrk history "$CONNS" history.lua "$API/"
row "GET /rooms/$ROOM_ID/messages?limit=50" history
print_table
