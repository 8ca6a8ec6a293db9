#!/usr/bin/env bash
# Load benchmark: chat_trio against a bare Trio + h11 baseline, servers and wrk on different cores.
#
#   load/bench.sh [duration]        duration per wrk run, default 10s, at most 10s
#
# Part 1: GET / on load/baseline_server.py and GET /healthz on chat_trio, alternating baseline,
#   chat_trio three times each; the healthz ratio is the median of the three pairs' ratios and the
#   baseline req/s every other row is divided by is the median of the three baseline runs.
# Part 2: seeds a user, a room and 60 messages (curl) on two fresh chat_trio servers, one with the
#   default --durability full and one with --durability normal, then runs: login and register (the
#   DEFAULT argon2id parameters: slow by design), send and history (newest 50) on each server, and
#   long-poll twice (nothing sent: every poll is held WAIT s; a background sender posting
#   LP_RATE msgs/s: polls are woken by each message).
#
# Every row carries its req/s ratio to the baseline of this same run. Besides the markdown on
# stdout, $OUT/results.tsv holds one line per row for load/run.sh.
#
# Environment knobs (all optional):
#   BASE_PORT=18081 CHAT_PORT=18080 NORMAL_PORT=18082   ports for the three servers (must be free)
#   CONNS=100                   wrk connections for healthz, send, history and woken long-poll
#   LOGIN_CONNS=10              wrk connections for login and register (each hashes with argon2id)
#   LP_CONNS=1000 WAIT=1        connections and wait (s) for the idle long-poll
#   LP_RATE=50                  messages/s the background sender posts during the woken long-poll
#   SERVER_CPU=0 CLIENT_CPU=1   cores to pin to (servers / wrk and the sender)
#   OUT=dir                     where raw wrk outputs and server logs go (default: a temp dir)
# Only 127.0.0.1 is ever targeted.

set -euo pipefail

cd "$(dirname "$0")/.."                       # repository root: paths below are relative to it
source load/lib.sh                            # PY, HOST, start_chat, wait_ready, seed_user_room
DUR=${1:-10s}
BASE_PORT=${BASE_PORT:-18081}
CHAT_PORT=${CHAT_PORT:-18080}
NORMAL_PORT=${NORMAL_PORT:-18082}
CONNS=${CONNS:-100}
LOGIN_CONNS=${LOGIN_CONNS:-10}
LP_CONNS=${LP_CONNS:-1000}
WAIT=${WAIT:-1}
LP_RATE=${LP_RATE:-50}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

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

OUT=${OUT:-$(mktemp -d /tmp/chat_trio_bench.XXXXXX)}
mkdir -p "$OUT"
DATA=$(mktemp -d /tmp/chat_trio_db.XXXXXX)   # fresh databases every run
: >"$OUT/results.tsv"

# -- server lifecycle ---------------------------------------------------------------------------
PIDS=()
cleanup() {
    # Kill exactly the processes this script started (by pid), then wait so ports are released.
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM                      # run the EXIT trap on Ctrl-C / kill too

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

for port in "$BASE_PORT" "$CHAT_PORT" "$NORMAL_PORT"; do
    port_free "$port" || { echo "port $port is in use; set BASE_PORT/CHAT_PORT/NORMAL_PORT" >&2; exit 2; }
done

taskset -c "$SERVER_CPU" "$PY" load/baseline_server.py --host "$HOST" --port "$BASE_PORT" \
    >"$OUT/baseline.log" 2>&1 &
BASE_PID=$!; PIDS+=("$BASE_PID"); SERVERS=("$BASE_PID")

# chat NAME PORT [FLAGS...]: chat_trio (lib.sh's start_chat: load flags lift the per-user and
# per-address limits that would turn the scenarios into 429s) with its own fresh database.
# Everything else, argon2 included, stays at its default.
chat() {
    local name=$1 port=$2
    shift 2
    start_chat "$port" "$SERVER_CPU" "$OUT/$name.log" "$DATA/$name.db" "$@"
    PIDS+=("$CHAT_PID"); SERVERS+=("$CHAT_PID")
}
wait_ready "http://$HOST:$BASE_PORT/" "$BASE_PID"
chat chat_trio "$CHAT_PORT"
chat chat_trio_normal "$NORMAL_PORT" --durability normal

# -- wrk and its output -------------------------------------------------------------------------
# settle: wait (30 s at most) until the servers are idle, so no run pays for the previous one's
# leftovers: a login run ends with up to LOGIN_CONNS argon2 hashes still queued on the server core.
cpu_ticks() {   # utime + stime of the servers, in clock ticks
    local pid t=0
    for pid in "${SERVERS[@]}"; do
        t=$(( t + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}') ))
    done
    echo "$t"
}
settle() {
    local a b
    for _ in $(seq 60); do
        a=$(cpu_ticks); sleep 0.5; b=$(cpu_ticks)
        (( b - a < 3 )) && return 0
    done
    echo "warning: the servers did not go idle before the next run" >&2
}

# run_wrk NAME CONNS SCRIPT URL: one bounded wrk run on the client core, after settle (unless
# SETTLED=1: the caller settled before starting load of its own); raw output in $OUT/NAME.txt
run_wrk() {
    local name=$1 conns=$2 script=$3 url=$4
    [[ ${SETTLED:-0} == 1 ]] || settle
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

# field FILE WHAT: pull one number out of a wrk output.
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

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
ratio() {   # ratio A B: A / B with two decimals (two significant digits below 0.01)
    awk -v a="$1" -v b="$2" 'BEGIN { if (b <= 0 || a == "") { printf "?"; exit }
        r = a / b; if (r < 0.01) printf "%.2g", r; else printf "%.2f", r }'
}

ROWS=()
BASE_REF=""        # the baseline req/s every ratio is taken against (median of part 1's runs)
# row KEY LABEL CONNS NAME [RATIO]: one table line from $OUT/NAME.txt, also appended to results.tsv
row() {
    local key=$1 label=$2 conns=$3 f="$OUT/$4.txt" r=${5:-}
    if ! grep -q '^Requests/sec:' "$f"; then
        ROWS+=("| $label | $conns | wrk failed: $(head -c 120 "$f" | tr '\n' ' ') | | | | | |")
        printf '%s\t%s\t%s\t\t\t\t\t\t\n' "$key" "$label" "$conns" >>"$OUT/results.tsv"
        return
    fi
    local rps p50 p99 non2xx errors
    rps=$(field "$f" rps); p50=$(field "$f" p50); p99=$(field "$f" p99)
    non2xx=$(field "$f" non2xx); errors=$(field "$f" errors)
    [[ -z $r && -n $BASE_REF ]] && r=$(ratio "$rps" "$BASE_REF")
    ROWS+=("| $label | $conns | $rps | ${r:--} | $p50 | $p99 | $non2xx | $errors |")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$label" "$conns" "$rps" "${r:-}" "$p50" "$p99" \
        "$non2xx" "$errors" >>"$OUT/results.tsv"
}

print_table() {
    echo "| scenario | conns | req/s | × baseline | p50 ms | p99 ms | non-2xx | socket errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
}

echo "# chat_trio load benchmark"
echo
echo "- servers on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU: wrk -t1 -c<conns> -d$DUR --timeout 5s --latency"
echo "- raw output: $OUT"
echo

# -- part 1: baseline GET / vs chat_trio GET /healthz, alternating --------------------------------
# A short warm-up each (not reported) so the first measured run does not pay for connection setup
# and first-touch allocations.
DUR_SAVE=$DUR; DUR=1s
run_wrk warmup-baseline "$CONNS" healthz.lua "http://$HOST:$BASE_PORT/"
run_wrk warmup-chat "$CONNS" healthz.lua "http://$HOST:$CHAT_PORT/"
DUR=$DUR_SAVE

BASE_RPS=(); PAIR_RATIOS=()
for i in 1 2 3; do
    run_wrk "baseline-$i" "$CONNS" healthz.lua "http://$HOST:$BASE_PORT/"
    run_wrk "healthz-$i" "$CONNS" healthz.lua "http://$HOST:$CHAT_PORT/"
    b=$(field "$OUT/baseline-$i.txt" rps); c=$(field "$OUT/healthz-$i.txt" rps)
    BASE_RPS+=("${b:-0}"); PAIR_RATIOS+=("$(ratio "$c" "$b")")
    row "baseline-$i" "baseline GET / (run $i)" "$CONNS" "baseline-$i" "1.00"
    row "healthz-$i" "chat_trio GET /healthz (run $i)" "$CONNS" "healthz-$i" "${PAIR_RATIOS[-1]}"
done
BASE_REF=$(median "${BASE_RPS[@]}")
HEALTHZ_RATIO=$(median "${PAIR_RATIOS[@]}")
printf '%s\t%s\t%s\t%s\t%s\t\t\t\t\n' baseline "baseline GET / (median of 3)" "$CONNS" "$BASE_REF" 1.00 \
    >>"$OUT/results.tsv"
printf '%s\t%s\t%s\t\t%s\t\t\t\t\n' healthz "chat_trio GET /healthz (median pair ratio)" "$CONNS" \
    "$HEALTHZ_RATIO" >>"$OUT/results.tsv"
print_table
echo
echo "**healthz / baseline: median of the pair ratios ${PAIR_RATIOS[*]} = $HEALTHZ_RATIO**;" \
     "baseline median $BASE_REF req/s (the reference for every ratio below)"
echo

# -- part 2: REST scenarios -----------------------------------------------------------------------
API="http://$HOST:$CHAT_PORT"
NORMAL_API="http://$HOST:$NORMAL_PORT"
echo "## REST scenarios (chat_trio only; ratio = req/s / baseline median $BASE_REF)"
echo
seed_user_room "$NORMAL_API" bench 60   # a limit=50 page is full
NORMAL_TOKEN=$TOKEN; NORMAL_ROOM=$ROOM_ID
seed_user_room "$API" bench 60
echo "seeded both servers: user testuser, room $ROOM_ID, 60 messages"
echo

export TOKEN ROOM_ID WAIT
ROWS=()
run_wrk login "$LOGIN_CONNS" login.lua "$API/"
row login "POST /login (default argon2id)" "$LOGIN_CONNS" login
run_wrk register "$LOGIN_CONNS" register.lua "$API/"
row register "POST /register (default argon2id)" "$LOGIN_CONNS" register
run_wrk send-full "$CONNS" send.lua "$API/"
row send_full "POST messages, --durability full" "$CONNS" send-full
TOKEN=$NORMAL_TOKEN ROOM_ID=$NORMAL_ROOM run_wrk send-normal "$CONNS" send.lua "$NORMAL_API/"
row send_normal "POST messages, --durability normal" "$CONNS" send-normal
run_wrk history "$CONNS" history.lua "$API/"
row history "GET messages?limit=50 (newest page)" "$CONNS" history
TOKEN=$NORMAL_TOKEN ROOM_ID=$NORMAL_ROOM run_wrk history-normal "$CONNS" history.lua "$NORMAL_API/"
row history_normal "GET messages?limit=50, --durability normal" "$CONNS" history-normal

# Long-poll, nothing sent: every poll is held WAIT s, so req/s ~= conns / WAIT by construction.
LAST_SEQ=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/rooms/$ROOM_ID" \
    | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["room"]["last_seq"])')
AFTER=$LAST_SEQ run_wrk longpoll-idle "$LP_CONNS" longpoll.lua "$API/"
row longpoll_idle "long-poll wait=${WAIT}s, nothing sent (held)" "$LP_CONNS" longpoll-idle

# Long-poll woken: a sender on the client core posts LP_RATE msgs/s; each message wakes every poll.
LAST_SEQ=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/rooms/$ROOM_ID" \
    | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["room"]["last_seq"])')
settle   # before the sender starts: its load would keep the server from ever looking idle
taskset -c "$CLIENT_CPU" "$PY" load/sender.py --url "$API" --room "$ROOM_ID" --token "$TOKEN" \
    --rate "$LP_RATE" --duration $(( secs + 1 )) 2>"$OUT/sender.txt" &
SENDER=$!; PIDS+=("$SENDER")
SETTLED=1 AFTER=$LAST_SEQ run_wrk longpoll-woken "$CONNS" longpoll.lua "$API/"
wait "$SENDER" || true
row longpoll_woken "long-poll woken by $LP_RATE msgs/s" "$CONNS" longpoll-woken
print_table
echo
echo "$(cat "$OUT/sender.txt")"
