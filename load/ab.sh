#!/usr/bin/env bash
# Before/after: the v1 send and history paths of another revision (default: main) against this
# tree, in the same run, so a change's cost is a ratio that machine drift cancels out of.
#
#   load/ab.sh [REV] [duration]     REV default main; duration per wrk run, default 5s, at most 10s
#
# Exports REV's tree with `git archive` into a temporary directory and runs it with this venv
# (PYTHONPATH first), beside a server of this tree, both on SERVER_CPU, each on a fresh database
# seeded alike (load/lib.sh's seed_user_room: a user, a room, 60 messages). Then, ROUNDS times,
# durable sends and the newest history page on each, alternating before/after (wrk on
# CLIENT_CPU, the idle one waiting). Prints each run, the medians and after/before.
# Knobs: ROUNDS=3 CONNS=100 BEFORE_PORT=18090 AFTER_PORT=18091 SERVER_CPU=0 CLIENT_CPU=1 OUT=dir.
# Only 127.0.0.1 is ever targeted.

set -euo pipefail

cd "$(dirname "$0")/.."
source load/lib.sh
REV=${1:-main}
DUR=$(bounded_duration "${2:-5s}")
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-100}
BEFORE_PORT=${BEFORE_PORT:-18090}
AFTER_PORT=${AFTER_PORT:-18091}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-$(mktemp -d /tmp/chat_trio_ab.XXXXXX)}
TREE=$(mktemp -d /tmp/chat_trio_before.XXXXXX)
DATA=$(mktemp -d /tmp/chat_trio_db.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do stop_chat "$pid"; done
    rm -rf "$TREE" "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

git archive "$REV" chat_trio | tar -x -C "$TREE"
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=$TREE start_chat "$BEFORE_PORT" "$SERVER_CPU" "$OUT/before.log" "$DATA/before.db"
PIDS+=("$CHAT_PID")
start_chat "$AFTER_PORT" "$SERVER_CPU" "$OUT/after.log" "$DATA/after.db"
PIDS+=("$CHAT_PID")
declare -A TOKENS ROOMS
for side in before after; do
    port=$BEFORE_PORT; [[ $side == after ]] && port=$AFTER_PORT
    seed_user_room "http://$HOST:$port" bench 60
    TOKENS[$side]=$TOKEN; ROOMS[$side]=$ROOM_ID
done

rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$1"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

echo "# before ($REV, $(git rev-parse --short "$REV")) / after (this tree, $(git rev-parse --short HEAD))"
echo
echo "wrk -t1 -c$CONNS -d$DUR, servers on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU; raw output in $OUT"
echo
echo "| scenario | round | before req/s | after req/s |"
echo "|---|---:|---:|---:|"
declare -A RESULTS
for scenario in send history; do
    for round in $(seq "$ROUNDS"); do
        line="| $scenario | $round"
        for side in before after; do
            port=$BEFORE_PORT; [[ $side == after ]] && port=$AFTER_PORT
            sleep 1   # let the previous run's leftovers drain
            TOKEN=${TOKENS[$side]} ROOM_ID=${ROOMS[$side]} taskset -c "$CLIENT_CPU" \
                wrk -t1 -c"$CONNS" -d"$DUR" --timeout 5s -s "load/wrk/$scenario.lua" \
                "http://$HOST:$port/" >"$OUT/$scenario-$side-$round.txt" 2>&1 || true
            value=$(rps "$OUT/$scenario-$side-$round.txt")
            RESULTS[$scenario-$side]="${RESULTS[$scenario-$side]:-} ${value:-0}"
            line="$line | ${value:-?}"
        done
        echo "$line |"
    done
done
echo
for scenario in send history; do
    # shellcheck disable=SC2086
    b=$(median ${RESULTS[$scenario-before]}); a=$(median ${RESULTS[$scenario-after]})
    echo "- $scenario: median before $b req/s, after $a req/s: after/before $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", a / b}')"
done
