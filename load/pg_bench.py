"""PostgreSQL benchmark: ratios from one run, never asserted.

    CHAT_TRIO_TEST_DATABASE=postgresql:///chat?host=/tmp/x .venv/bin/python -m load.pg_bench \\
        [--duration 10] [--out DIR] [--fanout-rates 40,1000] [--fanout-subscribers 1000]

(`source scripts/pg-cluster.sh` starts a throwaway cluster and sets the variable.) Each server
gets a fresh schema (or sqlite file). Servers are pinned to core 0, wrk and the fan-out tool to
core 1; PostgreSQL's own processes are not pinned. Scenarios:

1. send (POST messages, 100 connections) and history (newest 50) on one node: sqlite vs
   PostgreSQL, each on a fresh database seeded with a user, a room and 60 messages, runs
   alternating between the two, the median of three each;
2. sends on PostgreSQL: one node vs two nodes on the same core (two wrk, half the connections
   each, one per node), the overhead of a second node;
3. cross-node delivery: `python -m load.fanout` with its subscribers spread over two nodes and
   its sender on the first: send→receive latency of the frames that crossed.

Prints a markdown table; raw outputs go to --out. Only 127.0.0.1 is ever targeted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from load.cpu import tree_cpu_seconds

PY = sys.executable
ROUNDS = 3  # alternating runs per backend and scenario
HOST = "127.0.0.1"
CHEAP = ["--argon2-time-cost", "1", "--argon2-memory-kib", "1024", "--argon2-parallelism", "1"]
LOAD = ["--send-rate", "0", "--register-limit", "0", "--login-rate", "0", "--login-user-limit", "0",
        "--room-create-rate", "0", "--max-connections-per-address", "65536",
        "--max-websockets-per-user", "65536", "--ws-rate", "0", "--ws-queue", "4096"]


@dataclass
class Args:
    database: str
    duration: int
    out: Path
    server_cpu: str
    client_cpu: str
    conns: int
    fanout_rates: list[float]
    fanout_subscribers: int


def _sql(dsn: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


@contextmanager
def schema(dsn: str) -> Iterator[str]:
    """A URL on a new schema, dropped afterwards."""
    name = "bench_" + secrets.token_hex(4)
    _sql(dsn, f"CREATE SCHEMA {name}")
    try:
        yield f"{dsn}{'&' if '?' in dsn else '?'}options={quote(f'-csearch_path={name}')}"
    finally:
        _sql(dsn, f"DROP SCHEMA {name} CASCADE")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def server(args: Args, name: str, *flags: str) -> Iterator[tuple[str, int]]:
    """A chat_trio on core `server_cpu`: (base URL, pid)."""
    port = _free_port()
    data = tempfile.mkdtemp(prefix="chat_trio_pgbench.")
    log = (args.out / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        ["taskset", "-c", args.server_cpu, PY, "-m", "chat_trio", "--host", HOST, "--port", str(port),
         "--db", f"{data}/chat.db", "--log-level", "warning", *CHEAP, *LOAD, *flags],
        stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
    url = f"http://{HOST}:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited; see {log.name}") from None
                time.sleep(0.05)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["rm", "-rf", data], check=False)


def _post(url: str, path: str, body: dict[str, Any], token: str | None = None) -> Any:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + path, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read() or b"{}")


def seed(url: str, messages: int = 60) -> tuple[str, int]:
    """A user, a room and `messages` messages: (token, room id)."""
    user = {"username": "testuser", "password": "testpass"}
    _post(url, "/register", user)
    token: str = _post(url, "/login", user)["token"]
    room_id: int = _post(url, "/rooms", {"name": "bench"}, token)["room"]["id"]
    for n in range(messages):
        _post(url, f"/rooms/{room_id}/messages", {"text": f"seed {n}", "txn_id": f"seed-{n}"}, token)
    return token, room_id


def _ms(value: str) -> float:
    """wrk's 750.00us / 1.23ms / 1.05s / 1.20m in milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(args: Args, name: str, script: str, url: str, token: str, room_id: int,
        conns: int) -> subprocess.Popen[bytes]:
    out = (args.out / f"{name}.txt").open("wb")
    return subprocess.Popen(
        ["taskset", "-c", args.client_cpu, "wrk", "-t1", f"-c{conns}", f"-d{args.duration}s", "--timeout",
         "5s", "--latency", "-s", f"load/wrk/{script}", url + "/"],
        stdout=out, stderr=subprocess.STDOUT,
        env={**os.environ, "TOKEN": token, "ROOM_ID": str(room_id), "RUN_ID": f"{name}-{time.time_ns()}"})


def parsed(args: Args, name: str) -> dict[str, float]:
    text = (args.out / f"{name}.txt").read_text()
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    non2xx = re.search(r"^\s+Non-2xx or 3xx responses:\s+(\d+)", text, re.M)
    if not (rps and p50 and p99):
        raise RuntimeError(f"wrk failed ({name}): {text[:300]}")
    return {"rps": float(rps.group(1)), "p50_ms": _ms(p50.group(1)), "p99_ms": _ms(p99.group(1)),
            "non2xx": float(non2xx.group(1)) if non2xx else 0.0}


def postgres_cpu() -> float:
    """CPU seconds of the test cluster's postmaster and its backends (0 if unknown)."""
    data = os.environ.get("PG_CLUSTER_DIR")
    if not data:
        return 0.0
    try:
        pid = int(Path(data, "data", "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return tree_cpu_seconds(pid) or 0.0


def run_wrk(args: Args, name: str, script: str, url: str, token: str, room_id: int,
            pid: int) -> dict[str, float]:
    """One wrk run, with the server's and PostgreSQL's CPU-µs per request."""
    server0, pg0 = tree_cpu_seconds(pid) or 0.0, postgres_cpu()
    wrk(args, name, script, url, token, room_id, args.conns).wait()
    found = parsed(args, name)
    served = found["rps"] * args.duration or 1.0
    found["server_cpu_us"] = ((tree_cpu_seconds(pid) or 0.0) - server0) * 1e6 / served
    found["pg_cpu_us"] = (postgres_cpu() - pg0) * 1e6 / served
    return found


def single_node(args: Args, results: dict[str, Any]) -> None:
    """Both servers up at once (idle while the other is measured), runs alternating, ROUNDS
    each; the median req/s counts (the machine may be shared)."""
    with server(args, "sqlite") as (lite, lite_pid), schema(args.database) as dsn, \
            server(args, "pg", "--database", dsn) as (pg, pg_pid):
        seeded = {"sqlite": (lite, lite_pid, *seed(lite)), "pg": (pg, pg_pid, *seed(pg))}
        for scenario, script in (("send", "send.lua"), ("history", "history.lua")):
            runs: dict[str, list[dict[str, float]]] = {"sqlite": [], "pg": []}
            for n in range(ROUNDS):
                for backend, (url, pid, token, room) in seeded.items():
                    name = f"{backend}-{scenario}-{n}"
                    runs[backend].append(run_wrk(args, name, script, url, token, room, pid))
            for backend, found in runs.items():
                results[f"{backend}_{scenario}"] = sorted(found, key=lambda r: r["rps"])[len(found) // 2]


def two_nodes(args: Args, results: dict[str, Any]) -> None:
    half = args.conns // 2
    with schema(args.database) as dsn, server(args, "pg-one", "--database", dsn) as (url, _):
        token, room = seed(url, 0)
        runs = [wrk(args, f"one-node-{n}", "send.lua", url, token, room, half) for n in (1, 2)]
        for run in runs:
            run.wait()
        results["one_node_send"] = sum(parsed(args, f"one-node-{n}")["rps"] for n in (1, 2))
    with schema(args.database) as dsn, server(args, "pg-a", "--database", dsn) as (a, _), \
            server(args, "pg-b", "--database", dsn) as (b, _):
        token, room = seed(a, 0)
        runs = [wrk(args, f"two-nodes-{n}", "send.lua", url, token, room, half)
                for n, url in ((1, a), (2, b))]
        for run in runs:
            run.wait()
        results["two_nodes_send"] = sum(parsed(args, f"two-nodes-{n}")["rps"] for n in (1, 2))


def cross_node_fanout(args: Args, results: dict[str, Any]) -> None:
    results["fanout"] = {}
    for rate in args.fanout_rates:
        with schema(args.database) as dsn, server(args, f"fan-a-{rate:g}", "--database", dsn) as (a, pid), \
                server(args, f"fan-b-{rate:g}", "--database", dsn) as (b, _):
            out = args.out / f"fanout-{rate:g}.json"
            subprocess.run(
                ["taskset", "-c", args.client_cpu, PY, "-m", "load.fanout", "--url", a, "--also", b,
                 "--subscribers", str(args.fanout_subscribers), "--rooms", "1", "--senders", "1",
                 "--rate", str(rate), "--duration", str(args.duration), "--server-pid", str(pid),
                 "--json", str(out), "--quiet"],
                check=True, stdout=(args.out / f"fanout-{rate:g}.txt").open("wb"), timeout=600)
            results["fanout"][f"{rate:g}"] = json.loads(out.read_text())


def table(r: dict[str, Any], args: Args) -> str:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "?"

    rows = [
        "| scenario | sqlite | PostgreSQL | PostgreSQL / sqlite |",
        "|---|---|---|---|",
        f"| send req/s ({args.conns} conns) | {r['sqlite_send']['rps']:.0f} | {r['pg_send']['rps']:.0f} | "
        f"{ratio(r['pg_send']['rps'], r['sqlite_send']['rps'])} |",
        f"| send p99 ms | {r['sqlite_send']['p99_ms']:.1f} | {r['pg_send']['p99_ms']:.1f} | |",
        f"| send: server CPU-µs each | {r['sqlite_send']['server_cpu_us']:.0f} | "
        f"{r['pg_send']['server_cpu_us']:.0f} (+ PostgreSQL {r['pg_send']['pg_cpu_us']:.0f}) | "
        f"{ratio(r['pg_send']['server_cpu_us'], r['sqlite_send']['server_cpu_us'])} |",
        f"| history req/s ({args.conns} conns) | {r['sqlite_history']['rps']:.0f} | "
        f"{r['pg_history']['rps']:.0f} | {ratio(r['pg_history']['rps'], r['sqlite_history']['rps'])} |",
        f"| history p99 ms | {r['sqlite_history']['p99_ms']:.1f} | {r['pg_history']['p99_ms']:.1f} | |",
        f"| history: server CPU-µs each | {r['sqlite_history']['server_cpu_us']:.0f} | "
        f"{r['pg_history']['server_cpu_us']:.0f} | "
        f"{ratio(r['pg_history']['server_cpu_us'], r['sqlite_history']['server_cpu_us'])} |",
        "",
        "| PostgreSQL sends on one core | req/s | two / one |",
        "|---|---|---|",
        f"| one node | {r['one_node_send']:.0f} | |",
        f"| two nodes | {r['two_nodes_send']:.0f} | {ratio(r['two_nodes_send'], r['one_node_send'])} |",
        "",
        f"| cross-node fan-out: msgs/s into 1 room, {args.fanout_subscribers} subscribers over 2 nodes "
        "| delivered frames/s | send→receive p50 / p99 / max ms | missing / order violations |",
        "|---|---|---|---|",
    ]
    for rate, fan in r["fanout"].items():
        lat = fan.get("latency_in_window_ms", {})
        rows.append(f"| {rate} | {fan.get('delivered_per_s', '?')} | {lat.get('p50', '?')} / "
                    f"{lat.get('p99', '?')} / {lat.get('max', '?')} | {fan.get('missing', '?')} / "
                    f"{fan.get('order_violations', '?')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m load.pg_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", default=os.environ.get("CHAT_TRIO_TEST_DATABASE", ""))
    p.add_argument("--duration", type=int, default=10, help="seconds per run (1..10)")
    p.add_argument("--out", default="", help="raw outputs (default: a temp dir)")
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--fanout-rates", default="40,1000",
                   help="messages/s of each cross-node fan-out run (comma-separated)")
    p.add_argument("--fanout-subscribers", type=int, default=1000)
    a = p.parse_args(argv)
    if not a.database.startswith(("postgresql://", "postgres://")):
        p.error("needs --database postgresql://… or CHAT_TRIO_TEST_DATABASE (source scripts/pg-cluster.sh)")
    if not 1 <= a.duration <= 10:
        p.error("--duration must be 1..10")
    args = Args(a.database, a.duration, Path(a.out or tempfile.mkdtemp(prefix="chat_trio_pgbench.")),
                a.server_cpu, a.client_cpu, a.conns, [float(x) for x in a.fanout_rates.split(",")],
                a.fanout_subscribers)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    single_node(args, results)
    two_nodes(args, results)
    cross_node_fanout(args, results)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results, args))
    print(f"\nraw outputs: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
