"""SIGKILL the server (a real subprocess) while clients send, restart it on the same file: every
message that got a 2xx is there, the database is intact, seqs are dense, and sending works again."""

from __future__ import annotations

import random
import re
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import h11
import trio

from tests.client import HTTPClient
from tests.helpers import all_messages, assert_dense, get_room, seed_rooms, send

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(rb"listening on http://[^\s:]+:(\d+)")
CLIENTS = 8
ROUNDS = 3


async def start_server(db: Path, log: Path) -> tuple[trio.Process, int]:
    """Start `python -m chat_trio` and return it with the port from its "listening on" log line."""
    argv = [sys.executable, "-m", "chat_trio", "--host", "127.0.0.1", "--port", "0", "--db", str(db),
            "--send-rate", "0", "--argon2-time-cost", "1", "--argon2-memory-kib", "1024",
            "--argon2-parallelism", "1", "--log-level", "info"]
    with log.open("wb") as err:  # a file, not a pipe: an undrained pipe would stall the server
        proc = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                stderr=err, cwd=ROOT)
    with trio.fail_after(20):
        while True:
            found = LISTENING.search(log.read_bytes())
            if found:
                return proc, int(found.group(1))
            if proc.poll() is not None:
                raise AssertionError(f"server exited: {log.read_text()}")
            await trio.sleep(0.02)


def check_database(db: Path) -> None:
    """What the killed server left: sqlite's own check, and the schema's invariants."""
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        for room_id, last_seq in conn.execute("SELECT id, last_seq FROM rooms").fetchall():
            stored = [s for (s,) in conn.execute(
                "SELECT seq FROM messages WHERE room_id = ? ORDER BY seq", (room_id,))]
            assert stored == list(range(1, last_seq + 1))


async def test_sigkill_loses_no_acknowledged_message(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    acked: dict[str, dict[str, Any]] = {}  # txn_id → message, every one that got a 2xx
    unanswered: dict[str, tuple[int, int, str]] = {}  # txn_id → (client, room id, text)
    proc, port = await start_server(db, tmp_path / "server-0.log")
    try:
        setup = HTTPClient(port)
        owner, rooms, tokens = await seed_rooms(setup, 2, CLIENTS)
        await setup.aclose()

        for round_no in range(ROUNDS):
            enough = trio.Event()

            async def sender(n: int, port: int, round_no: int, enough: trio.Event) -> None:
                c = HTTPClient(port, tokens[n])
                i = 0
                while True:
                    txn = f"r{round_no}-c{n}-{i}"
                    rid, text = rooms[i % 2], f"round {round_no} client {n} message {i}"
                    unanswered[txn] = (n, rid, text)
                    try:
                        reply = await send(c, tokens[n], rid, text, txn)
                    except (OSError, ConnectionError, trio.BrokenResourceError, h11.ProtocolError):
                        return  # the server is gone; this send's fate is unknown
                    assert reply.status == 201, reply.body
                    del unanswered[txn]
                    acked[txn] = reply.json["message"]
                    if len(acked) >= 30 * (round_no + 1):
                        enough.set()
                    i += 1

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    for n in range(CLIENTS):
                        nursery.start_soon(sender, n, port, round_no, enough)
                    await enough.wait()
                    await trio.sleep(random.uniform(0, 0.3))
                    proc.send_signal(signal.SIGKILL)
                    await proc.wait()
            assert proc.returncode == -signal.SIGKILL

            check_database(db)

            proc, port = await start_server(db, tmp_path / f"server-{round_no + 1}.log")
            c = HTTPClient(port, owner)
            stored: dict[str, dict[str, Any]] = {}
            for rid in rooms:
                messages = await all_messages(c, owner, rid)
                assert_dense(messages, (await get_room(c, owner, rid))["last_seq"])
                stored.update({m["txn_id"]: m for m in messages})
            for txn, message in acked.items():
                assert stored.get(txn) == message, txn
            # Retrying the sends whose answer was lost: each exists exactly once afterwards.
            for txn, (n, rid, text) in list(unanswered.items()):
                reply = await send(c, tokens[n], rid, text, txn)
                if txn in stored:
                    assert reply.status == 200 and reply.json["message"] == stored[txn]
                else:
                    assert reply.status == 201
                acked[txn] = reply.json["message"]
                del unanswered[txn]
            fresh = await send(c, tokens[0], rooms[0], f"after crash {round_no}", f"fresh-{round_no}")
            assert fresh.status == 201
            acked[f"fresh-{round_no}"] = fresh.json["message"]
            for rid in rooms:
                messages = await all_messages(c, owner, rid)
                assert_dense(messages, (await get_room(c, owner, rid))["last_seq"])
                assert len({m["txn_id"] for m in messages}) == len(messages)
            await c.aclose()
        # Every stored message is one we know of: nothing was written twice or out of nowhere.
        c = HTTPClient(port, owner)
        everything = [m for rid in rooms for m in await all_messages(c, owner, rid)]
        assert sorted(m["txn_id"] for m in everything) == sorted(acked)
        await c.aclose()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
