"""Measure GET /me/export for a user with many messages: time to the whole document, the server
process's resident memory before, at its peak during the export and after, and whether the event
loop stayed responsive (the slowest /healthz answered meanwhile).

    .venv/bin/python scripts/export_measure.py --messages 100000

The messages are written into a fresh database directly (sqlite, one transaction), then a
`python -m chat_trio` subprocess serves it; its memory is read from /proc. Not collected by
pytest (it lives outside tests/); it reuses the tests' client and subprocess helpers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import orjson
import trio

from chat_trio.store.sqlite import sqlite3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat_trio.store.records import now_ms
from chat_trio.store.schema import migrate
from tests.client import HTTPClient
from tests.helpers import PASSWORD, login
from tests.server_process import ServerProcess


def seed(db: Path, messages: int) -> None:
    """A user (registered over HTTP later) gets `messages` messages in one room, written directly."""
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn)
    now = now_ms()
    conn.execute("BEGIN")
    conn.execute("INSERT INTO rooms (name, name_key, topic, created_by, created_at, last_seq)"
                 " VALUES ('big', 'big', '', 1, ?, ?)", (now, messages))
    conn.executemany(
        "INSERT INTO messages (room_id, seq, author_id, text, created_at) VALUES (1, ?, 1, ?, ?)",
        ((n, f"message number {n}: " + "lorem ipsum dolor sit amet " * 3, now)
         for n in range(1, messages + 1)))
    conn.execute("COMMIT")
    conn.close()


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


async def measure(messages: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "chat.db"
        conn = sqlite3.connect(db, isolation_level=None)
        migrate(conn)
        conn.close()
        server = ServerProcess(Path(tmp), db=db)
        port = await server.start()
        client = HTTPClient(port)
        reply = await client.post("/register", {"username": "writer", "password": PASSWORD})
        assert reply.status == 201, reply.body
        await client.aclose()
        server.stop()
        seed(db, messages)
        server = ServerProcess(Path(tmp), db=db, log_name="second.log")
        port = await server.start()
        try:
            client = HTTPClient(port)
            token = await login(client, "writer")
            pid = server.proc.pid
            before = rss_kib(pid)
            peak = before
            slowest = 0.0
            done = False

            async def sample() -> None:
                nonlocal peak, slowest
                probe = HTTPClient(port)
                while not done:
                    started = time.perf_counter()
                    assert (await probe.get("/healthz")).status == 200
                    slowest = max(slowest, time.perf_counter() - started)
                    peak = max(peak, rss_kib(pid))
                    await trio.sleep(0.01)
                await probe.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample)
                started = time.perf_counter()
                reply = await client.get("/me/export", token=token)
                elapsed = time.perf_counter() - started
                done = True
            doc = orjson.loads(reply.body)
            assert len(doc["messages"]) == messages, len(doc["messages"])
            after = rss_kib(pid)
            print(f"export of {messages} messages: {len(reply.body) / 1e6:.1f} MB in {elapsed:.2f} s; "
                  f"server RSS {before / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB "
                  f"(+{(peak - before) / 1024:.1f} MiB), {after / 1024:.1f} MiB after; slowest /healthz "
                  f"during it {slowest * 1000:.1f} ms")
            await client.aclose()
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    trio.run(measure, parser.parse_args().messages)


if __name__ == "__main__":
    main()
