"""Write BENCHMARKS.md from one load/run.sh run, keeping the hand-written analysis section.

    python load/render_benchmarks.py --run DIR [--out BENCHMARKS.md]
    python load/render_benchmarks.py --workers DIR [--out BENCHMARKS.md]

DIR holds meta.json (machine, versions, commands; written by load/run.sh), bench/results.tsv
(load/bench.sh) and fanout/{1-100subs,2-1000subs,3-idle}.json (load/fanout.sh). Everything
outside the ANALYSIS markers is regenerated; the text between them is copied from the existing
file (a placeholder the first time), and so is the `--workers` section.

With --workers, DIR is a `load/run.sh --workers 1,2,...` run (workers-meta.json and
workers/workers.tsv from load/workers.sh): only the section between the WORKERS markers is
rewritten (added at the end the first time).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BEGIN = "<!-- BEGIN ANALYSIS: hand-written; load/run.sh keeps everything between these markers -->"
END = "<!-- END ANALYSIS -->"
PLACEHOLDER = "_(no analysis yet: write it here after a run; the runner keeps this section)_\n"

WORKERS_BEGIN = "<!-- BEGIN WORKERS: written by load/run.sh --workers; a full run keeps it -->"
WORKERS_END = "<!-- END WORKERS -->"
ONE_CORE_RPS = 0.85  # issue 13 on one core: --workers 2 reaches this share of --workers 1's req/s
ONE_CORE_CPU = 1.15  # ... and spends at most this much CPU per request or delivered frame
WORKER_SCENARIOS = {"healthz": "GET /healthz", "send": "POST messages (durable)",
                    "history": "GET messages?limit=50", "fanout": "websocket deliveries (fan-out)"}

FANOUT_TARGET = 40_000  # delivered messages/s at 1000 subscribers
P99_TARGET_MS = 100.0
IDLE_TARGET = 10_000


def load_tsv(path: Path) -> dict[str, dict[str, str]]:
    cols = ["key", "label", "conns", "rps", "ratio", "p50", "p99", "non2xx", "errors"]
    rows: dict[str, dict[str, str]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = dict(zip(cols, (line.split("\t") + [""] * len(cols))[: len(cols)], strict=True))
            rows[row["key"]] = row
    return rows


def load_json(path: Path) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result


def num(value: str | float | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "?") else None
    except ValueError:
        return None


def errors_cell(row: dict[str, str]) -> str:
    if not row.get("rps"):
        return "wrk failed"
    socket = {k: int(v) for k, v in (p.split("=") for p in row["errors"].split()) if int(v)}
    parts = [f"non-2xx {row['non2xx']}"] if row["non2xx"] not in ("", "0") else []
    parts += [f"{k} {v}" for k, v in socket.items()]
    return ", ".join(parts) or "0"


def fmt_int(value: str | float | None) -> str:
    v = num(value)
    return "?" if v is None else f"{v:,.0f}"


def http_table(rows: dict[str, dict[str, str]]) -> str:
    order = [
        ("baseline", "bare trio+h11 hello-world `GET /`: median of 3 runs (the reference)"),
        *[
            row
            for i in (1, 2, 3)
            for row in (
                (f"baseline-{i}", f"baseline `GET /` run {i}"),
                (f"healthz-{i}", f"chat_trio `GET /healthz` run {i} (ratio to baseline run {i})"),
            )
        ],
        ("login", "`POST /login` (default argon2id: t=3, 64 MiB, p=4)"),
        ("register", "`POST /register` (default argon2id)"),
        ("send_full", "`POST /rooms/{id}/messages`, `--durability full` (default)"),
        ("send_normal", "`POST /rooms/{id}/messages`, `--durability normal`"),
        ("history", "`GET /rooms/{id}/messages?limit=50` (newest page), `--durability full`"),
        ("history_normal", "`GET /rooms/{id}/messages?limit=50`, `--durability normal`"),
        ("longpoll_idle", None),
        ("longpoll_woken", None),
    ]
    lines = [
        "| scenario | conns | req/s | x baseline | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in order:
        row = rows.get(key)
        if row is None:
            lines.append(f"| {label or key} | | not run | | | | |")
            continue
        label = label or row["label"]
        lines.append(
            f"| {label} | {row['conns']} | {fmt_int(row['rps'])} | {row['ratio'] or '?'} "
            f"| {row['p50'] or '-'} | {row['p99'] or '-'} "
            f"| {errors_cell(row) if key != 'baseline' else '-'} |"
        )
    h = rows.get("healthz")
    if h:
        lines.append(
            f"| **`GET /healthz`: median of the 3 pair ratios** | {h['conns']} | | **{h['ratio']}** | | | |"
        )
    return "\n".join(lines)


def fanout_table(results: list[dict[str, Any] | None], base_rps: float | None) -> str:
    lines = [
        "| scenario | delivered msgs/s | x baseline req/s | p50 ms | p90 ms | p99 ms | max ms | sent/acked "
        "| missing / order errors / closed | server CPU (1 core) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in results:
        if r is None or r.get("mode") != "fanout":
            continue
        o, lat = r["options"], r["latency_ms"]
        closed = sum(r["closed"].values()) + sum(r["connect_failures"].values())
        ratio = f"{r['delivered_per_s'] / base_rps:.2f}" if base_rps else "?"
        lines.append(
            f"| 1 sender → {o['subscribers']} subscribers, {o['rate']:g} msgs/s "
            f"| {r['delivered_per_s']:,.0f} | {ratio} | {lat['p50']:.1f} | {lat['p90']:.1f} "
            f"| {lat['p99']:.1f} | {lat['max']:.1f} | {r['sent']}/{r['acked']} "
            f"| {r['missing']} / {r['order_violations']} / {closed} "
            f"| {r['cpu_pct']['server']}% |"
        )
    return "\n".join(lines)


def idle_line(r: dict[str, Any] | None) -> str:
    if r is None:
        return "Idle websockets: not run."
    rss = r["server_rss_kib"]
    failed = sum(r["connect_failures"].values())
    return (
        f"Idle websockets: {r['opened']:,} of {r['options']['idle']:,} opened in {r['connect_s']} s "
        f"({r['connects_per_s']}/s), {r['alive_after_hold']:,} still open after {r['options']['hold']:g} s "
        f"({failed} connect failures); server RSS {rss['before'] / 1024:.0f} MiB before, "
        f"{rss['after_hold'] / 1024:.0f} MiB with all open → **{r['server_kib_per_connection']} KiB per "
        f"connection** (authenticated, subscribed to one room); server CPU while idle "
        f"{r['cpu_pct_while_idle']['server']}%."
    )


def mark(ok: bool | None) -> str:
    return "?" if ok is None else ("**met**" if ok else "**missed**")


def targets(
    rows: dict[str, dict[str, str]], fan1000: dict[str, Any] | None, idle: dict[str, Any] | None
) -> str:
    def ratio(key: str) -> float | None:
        return num(rows.get(key, {}).get("ratio"))

    lines = ["| target | measured | |", "|---|---|---|"]
    for key, label, goal in (
        ("healthz", "`GET /healthz` ≥ 0.9x baseline (median of 3 alternating pairs)", 0.9),
        ("send_full", "durable send (`--durability full`) ≥ 0.5x baseline", 0.5),
        ("history", "history ≥ 0.5x baseline", 0.5),
    ):
        r = ratio(key)
        lines.append(
            f"| {label} | {'?' if r is None else f'{r:.2f}x'} | {mark(None if r is None else r >= goal)} |"
        )
    send_normal = ratio("send_normal")
    if send_normal is not None:
        lines.append(
            f"| (for comparison, not a target) send with `--durability normal` ≥ 0.5x | "
            f"{send_normal:.2f}x | {mark(send_normal >= 0.5)} |"
        )
    if fan1000:
        lat = fan1000["latency_ms"]["p99"]
        ok = (
            fan1000["delivered_per_s"] >= FANOUT_TARGET
            and lat < P99_TARGET_MS
            and fan1000["missing"] == 0
            and (fan1000["cpu_pct"]["server"] or 0) <= 100
        )
        lines.append(
            f"| websocket fan-out ≥ 40,000 delivered msgs/s on one server core, p99 send→receive < 100 ms "
            f"at 1000 subscribers | {fan1000['delivered_per_s']:,.0f}/s (offered 40,000/s), "
            f"p99 {lat:.1f} ms, "
            f"{fan1000['missing']} missing, server {fan1000['cpu_pct']['server']}% of its core | {mark(ok)} |"
        )
    else:
        lines.append("| websocket fan-out at 1000 subscribers | not run | ? |")
    if idle:
        ok = idle["alive_after_hold"] >= IDLE_TARGET
        lines.append(
            f"| 10,000 idle websockets in one process, memory per connection stated "
            f"| {idle['alive_after_hold']:,} held, {idle['server_kib_per_connection']} KiB each "
            f"| {mark(ok)} |"
        )
    else:
        lines.append("| 10,000 idle websockets | not run | ? |")
    lines.append("")
    lines.append(
        "Fan-out: the scenario offers exactly 40,000 deliveries/s (1000 subscribers x 40 msgs/s); the "
        "tool counts the frames of messages sent inside the 10 s window, so met means every one of "
        "them arrived, with p99 < 100 ms, nothing missing, the server on its one core. The server "
        "CPU column says how much of that core it took, i.e. the headroom."
    )
    return "\n".join(lines)


def analysis(out: Path) -> str:
    if out.exists():
        text = out.read_text()
        if BEGIN in text and END in text:
            return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    return PLACEHOLDER


def between(text: str, begin: str, end: str) -> str | None:
    if begin in text and end in text:
        return text.split(begin, 1)[1].split(end, 1)[0]
    return None


def kept_workers(out: Path) -> str:
    """The workers section of the existing file, markers included (empty if there is none)."""
    inner = between(out.read_text(), WORKERS_BEGIN, WORKERS_END) if out.exists() else None
    return "" if inner is None else f"{WORKERS_BEGIN}{inner}{WORKERS_END}\n\n"


def load_workers_tsv(path: Path) -> dict[tuple[int, str], dict[str, str]]:
    cols = ["workers", "scenario", "rate", "p99", "ops", "cpu_us"]
    rows = {}
    for line in path.read_text().splitlines():
        row = dict(zip(cols, line.split("\t"), strict=False))
        rows[(int(row["workers"]), row["scenario"])] = row
    return rows


def ratio_cell(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}"


def workers_table(rows: dict[tuple[int, str], dict[str, str]]) -> str:
    lines = ["| workers | scenario | req/s or deliveries/s | x 1 worker | p99 ms | server CPU-µs each "
             "| x 1 worker |", "|---:|---|---:|---:|---:|---:|---:|"]
    order = list(WORKER_SCENARIOS)
    for (n, scenario), row in sorted(rows.items(), key=lambda kv: (
            order.index(kv[0][1]) if kv[0][1] in order else len(order), kv[0][0])):
        one = rows.get((1, scenario), {})
        rate, cpu = num(row.get("rate")), num(row.get("cpu_us"))
        lines.append(f"| {n} | {WORKER_SCENARIOS.get(scenario, scenario)} | {fmt_int(rate)} | "
                     f"{ratio_cell(rate, num(one.get('rate')))} | {row.get('p99') or '-'} | "
                     f"{row.get('cpu_us') or '-'} | {ratio_cell(cpu, num(one.get('cpu_us')))} |")
    return "\n".join(lines)


def one_core_verdict(rows: dict[tuple[int, str], dict[str, str]]) -> str:
    """Issue 13's one-core target, for --workers 2 against --workers 1 of the same run."""
    out = []
    for scenario, label in WORKER_SCENARIOS.items():
        one, two = rows.get((1, scenario)), rows.get((2, scenario))
        if one is None or two is None:
            continue
        rate = [num(one.get("rate")), num(two.get("rate"))]
        cpu = [num(one.get("cpu_us")), num(two.get("cpu_us"))]
        checks = []
        if scenario != "fanout" and rate[0] and rate[1] is not None:
            share = rate[1] / rate[0]
            checks.append(f"req/s {share:.2f}x (target ≥ {ONE_CORE_RPS}) {mark(share >= ONE_CORE_RPS)}")
        if cpu[0] and cpu[1] is not None:
            cost = cpu[1] / cpu[0]
            checks.append(f"CPU-µs {cost:.2f}x (target ≤ {ONE_CORE_CPU}) {mark(cost <= ONE_CORE_CPU)}")
        if checks:
            out.append(f"- {label}: " + "; ".join(checks))
    return "\n".join(out) or "- (needs a run with both 1 and 2 workers)"


def render_workers(run: Path) -> str:
    meta = json.loads((run / "workers-meta.json").read_text())
    rows = load_workers_tsv(run / "workers" / "workers.tsv")
    cmds = "\n".join(f"    {c}" for c in meta["commands"])
    return f"""{WORKERS_BEGIN}
## Worker counts (`--workers N`)

Generated on {meta["date"]} at commit `{meta["commit"]}`: {meta["cpu"]}, {meta["nproc"]} cores.
{meta["pinning"]}

{cmds}

Per count a fresh server (1 = the single process, no `--workers` flag) gets the same load:
wrk (one thread, {meta["duration"]} s, {meta["conns"]} connections) on `GET /healthz`, durable sends and the
newest history page, then the fan-out tool (1 sender → {meta["fanout_subs"]} subscribers at
{meta["fanout_rate"]} msgs/s). Server CPU is utime+stime summed over the supervisor and all its workers
(`load/cpu.py`, from /proc) around each wrk run, or over the fan-out tool's sending window; divided by
the requests answered or the frames delivered (a delivered frame's figure includes its share of the send).

{workers_table(rows)}

With the server confined to one core, `--workers 2` against `--workers 1` (issue 13's overhead target):

{one_core_verdict(rows)}

{WORKERS_END}
"""


def write_workers(run: Path, out: Path) -> None:
    """Replace (or add) the workers section of `out`, leaving the rest as it is."""
    section = render_workers(run).rstrip("\n")
    text = out.read_text() if out.exists() else "# chat_trio benchmarks\n"
    inner = between(text, WORKERS_BEGIN, WORKERS_END)
    if inner is None:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        text = text.replace(f"{WORKERS_BEGIN}{inner}{WORKERS_END}", section)
    out.write_text(text)


def render(run: Path, out: Path) -> str:
    meta = json.loads((run / "meta.json").read_text())
    rows = load_tsv(run / "bench" / "results.tsv") if (run / "bench" / "results.tsv").exists() else {}
    fan = [load_json(run / "fanout" / f"{n}.json") for n in ("1-100subs", "2-1000subs")]
    idle = load_json(run / "fanout" / "3-idle.json")
    base = num(rows.get("baseline", {}).get("rps"))
    cmds = "\n".join(f"    {c}" for c in meta["commands"])
    return f"""# chat_trio benchmarks

<!-- Generated by load/run.sh on {meta["date"]}: everything outside the ANALYSIS markers is rewritten
     on every run. -->

Reproduce with one command from the repository root (prerequisites: `apt-get install -y wrk`,
`.venv/bin/pip install -e '.[dev,load]'`):

    load/run.sh

## Machine and versions

- CPU: {meta["cpu"]}, {meta["nproc"]} cores (`nproc`); kernel {meta["kernel"]}
- Python {meta["python"]}, trio {meta["trio"]}, h11 {meta["h11"]}, trio-websocket {meta["trio_websocket"]},
  sqlite {meta["sqlite"]}, {meta["wrk"]}
- commit `{meta["commit"]}`; run took {meta["elapsed_s"]} s; raw outputs were in `{meta["run_dir"]}`

## Method

- Commands run by `load/run.sh`:

{cmds}

- {meta["pinning"]}
- Every server starts on a fresh database in a new temp directory; `load/bench.sh` seeds a user,
  a room and 60 messages with curl, `load/fanout.sh` registers one user per websocket.
- wrk: one thread, {meta["duration"]} per run, `--timeout 5s --latency`; the same bench run
  measures the bare trio+h11 hello-world (`load/baseline_server.py`, `GET /`) and every ratio is
  req/s divided by the median of its three baseline runs. The `/healthz` ratio is the median of
  three baseline→chat_trio pairs run alternately, so drift between runs cancels.
- chat_trio runs with its defaults except the per-user and per-address limits, which
  `load/lib.sh` lifts (`--send-rate 0 --register-limit 0 --login-rate 0 --login-user-limit 0
  --room-create-rate 0 --max-connections-per-address 65536 --max-websockets-per-user 65536`):
  every load tool is one user or thousands of sockets from 127.0.0.1, which those limits exist to
  refuse. **login and register use the DEFAULT argon2id parameters**
  (t=3, 64 MiB, 4 lanes, 2 hashing threads, all on the server's one core): they are slow by design
  (each request costs about 1 / req/s seconds of that core), which is what makes stolen hashes
  expensive to crack; their ratios are shown but not a target.
- Long-poll: `wait=1` with nothing sent holds each of {rows.get("longpoll_idle", {}).get("conns", "?")}
  connections ~1 s, so req/s ≈ connections / 1 s by construction (it shows the server holds them and the
  overhead above 1000 ms at p50); the woken variant has a background sender post
  {meta["lp_rate"]} msgs/s and each message wakes every waiting poll (req/s ≈ wake-ups answered,
  capped at connections x msgs/s).
- Fan-out (`load/fanout.sh`): cheap argon2 (`--argon2-time-cost 1 --argon2-memory-kib 1024
  --argon2-parallelism 1`) only because setup registers one user per socket (1000 default hashes
  would take minutes and are not what is measured), plus `--send-rate 0 --register-limit 0
  --ws-rate 0 --ws-queue 4096`. Sending lasts {meta["fanout_duration"]} s, then up to 10 s of
  drain; latency is send→receive per delivered frame. Server CPU is its utime+stime over the sending window.

## Results

### HTTP (wrk)

{http_table(rows)}

### Websocket fan-out

{fanout_table(fan, base)}

{idle_line(idle)}

## Targets

{targets(rows, fan[1], idle)}

{kept_workers(out)}## Analysis

{BEGIN}
{analysis(out)}{END}
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", type=Path, help="the load/run.sh output directory")
    what.add_argument("--workers", type=Path, help="the load/run.sh --workers output directory")
    p.add_argument("--out", default=Path("BENCHMARKS.md"), type=Path)
    a = p.parse_args()
    if a.workers is not None:
        write_workers(a.workers, a.out)
    else:
        a.out.write_text(render(a.run, a.out))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
