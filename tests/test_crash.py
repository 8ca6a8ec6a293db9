"""SIGKILL the server (a real subprocess) while clients send over REST and over websockets,
restart it on the same file: every message that got a 2xx or an ack is there exactly once, the
database is intact, seqs are dense, and sending works again. The WAL is checkpointed every few
pages (`--wal-autocheckpoint`), so some kills land in the middle of a checkpoint."""

from __future__ import annotations

import random
import signal
from contextlib import closing
from pathlib import Path
from typing import Any

import h11
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from chat_trio.store.sqlite import sqlite3
from tests.client import HTTPClient
from tests.helpers import all_messages, assert_dense, get_room, seed_rooms, send
from tests.server_process import ServerProcess
from tests.ws_client import connect

CLIENTS = 8  # REST senders
WS_CLIENTS = 2  # websocket senders, each with WINDOW sends in flight
WINDOW = 4
ROUNDS = 5
GONE = (OSError, ConnectionError, trio.BrokenResourceError, h11.ProtocolError, ConnectionClosed,
        HandshakeError)  # what a client sees when the server is killed


async def start_server(tmp_path: Path, n: int) -> tuple[ServerProcess, int]:
    """Server number n on the same database, with its own log file."""
    server = ServerProcess(tmp_path, "--send-rate", "0", "--ws-rate", "0", "--wal-autocheckpoint", "4",
                           db=tmp_path / "chat.db", log_name=f"server-{n}.log")
    return server, await server.start()


def check_database(db: Path) -> None:
    """What the killed server left: sqlite's own check, and the schema's invariants."""
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        for room_id, last_seq in conn.execute("SELECT id, last_seq FROM rooms").fetchall():
            stored = [s for (s,) in conn.execute(
                "SELECT seq FROM messages WHERE room_id = ? ORDER BY seq", (room_id,))]
            assert stored == list(range(1, last_seq + 1))


class Round:
    """The senders of one round until the kill; they record in the shared `acked` and
    `unanswered` (txn_id → (sender, room id, text): sent, fate unknown)."""

    def __init__(self, no: int, port: int, tokens: list[str], rooms: list[int],
                 acked: dict[str, dict[str, Any]], unanswered: dict[str, tuple[int, int, str]]) -> None:
        self.no, self.port, self.tokens, self.rooms = no, port, tokens, rooms
        self.acked, self.unanswered = acked, unanswered
        self.answers = {"rest": 0, "ws": 0}
        self.enough = trio.Event()  # both kinds of send have been answered a few times

    def outgoing(self, n: int, i: int) -> tuple[str, int, str]:
        txn = f"r{self.no}-c{n}-{i}"
        rid, text = self.rooms[i % 2], f"round {self.no} sender {n} message {i}"
        self.unanswered[txn] = (n, rid, text)
        return txn, rid, text

    def answered(self, txn: str, message: dict[str, Any], kind: str) -> None:
        del self.unanswered[txn]
        self.acked[txn] = message
        self.answers[kind] += 1
        if self.answers["rest"] >= 20 and self.answers["ws"] >= 10:
            self.enough.set()

    async def rest_sender(self, n: int) -> None:
        c = HTTPClient(self.port, self.tokens[n])
        i = 0
        while True:
            txn, rid, text = self.outgoing(n, i)
            try:
                reply = await send(c, self.tokens[n], rid, text, txn)
            except GONE:
                return  # the server is gone; this send's fate is unknown
            assert reply.status == 201, reply.body
            self.answered(txn, reply.json["message"], "rest")
            i += 1

    async def ws_sender(self, n: int) -> None:
        in_flight: list[str] = []  # acks come back in the order the sends went out
        i = 0
        try:
            async with connect(self.port, self.tokens[n]) as ws:
                while True:
                    while len(in_flight) < WINDOW:
                        txn, rid, text = self.outgoing(n, i)
                        frame = {"type": "send", "room_id": rid, "text": text, "txn_id": txn, "ref": txn}
                        await ws.send(frame)
                        in_flight.append(txn)
                        i += 1
                    ack = await ws.recv()
                    assert ack["type"] == "ack" and ack["ref"] == in_flight[0], ack
                    self.answered(in_flight.pop(0), ack["message"], "ws")
        except* GONE:
            pass  # the server is gone; the sends in flight have unknown fates


async def test_sigkill_loses_no_acknowledged_message(tmp_path: Path) -> None:
    acked: dict[str, dict[str, Any]] = {}  # txn_id → message, every one that got a 2xx or an ack
    unanswered: dict[str, tuple[int, int, str]] = {}
    server, port = await start_server(tmp_path, 0)
    try:
        setup = HTTPClient(port)
        owner, rooms, tokens = await seed_rooms(setup, 2, CLIENTS + WS_CLIENTS)
        await setup.aclose()

        for round_no in range(ROUNDS):
            senders = Round(round_no, port, tokens, rooms, acked, unanswered)
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    for n in range(CLIENTS):
                        nursery.start_soon(senders.rest_sender, n)
                    for n in range(CLIENTS, CLIENTS + WS_CLIENTS):
                        nursery.start_soon(senders.ws_sender, n)
                    await senders.enough.wait()
                    await trio.sleep(random.uniform(0, 0.3))
                    server.signal(signal.SIGKILL)
                    assert await server.wait() == -signal.SIGKILL

            server.kill()  # closes its log
            check_database(server.db)

            server, port = await start_server(tmp_path, round_no + 1)
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
                texts = [m for m in messages if m["kind"] == "text"]  # not the join entries
                assert len({m["txn_id"] for m in texts}) == len(texts)
            await c.aclose()
        # Every stored message is one we know of: nothing was written twice or out of nowhere.
        c = HTTPClient(port, owner)
        everything = [m for rid in rooms for m in await all_messages(c, owner, rid) if m["kind"] == "text"]
        assert sorted(m["txn_id"] for m in everything) == sorted(acked)
        await c.aclose()
    finally:
        server.stop()
