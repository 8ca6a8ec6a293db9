"""`--workers N` over real processes and real sockets: a supervisor that sequences every write and
N worker processes on one SO_REUSEPORT port must keep every guarantee of the contract across
workers: each seq once and in order on every socket, lossless resume on another worker, global
limits, revocation and presence across workers, no acknowledged write lost when a worker or the
supervisor is killed.

Each test runs with workers=1 (today's single process: the same guarantees, one worker) and
workers=2; the workers=2 cases skip while `python -m chat_trio --help` has no `--workers`. Which
worker served a call is read from the `x-chat-worker` header of its answer (of the 101 for a
websocket); a call that must land on a given worker opens new connections until one does
(SO_REUSEPORT spreads connections by their address tuple), a bounded number of times."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from chat_trio.store.sqlite import sqlite3
from tests.client import HTTPClient, Reply
from tests.helpers import (
    all_messages,
    assert_dense,
    assert_error,
    join,
    login,
    make_room,
    register,
    send,
    wait_workers_ready,
)
from tests.server_process import ServerProcess, has_workers_flag, pid_running, worker_pids, workers_args
from tests.ws_client import WS, connect

JSON = dict[str, Any]
ATTEMPTS = 64  # new connections tried to land on a given worker (each lands there with p ≈ 1/2)
GONE = (OSError, ConnectionError, trio.BrokenResourceError, h11.ProtocolError, ConnectionClosed,
        HandshakeError)  # what a client sees when the process serving it is killed
# Limits that would turn the tests' many users and sockets from one address into 429s.
OPEN = ("--register-limit", "0", "--login-rate", "0", "--login-user-limit", "0",
        "--room-create-rate", "0", "--ws-rate", "0")


@pytest.fixture(params=[1, 2], ids=["workers1", "workers2"])
def workers(request: pytest.FixtureRequest) -> int:
    count: int = request.param
    if count > 1 and not has_workers_flag():
        pytest.skip("this chat_trio has no --workers flag")
    return count


@pytest.fixture
def two_workers() -> int:
    """For the tests that kill one worker of several (with one, that is killing the server)."""
    if not has_workers_flag():
        pytest.skip("this chat_trio has no --workers flag")
    return 2


def worker_ids(workers: int) -> list[str | None]:
    """The worker ids to aim calls at: "1".."N", or [None] (anywhere) for the single process."""
    return [str(n) for n in range(1, workers + 1)] if workers > 1 else [None]


def served_by(reply: Reply) -> str | None:
    value = reply.headers.get(b"x-chat-worker")
    return None if value is None else value.decode()


def ws_worker(ws: WS) -> str | None:
    value = dict(ws.conn.handshake_headers).get(b"x-chat-worker")
    return None if value is None else value.decode()


async def client_on(port: int, worker: str | None, token: str | None = None) -> HTTPClient:
    """A keep-alive connection served by `worker` (any one when None), checked with /healthz."""
    for _ in range(ATTEMPTS):
        c = HTTPClient(port, token)
        try:
            reply = await c.get("/healthz")
        except GONE:  # not listening (yet, or any more: a worker is being respawned)
            await c.aclose()
            await trio.sleep(0.05)
            continue
        if reply.status == 200 and (worker is None or served_by(reply) == worker):
            return c
        await c.aclose()
    raise AssertionError(f"no connection landed on worker {worker}")


@asynccontextmanager
async def ws_on(port: int, token: str, worker: str | None) -> AsyncIterator[WS]:
    """A websocket (hello read) held by `worker` (any one when None)."""
    for _ in range(ATTEMPTS):
        async with connect(port, token) as ws:
            if worker is None or ws_worker(ws) == worker:
                yield ws
                return
    raise AssertionError(f"no websocket landed on worker {worker}")


@asynccontextmanager
async def running(tmp_path: Path, workers: int, *args: str, log_name: str = "server.log",
                  quiet: bool = True) -> AsyncIterator[ServerProcess]:
    """A chat_trio subprocess with `workers` workers, every one of them answering; stopped on exit.
    With `quiet`, its log must show no server-side error."""
    server = ServerProcess(tmp_path, *workers_args(workers), *OPEN, *args, log_name=log_name)
    try:
        await wait_workers_ready(await server.start(), workers)
        yield server
        if quiet:
            assert not server.errors(), server.log()
    finally:
        server.stop()


async def users_in_room(port: int, names: list[str]) -> tuple[int, list[tuple[str, JSON]]]:
    """`names` registered and logged in; the first made a room the others joined. (room id, people)"""
    c = HTTPClient(port)
    people = []
    for name in names:
        user = await register(c, name)
        people.append((await login(c, name), user))
    room_id = int((await make_room(c, people[0][0], "room"))["id"])
    for token, _ in people[1:]:
        await join(c, token, room_id)
    await c.aclose()
    return room_id, people


async def online_of(c: HTTPClient, token: str, room_id: int, user_id: int) -> tuple[bool, str | None]:
    reply = await c.get(f"/rooms/{room_id}/members", token=token)
    assert reply.status == 200, reply.body
    status = {m["user"]["id"]: m["online"] for m in reply.json["members"]}
    return status[user_id], served_by(reply)


def assert_integrity(db: Path) -> None:
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        for room_id, last_seq in conn.execute("SELECT id, last_seq FROM rooms").fetchall():
            stored = [s for (s,) in conn.execute(
                "SELECT seq FROM messages WHERE room_id = ? ORDER BY seq", (room_id,))]
            assert stored == list(range(1, last_seq + 1))


# -- ordering and resume across workers ----------------------------------------------------------

SUBSCRIBER_USERS = 6
SOCKETS_PER_USER = 4  # 24 subscribers: both workers hold some
REST_SENDS = 30  # per REST sender (one per worker, twice)
WS_SENDS = 30  # per websocket sender (one per worker)


async def rest_sender(port: int, token: str, room_id: int, worker: str | None, name: str,
                      served: set[str | None]) -> None:
    c = await client_on(port, worker, token)
    for i in range(REST_SENDS):
        reply = await send(c, token, room_id, f"{name} {i}")
        assert reply.status == 201, reply.body
        served.add(served_by(reply))
    await c.aclose()


async def ws_sender(port: int, token: str, room_id: int, worker: str | None, name: str) -> None:
    """Sends over a websocket with several sends in flight; every one is acked, in order."""
    async with ws_on(port, token, worker) as ws, trio.open_nursery() as nursery:
        async def acks() -> None:
            for i in range(WS_SENDS):
                ack = await ws.expect("ack", timeout=20)
                assert ack["ref"] == f"{name}-{i}", ack

        nursery.start_soon(acks)
        for i in range(WS_SENDS):
            frame = {"type": "send", "room_id": room_id, "text": f"{name} {i}", "ref": f"{name}-{i}"}
            await ws.send(frame)


async def test_every_subscriber_sees_each_seq_once_in_order(tmp_path: Path, workers: int) -> None:
    async with running(tmp_path, workers, "--send-rate", "0") as server:
        names = ["sender", *(f"user{n}" for n in range(SUBSCRIBER_USERS))]
        room_id, people = await users_in_room(server.port, names)
        sender = people[0][0]
        aims = worker_ids(workers)
        joins = len(names) - 1  # the room's first seqs are its members' join entries
        total = joins + 2 * len(aims) * REST_SENDS + len(aims) * WS_SENDS
        texts = {f"rest{r}-{w} {i}" for r in range(2) for w in range(len(aims)) for i in range(REST_SENDS)}
        texts |= {f"ws{w} {i}" for w in range(len(aims)) for i in range(WS_SENDS)}
        received: list[list[JSON]] = []
        held: set[str | None] = set()
        served: set[str | None] = set()

        async def subscriber(token: str, ready: trio.Event) -> None:
            async with connect(server.port, token) as ws:
                held.add(ws_worker(ws))
                await ws.subscribe(room_id)
                ready.set()
                received.append(await ws.messages_until(total, timeout=30))

        async with trio.open_nursery() as nursery:
            for token, _ in people[1:]:
                for _ in range(SOCKETS_PER_USER):
                    ready = trio.Event()
                    nursery.start_soon(subscriber, token, ready)
                    await ready.wait()
            for w, worker in enumerate(aims):
                for r in range(2):
                    nursery.start_soon(rest_sender, server.port, sender, room_id, worker,
                                       f"rest{r}-{w}", served)
                nursery.start_soon(ws_sender, server.port, sender, room_id, worker, f"ws{w}")

        assert len(received) == SUBSCRIBER_USERS * SOCKETS_PER_USER
        for messages in received:
            assert [m["seq"] for m in messages] == list(range(joins + 1, total + 1))
            assert len({m["id"] for m in messages}) == len(messages)
            assert {m["text"] for m in messages} == texts
        assert held == set(aims) and served == set(aims)  # both workers held sockets and took sends


async def test_resume_on_another_worker(tmp_path: Path, workers: int) -> None:
    async with running(tmp_path, workers, "--send-rate", "0") as server:
        room_id, [(ta, _), (tb, _)] = await users_in_room(server.port, ["alice", "bobby"])
        aims = worker_ids(workers)
        first, other = aims[0], aims[-1]
        c = await client_on(server.port, other, tb)
        for i in range(5):
            assert (await send(c, tb, room_id, f"before {i}")).status == 201
        async with ws_on(server.port, ta, first) as a:
            await a.subscribe(room_id, after=0)
            last = (await a.messages_until(6))[-1]["seq"]  # 1: bobby's join
        for i in range(40):
            assert (await send(c, tb, room_id, f"missed {i}")).status == 201
        async with ws_on(server.port, ta, other) as a:  # lands on the other worker
            assert (await a.subscribe(room_id, after=last))["last_seq"] == last + 40
            missed = await a.messages_until(last + 40)
            assert [m["seq"] for m in missed] == list(range(last + 1, last + 41))
            assert [m["text"] for m in missed] == [f"missed {i}" for i in range(40)]
            c_first = await client_on(server.port, first, tb)  # a live send through the first worker
            assert (await send(c_first, tb, room_id, "live")).status == 201
            assert (await a.expect("message"))["message"]["seq"] == last + 41
            await a.barrier()  # and nothing twice
            await c_first.aclose()
        await c.aclose()


# -- faults --------------------------------------------------------------------------------------


class Load:
    """REST senders that retry a send whose fate is unknown with its txn_id (so it is stored once)
    and a websocket reader that reconnects and resumes after its last seq, while a worker dies."""

    def __init__(self, port: int, token: str, room_id: int) -> None:
        self.port, self.token, self.room_id = port, token, room_id
        self.acked: dict[str, JSON] = {}  # txn_id → the message its 201 returned
        self.seen: list[JSON] = []  # what the reader got, across reconnects
        self.reconnects = 0

    async def rest_sender(self, n: int, count: int) -> None:
        c = HTTPClient(self.port, self.token)
        for i in range(count):
            txn = f"s{n}-{i}"
            with trio.fail_after(20):
                while True:
                    try:
                        reply = await send(c, self.token, self.room_id, f"sender {n} message {i}", txn)
                    except GONE:
                        await c.aclose()
                        await trio.sleep(0.05)
                        continue
                    break
            assert reply.status in (200, 201), reply.body
            self.acked[txn] = reply.json["message"]
            await c.aclose()  # a new connection per send: every worker takes some

    async def reader(self, first: str, until: trio.Event) -> None:
        """Reads every message from a socket on worker `first`, reconnecting (anywhere) and
        resuming after its last seq when that socket dies, until `until` is set and the room
        has been quiet for a moment."""
        aim: str | None = first
        while True:
            try:
                async with ws_on(self.port, self.token, aim) as ws:
                    await ws.subscribe(self.room_id, after=self.seen[-1]["seq"] if self.seen else 0)
                    while True:
                        with trio.move_on_after(0.5) as idle:
                            self.seen.append((await ws.expect("message"))["message"])
                        if idle.cancelled_caught and until.is_set():
                            return
            except* GONE:  # trio-websocket's nursery may wrap what the dying worker caused
                pass
            self.reconnects += 1
            aim = None
            await trio.sleep(0.05)


async def test_killed_worker_is_respawned_and_nothing_acknowledged_is_lost(
        tmp_path: Path, two_workers: int) -> None:
    async with running(tmp_path, two_workers, "--send-rate", "0", quiet=False) as server:
        room_id, [(token, _)] = await users_in_room(server.port, ["alice"])
        before = worker_pids(server.proc.pid)
        assert set(before) == {"1", "2"}, before
        load = Load(server.port, token, room_id)
        done = trio.Event()
        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(load.reader, "2", done)
                async with trio.open_nursery() as senders:
                    for n in range(4):
                        senders.start_soon(load.rest_sender, n, 60)
                    with trio.fail_after(10):
                        while len(load.acked) < 40:
                            await trio.sleep(0.01)
                    os.kill(before["2"], signal.SIGKILL)  # mid-load
                done.set()

        # Respawned: a new process under the same id, and it answers.
        with trio.fail_after(10):
            while (now := worker_pids(server.proc.pid)).get("2") in (None, before["2"]):
                await trio.sleep(0.05)
        assert now["1"] == before["1"]
        await (await client_on(server.port, "2")).aclose()

        c = HTTPClient(server.port, token)
        stored = await all_messages(c, token, room_id)
        await c.aclose()
        assert_dense(stored, len(stored))
        by_txn = {m["txn_id"]: m for m in stored}
        assert len(load.acked) == 4 * 60 and len(by_txn) == len(stored) == len(load.acked)
        for txn, message in load.acked.items():
            assert by_txn[txn] == message
        assert load.reconnects >= 1  # its socket was on the killed worker
        assert [m["seq"] for m in load.seen] == list(range(1, len(stored) + 1))  # resumed losslessly


async def test_killed_supervisor_keeps_every_acknowledged_write(tmp_path: Path, workers: int) -> None:
    acked: dict[str, JSON] = {}
    async with running(tmp_path, workers, "--send-rate", "0", quiet=False) as server:
        room_id, [(token, _)] = await users_in_room(server.port, ["alice"])
        pids = worker_pids(server.proc.pid)

        async def sender(n: int) -> None:
            c = HTTPClient(server.port, token)
            for i in range(10_000):
                try:
                    reply = await send(c, token, room_id, f"sender {n} message {i}", f"s{n}-{i}")
                except GONE:
                    return  # the server is gone: this send's fate is unknown
                if reply.status >= 500:
                    return  # a worker whose supervisor died may refuse before it exits
                assert reply.status == 201, reply.body
                acked[f"s{n}-{i}"] = reply.json["message"]

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(sender, n)
            with trio.fail_after(10):
                while len(acked) < 100:
                    await trio.sleep(0.01)
            server.proc.send_signal(signal.SIGKILL)
        await server.wait()
        with trio.fail_after(10):  # its workers exit with it
            while any(pid_running(pid) for pid in pids.values()):
                await trio.sleep(0.05)

    assert_integrity(tmp_path / "chat.db")
    async with running(tmp_path, workers, log_name="server-2.log") as again:
        c = HTTPClient(again.port, token)
        stored = await all_messages(c, token, room_id)
        assert_dense(stored, len(stored))
        by_txn = {m["txn_id"]: m for m in stored}
        for txn, message in acked.items():
            assert by_txn[txn] == message
        assert (await send(c, token, room_id, "after the restart")).status == 201
        await c.aclose()


# -- state that must be global -------------------------------------------------------------------


async def test_send_limit_is_global(tmp_path: Path, workers: int) -> None:
    """Sends spread over both workers get exactly the burst, not a burst per worker."""
    burst = 6
    async with running(tmp_path, workers, "--send-rate", "0.01", "--send-burst", str(burst)) as server:
        room_id, [(token, _)] = await users_in_room(server.port, ["alice"])
        clients = [await client_on(server.port, worker, token) for worker in worker_ids(workers)]
        statuses: list[int] = []
        for i in range(3 * burst):
            c = clients[i % len(clients)]
            reply = await send(c, token, room_id, f"message {i}")
            if reply.status == 429:
                assert_error(reply, 429, "rate_limited")
            statuses.append(reply.status)
        assert statuses.count(201) == burst and statuses.count(429) == 2 * burst, statuses
        for c in clients:
            await c.aclose()


async def test_logout_on_one_worker_closes_the_socket_on_another_4001(tmp_path: Path, workers: int) -> None:
    async with running(tmp_path, workers) as server:
        _, [(token, _), (other, _)] = await users_in_room(server.port, ["alice", "bobby"])
        a, b = worker_ids(workers)[0], worker_ids(workers)[-1]
        async with ws_on(server.port, token, b) as ws, ws_on(server.port, other, b) as bystander:
            c = await client_on(server.port, a, token)
            reply = await c.post("/logout")
            assert reply.status in (200, 204), reply.body
            assert served_by(reply) == a
            code, _ = await ws.closed()
            assert code == 4001
            await bystander.barrier()  # another token's socket stays open
            await c.aclose()


async def test_token_expiry_closes_the_socket_4001(tmp_path: Path, workers: int) -> None:
    async with running(tmp_path, workers, "--token-ttl", "2") as server:
        _, [(token, _)] = await users_in_room(server.port, ["alice"])
        async with ws_on(server.port, token, worker_ids(workers)[-1]) as ws:
            code, _ = await ws.closed(timeout=10)
            assert code == 4001


async def test_presence_is_the_union_over_workers(tmp_path: Path, workers: int) -> None:
    async with running(tmp_path, workers) as server:
        room_id, [(ta, _), (tb, bob)] = await users_in_room(server.port, ["alice", "bobby"])
        a, b = worker_ids(workers)[0], worker_ids(workers)[-1]

        async def online_on_a() -> bool:
            """Bob's `online`, as a request served by worker A answers it."""
            c = await client_on(server.port, a, ta)
            online, served = await online_of(c, ta, room_id, bob["id"])
            await c.aclose()
            assert served == a
            return online

        async def until(expected: bool) -> None:
            with trio.fail_after(5):
                while await online_on_a() is not expected:
                    await trio.sleep(0.02)

        assert await online_on_a() is False
        async with ws_on(server.port, tb, b) as ws:
            await ws.barrier()
            await until(True)
        await until(False)
