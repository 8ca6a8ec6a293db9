#!/usr/bin/env bash
# The timeline's measurements (issue 16), printed as a markdown section for BENCHMARKS.md:
#
#   load/timeline.sh [BEFORE_REF]      default BEFORE_REF=main
#
# 1. Room lists with unread counts: load/timeline_seed.py writes a database of 100 rooms x 10,000
#    messages (a user `reader` in all of them, marker half-way); BEFORE_REF's server and this
#    tree's run on copies of it, one at a time: GET /rooms and GET /rooms?joined=true (100 rooms a
#    page), wrk -c10.
# 2. Search latency on the same 1,000,000 messages (both trees, where BEFORE_REF has search): one
#    client (wrk -c1), for a common word (`hello`, in ~1 message of 6), a rare one (`zanzibar`,
#    20 messages), a one-letter prefix, two words, and each word in one room only.
# 3. v1 send (durable, --durability full) and history (newest 50) on fresh databases, BEFORE_REF
#    and this tree alternately, ROUNDS (3) times, wrk -c100 as load/bench.sh runs them.
# Every row also shows the server's CPU-µs per request (load/cpu.py), steadier than req/s on a
# machine others share; the summary gives the after/before ratios of both.
#
# BEFORE_REF is taken with `git archive` into a temp dir and run from there with this venv
# (load/lib.sh's CHAT_TREE).
# Servers on core SERVER_CPU (0), wrk on CLIENT_CPU (1). Only 127.0.0.1 is targeted.

set -euo pipefail
cd "$(dirname "$0")/.."
source load/lib.sh
BEFORE_REF=${1:-main}
DUR=${DUR:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-18090}
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d /tmp/chat_trio_timeline.XXXXXX)
PID=""
cleanup() { [[ -n $PID ]] && stop_chat "$PID"; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/before"
git archive "$BEFORE_REF" | tar -x -C "$WORK/before"
# serve TREE DB [FLAGS...]: start the server of TREE (a directory; empty for this tree) on DB
# with load/lib.sh's start_chat; sets PID.
serve() {
    local tree=$1 db=$2
    shift 2
    CHAT_TREE=$tree start_chat "$PORT" "$SERVER_CPU" "$WORK/server.log" "$db" "$@" \
        || { cat "$WORK/server.log" >&2; exit 1; }
    PID=$CHAT_PID
}
stop() { stop_chat "$PID"; PID=""; }

# run NAME CONNS SCRIPT: one wrk run; prints "req/s p50 p99 cpu" (ms; the server's CPU-µs per
# request, load/cpu.py: steadier than req/s on a machine others share) and fails on errors.
run() {
    local out="$WORK/$1.txt" start
    sleep 1  # let the previous run's leftovers drain
    start=$("$PY" -m load.cpu "$PID")
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$2" -d"${DUR}s" --timeout 5s --latency -s "load/wrk/$3" \
        "http://$HOST:$PORT" >"$out" 2>&1 || true
    echo "cpu $(( $("$PY" -m load.cpu "$PID") - start ))" >>"$out"
    if grep -q "RESULT: ERRORS" "$out"; then echo "$1: errors, see below" >&2; cat "$out" >&2; exit 1; fi
    awk '/^Requests\/sec:/ {r = $2} $1 == "50%" {p50 = $2} $1 == "99%" {p99 = $2}
         / requests in / {n = $1} $1 == "cpu" {cpu = $2}
         function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000 }
         END {printf "%.0f %.2f %.2f %.0f\n", r, ms(p50), ms(p99), (n > 0 ? cpu / n : 0)}' "$out"
}
login_reader() {
    api_post "http://$HOST:$PORT" /login '{"username":"reader","password":"reader-password"}' >/dev/null
    TOKEN=$(json_get '["token"]')
    export TOKEN
}

echo "seeding 100 rooms x 10,000 messages..." >&2
"$PY" load/timeline_seed.py "$WORK/seed.db" 100 10000

echo "## Timeline: unread counts, search, v1 send and history (load/timeline.sh)"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD) against $BEFORE_REF" \
     "($(git rev-parse --short "$BEFORE_REF")), ${DUR} s per run, server on core $SERVER_CPU, wrk on core $CLIENT_CPU."
echo
echo "| scenario | tree | conns | req/s | p50 ms | p99 ms | server CPU-µs/req |"
echo "|---|---|---|---|---|---|---|"
declare -A RPS CPU
for tree in before after; do
    cp "$WORK/seed.db" "$WORK/$tree.db"
    serve "$([[ $tree == before ]] && echo "$WORK/before")" "$WORK/$tree.db"
    login_reader
    for query in "" "?joined=true"; do
        read -r rps p50 p99 cpu < <(URL_PATH="/rooms$query" run "rooms-$tree$query" 10 get.lua)
        RPS["$tree$query"]=$rps; CPU["$tree$query"]=$cpu
        echo "| GET /rooms$query (100 of 100 rooms, 10,000 messages each) | $tree | 10 | $rps | $p50 | $p99 | $cpu |"
    done
    for q in "hello" "zanzibar" "a" "hello%20zanzibar" "hello&room_id=5" "zanzibar&room_id=5"; do
        if ! curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" "http://$HOST:$PORT/search?q=a"; then
            echo "| GET /search (BEFORE_REF has no search) | $tree | | | | | |"
            break
        fi
        read -r rps p50 p99 cpu < <(URL_PATH="/search?q=$q" run "search-$tree-$q" 1 get.lua)
        echo "| GET /search?q=$q (1,000,000 messages) | $tree | 1 | $rps | $p50 | $p99 | $cpu |"
    done
    stop
done
for round in $(seq "$ROUNDS"); do
    for tree in before after; do
        rm -f "$WORK/fresh.db"*
        serve "$([[ $tree == before ]] && echo "$WORK/before")" "$WORK/fresh.db"
        seed_user_room "http://$HOST:$PORT" "bench" 60
        export TOKEN ROOM_ID
        read -r rps p50 p99 cpu < <(run "send-$tree-$round" 100 send.lua)
        CPU["send-$tree-$round"]=$cpu
        echo "| v1 send, durable (round $round) | $tree | 100 | $rps | $p50 | $p99 | $cpu |"
        read -r rps p50 p99 cpu < <(run "history-$tree-$round" 100 history.lua)
        CPU["history-$tree-$round"]=$cpu
        echo "| v1 history, newest 50 (round $round) | $tree | 100 | $rps | $p50 | $p99 | $cpu |"
        stop
    done
done
echo
awk -v a="${RPS["after?joined=true"]}" -v b="${RPS[before]}" -v c="${RPS[after]}" \
    -v ca="${CPU["after?joined=true"]}" -v cb="${CPU[before]}" 'BEGIN {
    printf "- GET /rooms?joined=true with unread counts: %.2fx the req/s of GET /rooms before this work (%.2fx its CPU per request) and %.2fx that of GET /rooms on this tree (target: at least 0.5x).\n", a / b, ca / cb, a / c }'
for scenario in send history; do
    ratios=""
    for round in $(seq "$ROUNDS"); do
        ratios+=" $(awk -v a="${CPU[$scenario-after-$round]}" -v b="${CPU[$scenario-before-$round]}" 'BEGIN {printf "%.3f", a / b}')"
    done
    # shellcheck disable=SC2086
    echo "- v1 $scenario: server CPU-µs per request after/before, median $(printf '%s\n' $ratios | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}') (rounds:$ratios)"
done
