#!/usr/bin/env bash
# The timeline's measurements (issue 16), printed as a markdown section for BENCHMARKS.md:
#
#   load/timeline.sh [BEFORE_REF]      default BEFORE_REF=main
#
# 1. Room lists with unread counts: load/timeline_seed.py writes a database of 100 rooms x 10,000
#    messages (a user `reader` in all of them, marker half-way); BEFORE_REF's server and this
#    tree's run on copies of it, one at a time: GET /rooms and GET /rooms?joined=true (100 rooms a
#    page), wrk -c10.
# 2. Search latency on the same 1,000,000 messages (this tree): one client (wrk -c1), for a common
#    word (`hello`, in ~1 message of 6), a rare one (`zanzibar`, 20 messages), a one-letter
#    prefix, two words, and the common word in one room only.
# 3. v1 send (durable, --durability full) and history (newest 50) on fresh databases, BEFORE_REF
#    and this tree alternately, wrk -c100 as load/bench.sh runs them.
#
# BEFORE_REF is taken with `git archive` into a temp dir and run from there with this venv.
# Servers on core SERVER_CPU (0), wrk on CLIENT_CPU (1). Only 127.0.0.1 is targeted.

set -euo pipefail
cd "$(dirname "$0")/.."
source load/lib.sh
BEFORE_REF=${1:-main}
DUR=${DUR:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-18090}
WORK=$(mktemp -d /tmp/chat_trio_timeline.XXXXXX)
PID=""
cleanup() { [[ -n $PID ]] && stop_chat "$PID"; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/before"
git archive "$BEFORE_REF" | tar -x -C "$WORK/before"
# Run a tree's chat_trio with this venv: drop the editable install's finder so the tree's own
# package is imported.
LAUNCH='import runpy, sys; sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = "chat_trio"; runpy.run_module("chat_trio", run_name="__main__")'

# serve TREE DB [FLAGS...]: start a server of TREE (a directory) on DB; sets PID.
serve() {
    local tree=$1 db=$2
    shift 2
    taskset -c "$SERVER_CPU" "$PY" -c "$LAUNCH" "$tree" --host "$HOST" --port "$PORT" --db "$db" \
        --log-level warning "${LOAD_FLAGS[@]}" "$@" >"$WORK/server.log" 2>&1 &
    PID=$!
    wait_ready "http://$HOST:$PORT/healthz" "$PID" || { cat "$WORK/server.log" >&2; exit 1; }
}
stop() { stop_chat "$PID"; PID=""; }

# run NAME CONNS SCRIPT: one wrk run; prints "req/s p50 p99" (ms) and fails on errors.
run() {
    local out="$WORK/$1.txt"
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$2" -d"${DUR}s" --timeout 5s --latency -s "load/wrk/$3" \
        "http://$HOST:$PORT" >"$out" 2>&1 || true
    if grep -q "RESULT: ERRORS" "$out"; then echo "$1: errors, see below" >&2; cat "$out" >&2; exit 1; fi
    awk '/^Requests\/sec:/ {r = $2} $1 == "50%" {p50 = $2} $1 == "99%" {p99 = $2}
         function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000 }
         END {printf "%.0f %.2f %.2f\n", r, ms(p50), ms(p99)}' "$out"
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
echo "| scenario | tree | conns | req/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|"
declare -A RPS
for tree in before after; do
    cp "$WORK/seed.db" "$WORK/$tree.db"
    serve "$([[ $tree == before ]] && echo "$WORK/before" || pwd)" "$WORK/$tree.db"
    login_reader
    for query in "" "?joined=true"; do
        read -r rps p50 p99 < <(URL_PATH="/rooms$query" run "rooms-$tree$query" 10 get.lua)
        RPS["$tree$query"]=$rps
        echo "| GET /rooms$query (100 of 100 rooms, 10,000 messages each) | $tree | 10 | $rps | $p50 | $p99 |"
    done
    if [[ $tree == after ]]; then
        for q in "hello" "zanzibar" "a" "hello%20zanzibar" "hello&room_id=5" "zanzibar&room_id=5"; do
            read -r rps p50 p99 < <(URL_PATH="/search?q=$q" run "search-$q" 1 get.lua)
            echo "| GET /search?q=$q (1,000,000 messages) | after | 1 | $rps | $p50 | $p99 |"
        done
    fi
    stop
done
for round in 1 2; do
    for tree in before after; do
        rm -f "$WORK/fresh.db"*
        serve "$([[ $tree == before ]] && echo "$WORK/before" || pwd)" "$WORK/fresh.db"
        seed_user_room "http://$HOST:$PORT" "bench" 60
        export TOKEN ROOM_ID
        read -r rps p50 p99 < <(run "send-$tree-$round" 100 send.lua)
        echo "| v1 send, durable (round $round) | $tree | 100 | $rps | $p50 | $p99 |"
        read -r rps p50 p99 < <(run "history-$tree-$round" 100 history.lua)
        echo "| v1 history, newest 50 (round $round) | $tree | 100 | $rps | $p50 | $p99 |"
        stop
    done
done
echo
awk -v a="${RPS["after?joined=true"]}" -v b="${RPS[before]}" -v c="${RPS[after]}" 'BEGIN {
    printf "GET /rooms?joined=true with unread counts is %.2fx the req/s of GET /rooms before this work and %.2fx that of GET /rooms on this tree (target: at least 0.5x).\n", a / b, a / c }'
