"""Soak test: N minutes of mixed load against a `python -m chat_trio` subprocess on loopback,
sampling the server's RSS, open file descriptors and WAL size, then saying whether each stayed
flat and how many errors there were.

    .venv/bin/python scripts/soak.py --minutes 10

Load (all at once, for the whole run): websocket subscribers that read everything and reconnect
now and then (resuming with `after`), REST senders posting messages and reading history pages,
a login → /me → logout loop, and short-lived connections (`Connection: close`). Not collected by
pytest (it lives outside tests/); it reuses the tests' client and subprocess helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.client import HTTPClient, Reply
from tests.server_process import ServerProcess

PASSWORD = "correct horse battery staple"


@dataclass
class Stats:
    requests: int = 0
    messages_sent: int = 0
    frames_received: int = 0
    logins: int = 0
    ws_sessions: int = 0
    errors: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(what)
        else:
            self.errors[-1] = f"... and more (last: {what})"


def sample(server: ServerProcess) -> dict[str, float]:
    pid = server.proc.pid
    rss_kib = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    wal = server.db.with_name(server.db.name + "-wal")
    return {
        "t": time.monotonic(),
        "rss_mib": rss_kib / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "wal_kib": (wal.stat().st_size / 1024) if wal.exists() else 0.0,
    }


async def setup(port: int, users: int, rooms: int) -> tuple[list[str], list[int]]:
    client = HTTPClient(port)
    tokens = []
    for n in range(users):
        body = {"username": f"soak{n}", "password": PASSWORD}
        assert (await client.post("/register", body)).status == 201
        reply = await client.post("/login", body)
        tokens.append(reply.json["token"])
    room_ids = []
    for r in range(rooms):
        reply = await client.post("/rooms", {"name": f"soak-{r}"}, token=tokens[0])
        room_ids.append(reply.json["room"]["id"])
    for token in tokens[1:]:
        for room_id in room_ids:
            assert (await client.post(f"/rooms/{room_id}/join", token=token)).status == 200
    await client.aclose()
    return tokens, room_ids


def answered(stats: Stats, reply: Reply, what: str, ok: tuple[int, ...] = (200,)) -> bool:
    """Count a request; an unexpected status is an error."""
    stats.requests += 1
    if reply.status not in ok:
        stats.error(f"{what}: {reply.status} {reply.body[:100]!r}")
        return False
    return True


async def paced(port: int, token: str | None, rate: float, stats: Stats, until: float, what: str,
                step: Callable[[HTTPClient, int], Awaitable[None]]) -> None:
    """`step(client, n)` every 1/rate s until `until` on one keep-alive connection; a broken
    connection is an error, and the next step opens a new one."""
    client = HTTPClient(port, token)
    n = 0
    while trio.current_time() < until:
        n += 1
        try:
            await step(client, n)
        except (OSError, ConnectionError, trio.BrokenResourceError) as exc:
            stats.error(f"{what}: {exc!r}")
            await client.aclose()
        await trio.sleep(1 / rate)
    await client.aclose()


async def sender(port: int, token: str, room_ids: list[int], rate: float, stats: Stats, until: float) -> None:
    """Messages into random rooms, and a history page every fifth."""
    async def step(client: HTTPClient, n: int) -> None:
        room_id = random.choice(room_ids)
        body = {"text": f"soak {n}", "txn_id": f"{id(client)}-{n}"}
        if answered(stats, await client.post(f"/rooms/{room_id}/messages", body), "send", (200, 201)):
            stats.messages_sent += 1
        if n % 5 == 0:
            answered(stats, await client.get(f"/rooms/{room_id}/messages?limit=50"), "history")

    await paced(port, token, rate, stats, until, "sender", step)


async def subscriber(port: int, token: str, room_ids: list[int], stats: Stats, until: float) -> None:
    last: dict[int, int] = {}
    while trio.current_time() < until:
        session_end = min(until, trio.current_time() + random.uniform(10, 40))
        try:
            auth = [(b"authorization", b"Bearer " + token.encode())]
            async with open_websocket_url(f"ws://127.0.0.1:{port}/ws", connect_timeout=10,
                                          disconnect_timeout=5, extra_headers=auth) as ws:
                stats.ws_sessions += 1
                for room_id in room_ids:
                    frame: dict[str, Any] = {"type": "subscribe", "room_id": room_id}
                    if room_id in last:
                        frame["after"] = last[room_id]
                    await ws.send_message(orjson.dumps(frame).decode())
                with trio.move_on_at(session_end):
                    while True:
                        frame = orjson.loads(await ws.get_message())
                        stats.frames_received += 1
                        if frame["type"] == "message":
                            m = frame["message"]
                            before = last.get(m["room_id"])
                            if before is not None and m["seq"] != before + 1:
                                stats.error(f"ws: seq {m['seq']} after {before} in room {m['room_id']}")
                            last[m["room_id"]] = m["seq"]
                        elif frame["type"] == "subscribed" and frame["room_id"] not in last:
                            last[frame["room_id"]] = frame["last_seq"]
                        elif frame["type"] in ("error", "gap"):
                            stats.error(f"ws: {frame}")
        except ConnectionClosed as exc:
            stats.error(f"ws closed: {exc.reason}")
        except (OSError, trio.BrokenResourceError) as exc:
            stats.error(f"ws: {exc!r}")


async def login_loop(port: int, username: str, rate: float, stats: Stats, until: float) -> None:
    """login → /me → /rooms → logout, and a short-lived connection (`Connection: close`)."""
    async def step(client: HTTPClient, n: int) -> None:
        reply = await client.post("/login", {"username": username, "password": PASSWORD})
        stats.logins += 1
        if answered(stats, reply, "login"):
            token = reply.json["token"]
            for method, path in (("GET", "/me"), ("GET", "/rooms"), ("POST", "/logout")):
                reply = await client.request(method, path, token=token)
                answered(stats, reply, f"{method} {path}", (200, 204))
        answered(stats, await client.get("/healthz", headers=[("connection", "close")]), "healthz")

    await paced(port, None, rate, stats, until, "login loop", step)


def flat(values: list[float], tolerance: float, absolute: float) -> tuple[bool, str]:
    """Flat: the mean of the last third is within `tolerance` (relative) or `absolute` of the
    mean of the middle third (the first third is warm-up)."""
    third = max(1, len(values) // 3)
    middle, last = values[third:2 * third] or values, values[-third:]
    a, b = statistics.fmean(middle), statistics.fmean(last)
    growth = b - a
    ok = growth <= max(absolute, tolerance * a)
    return ok, f"{a:.1f} → {b:.1f} ({growth:+.1f})"


async def main(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="chat_trio_soak_"))
    # info: one access-log line per request, as in production. The login loop signs one user in
    # several times a second from one address, which the login limits exist to refuse.
    server = ServerProcess(tmp, "--login-rate", "0", "--login-user-limit", "0")
    server.start_sync()
    print(f"server pid {server.proc.pid} on port {server.port}, data in {tmp}", flush=True)
    stats = Stats()
    samples: list[dict[str, float]] = []
    try:
        tokens, room_ids = await setup(server.port, args.senders + 1, args.rooms)
        started = trio.current_time()
        until = started + args.minutes * 60
        async with trio.open_nursery() as nursery:
            for i in range(args.senders):
                nursery.start_soon(sender, server.port, tokens[1 + i], room_ids, args.send_rate, stats, until)
            for i in range(args.subscribers):
                token = tokens[1 + i % args.senders]
                nursery.start_soon(subscriber, server.port, token, room_ids, stats, until)
            nursery.start_soon(login_loop, server.port, "soak0", args.login_rate, stats, until)
            while trio.current_time() < until:
                samples.append(sample(server))
                s = samples[-1]
                print(f"t={s['t'] - samples[0]['t']:6.0f}s rss={s['rss_mib']:.1f}MiB fds={s['fds']:.0f} "
                      f"wal={s['wal_kib']:.0f}KiB requests={stats.requests} sent={stats.messages_sent} "
                      f"frames={stats.frames_received} errors={len(stats.errors)}", flush=True)
                await trio.sleep(args.interval)
    finally:
        log_errors = server.errors()
        alive = server.alive()
        server.stop()
    rss_ok, rss = flat([s["rss_mib"] for s in samples], 0.05, 2.0)
    fds_ok, fds = flat([s["fds"] for s in samples], 0.0, 3.0)
    wal_ok, wal = flat([s["wal_kib"] for s in samples], 0.10, 512.0)
    report = {
        "minutes": args.minutes,
        "load": {"senders": args.senders, "send_rate_each": args.send_rate, "subscribers": args.subscribers,
                 "rooms": args.rooms, "login_rate": args.login_rate},
        "requests": stats.requests, "messages_sent": stats.messages_sent,
        "frames_received": stats.frames_received, "logins": stats.logins, "ws_sessions": stats.ws_sessions,
        "rss_mib": {"flat": rss_ok, "middle_to_last_third": rss, "max": max(s["rss_mib"] for s in samples)},
        "fds": {"flat": fds_ok, "middle_to_last_third": fds, "max": max(s["fds"] for s in samples)},
        "wal_kib": {"flat": wal_ok, "middle_to_last_third": wal, "max": max(s["wal_kib"] for s in samples)},
        "client_errors": stats.errors, "server_error_log_lines": log_errors[:20], "server_alive": alive,
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    good = rss_ok and fds_ok and wal_ok and not stats.errors and not log_errors and alive
    print("RESULT:", "flat, no errors" if good else "NOT FLAT OR ERRORS")
    return 0 if good else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--send-rate", type=float, default=10.0, help="messages per second per sender")
    parser.add_argument("--subscribers", type=int, default=24)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--login-rate", type=float, default=5.0, help="login → /me → logout per second")
    sys.exit(trio.run(main, parser.parse_args()))
