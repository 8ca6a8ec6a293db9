#!/usr/bin/env bash
# Profile the send scenario with py-spy (see load/profile.md): a fresh chat_trio on core 0, a
# seeded user and room, wrk posting messages from core 1 for 10 s and py-spy recording the server
# (every thread, idle samples included) for 8 s of it; then the hottest functions of the event
# loop and how the writer thread spends its time.
#
#   load/profile_send.sh [full|normal]        --durability, default full
#
# Output in $OUT (default /tmp/chat_trio_profile_send_<mode>): raw.txt (py-spy collapsed stacks),
# wrk.txt, server.log. Only 127.0.0.1 is targeted; PORT=18090 by default.

set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}
PORT=${PORT:-18090}
source load/lib.sh   # PY, start_chat, seed_user_room
SPY=${SPY:-$(dirname "$PY")/py-spy}
OUT=${OUT:-/tmp/chat_trio_profile_send_$MODE}
A="http://$HOST:$PORT"
mkdir -p "$OUT"
DATA=$(mktemp -d /tmp/chat_trio_profile_db.XXXXXX)

trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
SERVER=""
start_chat "$PORT" 0 "$OUT/server.log" "$DATA/chat.db" --durability "$MODE"
SERVER=$CHAT_PID
seed_user_room "$A" profile
export TOKEN ROOM_ID

taskset -c 1 wrk -t1 -c100 -d10s --timeout 5s --latency -s load/wrk/send.lua "$A/" >"$OUT/wrk.txt" 2>&1 &
WRK=$!
sleep 1                                               # skip the ramp-up
cpu0=$(awk '{print $14 + $15}' "/proc/$SERVER/stat"); t0=$(date +%s.%N)
taskset -c 1 "$SPY" record --pid "$SERVER" --duration 8 --rate 200 --threads --idle --format raw \
    -o "$OUT/raw.txt" >/dev/null 2>&1
cpu1=$(awk '{print $14 + $15}' "/proc/$SERVER/stat"); t1=$(date +%s.%N)
wait "$WRK"

RPS=$(awk '/^Requests\/sec:/ {print $2}' "$OUT/wrk.txt")
echo "durability $MODE: $RPS req/s under the profiler (py-spy costs ~10-15%), $(grep -E '^non-2xx' "$OUT/wrk.txt")"
awk -v a="$cpu0" -v b="$cpu1" -v x="$t0" -v y="$t1" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "server CPU while recorded: %.0f%% of its core\n", 100 * (b - a) / hz / (y - x) }'
# The writer thread: share of its samples inside COMMIT (the fsync with durability full).
awk '{ n = $NF; if ($0 ~ /Trio thread/) { t += n; if ($0 ~ /_commit \(chat_trio\/store\/writer.py:[0-9]+\) [0-9]+$/) c += n } }
     END { if (t) printf "writer thread: %.1f%% of its samples in GroupCommitWriter._commit (COMMIT/fsync), the rest waiting for work\n", 100 * c / t }' \
    "$OUT/raw.txt"
"$PY" load/pyspy_top.py "$OUT/raw.txt" 15 --rps "$RPS"
