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
# CLIENT_CPU, the idle one waiting). Prints each run's req/s and server CPU-µs per request (from
# /proc, load/cpu.py: steadier than req/s on a machine others share), and per scenario the median
# of the rounds' after/before ratios.
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

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
for port in "$BEFORE_PORT" "$AFTER_PORT"; do   # never measure (or seed) a server of someone else's
    port_free "$port" || { echo "port $port is in use; set BEFORE_PORT/AFTER_PORT" >&2; exit 2; }
done
git archive "$REV" chat_trio | tar -x -C "$TREE"
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=$TREE start_chat "$BEFORE_PORT" "$SERVER_CPU" "$OUT/before.log" "$DATA/before.db"
PIDS+=("$CHAT_PID")
declare -A TOKENS ROOMS SERVER
SERVER[before]=$CHAT_PID
start_chat "$AFTER_PORT" "$SERVER_CPU" "$OUT/after.log" "$DATA/after.db"
PIDS+=("$CHAT_PID")
SERVER[after]=$CHAT_PID
for side in before after; do
    port=$BEFORE_PORT; [[ $side == after ]] && port=$AFTER_PORT
    seed_user_room "http://$HOST:$port" bench 60
    TOKENS[$side]=$TOKEN; ROOMS[$side]=$ROOM_ID
done

rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$1"; }
requests() { awk '/ requests in / {print $1}' "$1"; }
cpu_us() { "$PY" -m load.cpu "$1"; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else printf "0" }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

echo "# before ($REV, $(git rev-parse --short "$REV")) / after (this tree, $(git rev-parse --short HEAD))"
echo
echo "wrk -t1 -c$CONNS -d$DUR, servers on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU; raw output in $OUT"
echo
echo "| scenario | round | before req/s | after req/s | before CPU-µs/req | after CPU-µs/req |"
echo "|---|---:|---:|---:|---:|---:|"
declare -A RATIOS
for scenario in send history; do
    for round in $(seq "$ROUNDS"); do
        declare -A got=() per=()
        for side in before after; do
            port=$BEFORE_PORT; [[ $side == after ]] && port=$AFTER_PORT
            sleep 1   # let the previous run's leftovers drain
            f="$OUT/$scenario-$side-$round.txt"
            start=$(cpu_us "${SERVER[$side]}")
            TOKEN=${TOKENS[$side]} ROOM_ID=${ROOMS[$side]} taskset -c "$CLIENT_CPU" \
                wrk -t1 -c"$CONNS" -d"$DUR" --timeout 5s -s "load/wrk/$scenario.lua" \
                "http://$HOST:$port/" >"$f" 2>&1 || true
            used=$(( $(cpu_us "${SERVER[$side]}") - start ))
            got[$side]=$(rps "$f"); per[$side]=$(div "$used" "$(requests "$f")")
        done
        RATIOS[$scenario-rps]="${RATIOS[$scenario-rps]:-} $(div "${got[after]}" "${got[before]}")"
        RATIOS[$scenario-cpu]="${RATIOS[$scenario-cpu]:-} $(div "${per[after]}" "${per[before]}")"
        echo "| $scenario | $round | ${got[before]} | ${got[after]} | ${per[before]} | ${per[after]} |"
    done
done
echo
for scenario in send history; do
    # shellcheck disable=SC2086
    echo "- $scenario: after/before req/s median $(median ${RATIOS[$scenario-rps]}) (rounds:${RATIOS[$scenario-rps]})," \
         "CPU-µs per request median $(median ${RATIOS[$scenario-cpu]}) (rounds:${RATIOS[$scenario-cpu]})"
done
