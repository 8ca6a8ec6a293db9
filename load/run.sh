#!/usr/bin/env bash
# One command for the whole benchmark: load/bench.sh (HTTP scenarios against the bare trio+h11
# baseline) and load/fanout.sh (websocket fan-out at 100 and 1000 subscribers, 10,000 idle
# sockets), then BENCHMARKS.md from load/render_benchmarks.py. Takes about five minutes.
#
#   load/run.sh                  from anywhere; writes BENCHMARKS.md at the repository root
#   load/run.sh --workers 1,2    only the worker-count sweep (load/workers.sh, any list of counts):
#                                rewrites only BENCHMARKS.md's "Worker counts" section
#
# The hand-written analysis between the ANALYSIS markers of BENCHMARKS.md is kept.
# Servers go on core 0 and the load generators on core 1 when the machine has two or more cores;
# on one core everything shares it and BENCHMARKS.md says so. Only 127.0.0.1 is ever targeted.
# Knobs: DUR=10 (seconds per wrk / fan-out run, at most 10), RUN_DIR=dir (default: a temp dir),
# PY=path (the Python with chat_trio installed; default .venv/bin/python).

set -euo pipefail

cd "$(dirname "$0")/.."
source load/lib.sh   # PY (overridable), HOST
DUR=${DUR:-10}
RUN_DIR=${RUN_DIR:-$(mktemp -d /tmp/chat_trio_run.XXXXXX)}
mkdir -p "$RUN_DIR"
START=$(date +%s)
WORKERS=""
if [[ ${1:-} == --workers ]]; then
    WORKERS=${2:?usage: load/run.sh --workers 1,2,4,8}
elif [[ -n ${1:-} ]]; then
    echo "usage: load/run.sh [--workers 1,2,...]" >&2
    exit 2
fi

if (( $(nproc) >= 2 )); then
    export SERVER_CPU=${SERVER_CPU:-0} CLIENT_CPU=${CLIENT_CPU:-1}
    PINNING="Servers pinned to core(s) $SERVER_CPU and wrk / the fan-out tool / the long-poll sender to core(s) $CLIENT_CPU (\`taskset -c\`), so the load generator never takes the server's CPU; argon2 and sqlite worker threads inherit the server's core."
else
    export SERVER_CPU=0 CLIENT_CPU=0
    PINNING="ONE core only: servers and load generators share core 0, so every figure is pessimistic (the client's CPU is taken from the server)."
fi

# The commit before the run (this run rewrites BENCHMARKS.md itself); "dirty" if the tree has changes.
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git status --porcelain -- . ':!BENCHMARKS.md' ':!docs/benchmarks' 2>/dev/null) ]] && COMMIT="$COMMIT dirty"

if [[ -n $WORKERS ]]; then
    # On a bigger machine give the server many cores: SERVER_CPU=0-7 CLIENT_CPU=8-15 load/run.sh --workers 1,2,4,8
    WORKERS_CMD="OUT=$RUN_DIR/workers SERVER_CPU=$SERVER_CPU CLIENT_CPU=$CLIENT_CPU load/workers.sh $WORKERS $DUR"
    echo "== $WORKERS_CMD" >&2
    OUT=$RUN_DIR/workers load/workers.sh "$WORKERS" "$DUR" | tee "$RUN_DIR/workers.md"
    export RUN_DIR COMMIT PINNING WORKERS WORKERS_CMD DUR CPU_MODEL CONNS FANOUT_SUBS FANOUT_RATE
    CPU_MODEL=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
    "$PY" - <<'PYEOF'
import json, os, sys, time

e = os.environ
meta = {
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": e["CPU_MODEL"],
    "nproc": os.cpu_count(), "commit": e["COMMIT"], "pinning": e["PINNING"], "duration": e["DUR"],
    "conns": e.get("CONNS", "100"), "fanout_subs": e.get("FANOUT_SUBS", "100"),
    "fanout_rate": e.get("FANOUT_RATE", "400"),
    "commands": [f"load/run.sh --workers {e['WORKERS']}    # runs the two commands below",
                 e["WORKERS_CMD"],
                 f"{sys.executable.replace(os.getcwd() + '/', '')} load/render_benchmarks.py --workers {e['RUN_DIR']}"],
}
with open(os.path.join(e["RUN_DIR"], "workers-meta.json"), "w") as f:
    json.dump(meta, f, indent=2)
PYEOF
    "$PY" load/render_benchmarks.py --workers "$RUN_DIR" --out BENCHMARKS.md
    exit 0
fi

BENCH_CMD="OUT=$RUN_DIR/bench load/bench.sh ${DUR}s"
FANOUT_CMD="OUT=$RUN_DIR/fanout load/fanout.sh $DUR"
echo "== $BENCH_CMD" >&2
OUT=$RUN_DIR/bench load/bench.sh "${DUR}s" | tee "$RUN_DIR/bench.md"
echo "== $FANOUT_CMD" >&2
OUT=$RUN_DIR/fanout load/fanout.sh "$DUR" | tee "$RUN_DIR/fanout.md"
mkdir -p docs/benchmarks                     # the fan-out plots BENCHMARKS.md shows
cp "$RUN_DIR/fanout/1-100subs.png" docs/benchmarks/fanout-100.png
cp "$RUN_DIR/fanout/2-1000subs.png" docs/benchmarks/fanout-1000.png

# Machine, versions and the commands, for the renderer.
export RUN_DIR COMMIT PINNING BENCH_CMD FANOUT_CMD DUR START
export CPU_MODEL KERNEL WRK_VERSION
CPU_MODEL=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
KERNEL=$(uname -r)
WRK_VERSION=$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}' || true)
"$PY" - <<'PYEOF'
import json, os, sqlite3, sys, time
from importlib.metadata import version

e = os.environ
meta = {
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "cpu": e["CPU_MODEL"], "nproc": os.cpu_count(), "kernel": e["KERNEL"],
    "python": sys.version.split()[0], "trio": version("trio"), "h11": version("h11"),
    "trio_websocket": version("trio-websocket"), "sqlite": sqlite3.sqlite_version,
    "wrk": e["WRK_VERSION"], "commit": e["COMMIT"], "pinning": e["PINNING"],
    "commands": ["load/run.sh    # runs the three commands below", e["BENCH_CMD"], e["FANOUT_CMD"],
                 f"{sys.executable.replace(os.getcwd() + '/', '')} load/render_benchmarks.py --run {e['RUN_DIR']}"],
    "duration": f"{e['DUR']} s", "fanout_duration": e["DUR"], "lp_rate": os.environ.get("LP_RATE", "50"),
    "run_dir": e["RUN_DIR"], "elapsed_s": int(time.time()) - int(e["START"]),
}
with open(os.path.join(e["RUN_DIR"], "meta.json"), "w") as f:
    json.dump(meta, f, indent=2)
PYEOF
"$PY" load/render_benchmarks.py --run "$RUN_DIR" --out BENCHMARKS.md
