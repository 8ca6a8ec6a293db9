"""Several nodes on one PostgreSQL: two server processes on two ports sharing one schema must keep
every guarantee of the contract across nodes: each seq once and in order on every socket wherever
it was sent, nothing acknowledged lost when a node is killed or PostgreSQL restarts (503 while it
is down, then a resync), one message for a txn_id retried on both nodes at once, and logout
closing the token's websockets on every node (4001)."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from chat_trio.api.commands import LocalCommands
from chat_trio.config import Config
from chat_trio.errors import APIError
from chat_trio.security.tokens import digest
from chat_trio.store.changes import TokensRevoked
from chat_trio.store.pgschema import MIGRATIONS as PG_MIGRATIONS
from chat_trio.store.schema import MIGRATIONS
from tests.client import HTTPClient
from tests.helpers import (
    PASSWORD,
    all_messages,
    assert_dense,
    assert_error,
    join,
    login,
    make_room,
    register,
    register_and_login,
    send,
    wait_workers_ready,
)
from tests.pg import REQUIRED, fresh_schema, query, require_pg
from tests.server_process import ServerProcess, workers_args
from tests.test_cli import _failed_start
from tests.test_commands import queue_a_kick, running_store
from tests.test_metrics import scrape, value
from tests.test_workers import GONE, OPEN
from tests.ws_client import connect

JSON = dict[str, Any]


@asynccontextmanager
async def node(tmp_path: Path, dsn: str, name: str, *args: str,
               quiet: bool = True) -> AsyncIterator[ServerProcess]:
    """`python -m chat_trio --database dsn` (its own --db path: where its admin socket goes),
    stopped on exit; with `quiet`, its log must show no server-side error."""
    server = ServerProcess(tmp_path, "--database", dsn, *OPEN, "--send-rate", "0", *args,
                           db=tmp_path / f"{name}.db", log_name=f"{name}.log")
    try:
        await server.start()
        yield server
        if quiet:
            assert not server.errors(), server.log()
    finally:
        server.stop()


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with fresh_schema() as url:
        yield url


async def people_in_room(ports: list[int], names: list[str]) -> tuple[int, list[tuple[str, JSON]]]:
    """`names` registered and logged in (through the first port); the first made a room the others
    joined; returns once every node has taken all of it in (another node's view lags by one
    notification)."""
    c = HTTPClient(ports[0])
    people = []
    for name in names:
        user = await register(c, name)
        people.append((await login(c, name), user))
    room_id = int((await make_room(c, people[0][0], "room"))["id"])
    for token, _ in people[1:]:
        await join(c, token, room_id)
    await c.aclose()
    with trio.fail_after(5):
        for port in ports:
            c = HTTPClient(port, people[0][0])
            while (reply := await c.get(f"/rooms/{room_id}")).status != 200 or \
                    reply.json["room"]["member_count"] != len(names):
                await trio.sleep(0.01)
            await c.aclose()
    return room_id, people


def assert_dense_in_db(dsn: str) -> None:
    for room_id, last_seq in query(dsn, "SELECT id, last_seq FROM rooms"):
        rows = query(dsn, "SELECT seq FROM messages WHERE room_id = %s ORDER BY seq", room_id)
        assert [seq for (seq,) in rows] == list(range(1, last_seq + 1))


# -- settings ------------------------------------------------------------------------------------


def test_database_flag_selects_the_backend() -> None:
    assert Config(database="postgresql://chat@db/chat").postgres
    assert Config(database="sqlite:///var/chat.db").db == "var/chat.db"  # as --db var/chat.db
    assert Config(database="sqlite:////var/chat.db").db == "/var/chat.db"
    assert not Config().postgres
    with pytest.raises(ValueError, match="--database"):
        Config(database="mysql://chat@db/chat")


def test_unreachable_postgres_is_one_line_without_the_url(tmp_path: Path) -> None:
    dsn = f"postgresql://chat:s3cret@/chat?host={tmp_path}/nowhere"
    line = _failed_start(tmp_path, "--database", dsn)
    assert "cannot open the PostgreSQL database" in line and "s3cret" not in line


async def test_nodes_starting_together_migrate_once(tmp_path: Path, dsn: str) -> None:
    """Migrations run under an advisory lock: of three nodes started at once on an empty schema,
    one creates it and the others find it done; all three serve. The schema's version is the
    one a sqlite database of this server has: the engines number their migrations alike."""
    servers = [ServerProcess(tmp_path, "--database", dsn, db=tmp_path / f"{n}.db", log_name=f"{n}.log")
               for n in range(3)]
    try:
        for server in servers:
            await server.start()
            assert not server.errors(), server.log()
        version = len(PG_MIGRATIONS)
        assert query(dsn, "SELECT version FROM schema_version") == [(version,)]
        assert version == len(MIGRATIONS)  # what a sqlite database of this server is at
    finally:
        for server in servers:
            server.stop()


# -- ordering across nodes -----------------------------------------------------------------------

SENDS = 40  # per sender


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "workers2"])
async def test_every_subscriber_on_either_node_sees_each_seq_once_in_order(
        tmp_path: Path, dsn: str, workers: int) -> None:
    """Node A may itself be a `--workers 2` node: its supervisor is its writer and listener."""
    async with node(tmp_path, dsn, "a", *workers_args(workers)) as a, node(tmp_path, dsn, "b") as b:
        await wait_workers_ready(a.port, workers)
        room_id, people = await people_in_room([a.port, b.port], ["sender", "alice", "bobby"])
        sender = people[0][0]
        ports = [a.port, b.port]
        joins = 2  # the room's first seqs are alice's and bobby's join entries
        total = joins + 2 * len(ports) * SENDS
        received: list[list[JSON]] = []

        async def subscriber(port: int, token: str, ready: trio.Event) -> None:
            async with connect(port, token) as ws:
                await ws.subscribe(room_id)
                ready.set()
                received.append(await ws.messages_until(total, timeout=40))

        async def rest_sender(port: int, name: str) -> None:
            c = HTTPClient(port, sender)
            for i in range(SENDS):
                reply = await send(c, sender, room_id, f"{name} {i}")
                assert reply.status == 201, reply.body
            await c.aclose()

        async def ws_sender(port: int, name: str) -> None:
            async with connect(port, sender) as ws:
                for i in range(SENDS):
                    await ws.send({"type": "send", "room_id": room_id, "text": f"{name} {i}", "ref": i})
                for i in range(SENDS):
                    assert (await ws.expect("ack", timeout=20))["ref"] == i

        async with trio.open_nursery() as nursery:
            for port in ports:
                for token, _ in people[1:]:
                    ready = trio.Event()
                    nursery.start_soon(subscriber, port, token, ready)
                    await ready.wait()
            for n, port in enumerate(ports):
                nursery.start_soon(rest_sender, port, f"rest{n}")
                nursery.start_soon(ws_sender, port, f"ws{n}")

        texts = {f"{kind}{n} {i}" for kind in ("rest", "ws") for n in range(2) for i in range(SENDS)}
        assert len(received) == 2 * len(ports)
        for messages in received:
            assert [m["seq"] for m in messages] == list(range(joins + 1, total + 1))
            assert len({m["id"] for m in messages}) == len(messages)
            assert {m["text"] for m in messages} == texts
        assert_dense_in_db(dsn)


async def test_a_message_too_large_to_notify_reaches_the_other_node(tmp_path: Path, dsn: str) -> None:
    """A NOTIFY payload holds under 8000 bytes: a larger message travels as a pointer the other
    node resolves by reading the database, in its place in the room's order."""
    async with node(tmp_path, dsn, "a") as a, node(tmp_path, dsn, "b") as b:
        room_id, [(token, _)] = await people_in_room([a.port, b.port], ["alice"])
        big = "\U0001F600" * 4000  # 16,000 bytes of UTF-8
        async with connect(b.port, token) as ws:
            await ws.subscribe(room_id)
            c = HTTPClient(a.port, token)
            for text in ("before", big, "after"):
                assert (await send(c, token, room_id, text)).status == 201
            await c.aclose()
            assert [m["text"] for m in await ws.messages_until(3)] == ["before", big, "after"]


async def test_racing_retries_of_one_txn_id_on_two_nodes_create_one_message(tmp_path: Path, dsn: str) -> None:
    async with node(tmp_path, dsn, "a") as a, node(tmp_path, dsn, "b") as b:
        room_id, [(token, _)] = await people_in_room([a.port, b.port], ["alice"])
        clients = [HTTPClient(a.port, token), HTTPClient(b.port, token)]
        for i in range(30):
            replies: list[Any] = [None, None]

            async def attempt(n: int, txn: str = f"t{i}") -> None:
                replies[n] = await send(clients[n], token, room_id, "once", txn)  # noqa: B023

            async with trio.open_nursery() as nursery:
                nursery.start_soon(attempt, 0)
                nursery.start_soon(attempt, 1)
            assert sorted(r.status for r in replies) == [200, 201], [r.body for r in replies]
            assert replies[0].json["message"] == replies[1].json["message"]
        for c in clients:
            await c.aclose()
        stored = query(dsn, "SELECT txn_id, seq FROM messages ORDER BY seq")
        assert [txn for txn, _ in stored] == [f"t{i}" for i in range(30)]
        assert [seq for _, seq in stored] == list(range(1, 31))  # no seq burnt by the losing retry


async def test_send_room_and_registration_limits_hold_across_nodes(tmp_path: Path, dsn: str) -> None:
    """Each limit (sends, room creations, invites, registrations) is decided in the transaction
    that writes (a row per key in the database), so alternating nodes gets no more than one node
    would give."""
    limits = ("--send-rate", "0.01", "--send-burst", "5", "--room-create-rate", "0.01",
              "--room-create-burst", "2", "--register-limit", "3", "--invite-rate", "0.01",
              "--invite-burst", "2", "--token-purge-interval", "0.5")
    async with node(tmp_path, dsn, "a", *limits) as a, node(tmp_path, dsn, "b", *limits) as b:
        clients = [HTTPClient(a.port), HTTPClient(b.port)]
        statuses = []
        for n in range(4):
            reply = await clients[n % 2].post("/register", {"username": f"user{n}", "password": PASSWORD})
            statuses.append(reply.status)
        assert statuses == [201, 201, 201, 429]
        token = await login(clients[0], "user0")
        rooms = [await clients[n % 2].post("/rooms", {"name": f"r{n}"}, token=token) for n in range(3)]
        assert [r.status for r in rooms] == [201, 201, 429]
        assert rooms[2].json["error"]["code"] == "rate_limited"
        room_id = rooms[0].json["room"]["id"]
        others = [(await login(clients[0], f"user{n}"), n) for n in (1, 2)]
        user_ids = [(await clients[0].get("/me", token=t)).json["user"]["id"] for t, _ in others]
        invited = [(await clients[n % 2].post(f"/rooms/{rooms[n // 2].json['room']['id']}/invites",
                                              {"user_id": user_ids[n % 2]}, token=token)).status
                   for n in range(3)]
        assert invited == [201, 201, 429]
        sent = [(await send(clients[n % 2], token, room_id, f"m{n}")).status for n in range(7)]
        assert sent == [201] * 5 + [429] * 2
        retry = await send(clients[1], token, room_id, "again", "t-1")  # over the limit: nothing new
        assert retry.status == 429
        for c in clients:
            await c.aclose()
        # Rows untouched for a day are purged (with the expired tokens).
        query(dsn, "UPDATE limits SET at = 0")
        query(dsn, "UPDATE limit_events SET at = 0")
        with trio.fail_after(5):
            while query(dsn, "SELECT (SELECT count(*) FROM limits) + (SELECT count(*) FROM limit_events)") \
                    != [(0,)]:
                await trio.sleep(0.1)


async def test_sends_appended_in_bulk_keep_the_limit_and_txn_ids(tmp_path: Path, dsn: str) -> None:
    """Sends pipelined on a websocket reach the writer together and are appended in bulk: the
    send bucket still lets exactly its burst through, a repeated txn_id (in the same batch or
    not) gets its original and takes nothing."""
    async with node(tmp_path, dsn, "a", "--send-rate", "0.01", "--send-burst", "5") as a, \
            node(tmp_path, dsn, "b", "--send-rate", "0.01", "--send-burst", "5") as b:
        room_id, [(token, _), (other, _)] = await people_in_room([a.port, b.port], ["alice", "bobby"])
        async with connect(a.port, token) as ws:
            for i in range(20):  # t0..t9, then each again
                await ws.send({"type": "send", "room_id": room_id, "text": f"m{i % 10}",
                               "txn_id": f"t{i % 10}", "ref": i})
            answers = [await ws.recv() for _ in range(20)]
        c = HTTPClient(a.port)
        metrics = await scrape(c)
        await c.aclose()
        batches = value(metrics, "chat_trio_group_commit_batch_size_count")
        assert value(metrics, "chat_trio_group_commit_batch_size_bucket", le="1.0") < batches  # some in bulk
        acked = [f["ref"] for f in answers if f["type"] == "ack"]
        assert acked == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14], answers  # a repeat gets its original
        assert len({f["message"]["id"] for f in answers if f["type"] == "ack"}) == 5
        assert {f["code"] for f in answers if f["type"] == "error"} == {"rate_limited"}
        c = HTTPClient(b.port, token)
        again = await send(c, token, room_id, "m", f"t{acked[0]}")  # a retry, on the other node
        assert again.status == 200 and again.json["message"]["txn_id"] == f"t{acked[0]}"
        assert (await send(c, other, room_id, "bob")).status == 201  # the bucket is alice's
        await c.aclose()
        assert_dense_in_db(dsn)


async def test_sends_queued_behind_a_kick_in_one_batch_are_refused(tmp_path: Path, dsn: str) -> None:
    """The bulk append checks membership after the batch's earlier writes, as insert_message
    does one by one: bob's sends queued behind his kick are refused (403) and take no seq; the
    owner's, in the same batch, are appended after the kick entry."""
    with trio.fail_after(20):
        async with running_store(tmp_path, database=dsn) as (store, _):
            commands, owner, bob, room_id, kick = await queue_a_kick(store)
            sends = [await commands.submit_message(who["id"], room_id, f"m{n}", f"t{n}")
                     for n, who in enumerate((bob, owner, bob, owner))]
            await kick.result()
            outcomes = []
            for sent in sends:
                try:
                    outcomes.append((await sent())[0]["seq"])
                except APIError as exc:
                    outcomes.append(exc.status)
            assert outcomes == [403, 3, 403, 4]  # 1: bob's join, 2: his kick
            assert query(dsn, "SELECT max(seq), count(*) FROM messages") == [(4, 4)]


def deadlocks() -> int:
    """Deadlocks PostgreSQL has detected in the test database so far (its statistics: a backend
    reports them when it next flushes, at the latest when it exits)."""
    [(count,)] = query(require_pg(),
                       "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
    return int(count)


async def test_cross_room_writes_from_two_nodes_never_deadlock(tmp_path: Path, dsn: str) -> None:
    """Every write takes its rooms' locks first, in room id order, as a batch of messages does:
    members joining, writing and leaving rooms in random order on both nodes at once (so batches
    mix room events and messages of several rooms) all succeed, and PostgreSQL detects no deadlock
    (one would cost a second and a retry of its batch one write per transaction)."""
    before = deadlocks()
    async with node(tmp_path, dsn, "a") as a, node(tmp_path, dsn, "b") as b:
        ports = [a.port, b.port]
        c = HTTPClient(a.port)
        owner, _ = await register_and_login(c, "owner")
        rooms = [int((await make_room(c, owner, f"r{n}"))["id"]) for n in range(4)]
        movers = [(await register_and_login(c, f"mover{n}"))[0] for n in range(12)]
        await c.aclose()
        statuses: list[int] = []

        async def mover(n: int, token: str) -> None:
            c = HTTPClient(ports[n % 2], token)
            order = random.Random(n)
            for round_ in range(4):
                for room_id in order.sample(rooms, len(rooms)):
                    statuses.append((await c.post(f"/rooms/{room_id}/join")).status)
                    sent = await send(c, token, room_id, f"{n}.{round_}")
                    statuses.append(sent.status)
                    read = await c.put(f"/rooms/{room_id}/read", {"seq": sent.json["message"]["seq"]})
                    statuses.append(read.status)
                    if order.random() < 0.5:
                        statuses.append((await c.post(f"/rooms/{room_id}/leave")).status)
            await c.aclose()

        async def topics(n: int) -> None:
            c = HTTPClient(ports[n % 2], owner)
            for i in range(12):
                room_id = rooms[(i * 3 + n) % len(rooms)]
                statuses.append((await c.patch(f"/rooms/{room_id}", {"topic": f"{n}.{i}"})).status)
            await c.aclose()

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for n, token in enumerate(movers):
                    nursery.start_soon(mover, n, token)
                for n in range(2):
                    nursery.start_soon(topics, n)
        assert set(statuses) <= {200, 201, 204}, sorted(set(statuses))
        assert not [line for n in (a, b) for line in n.log().splitlines() if "rolled back" in line]
        c = HTTPClient(b.port)  # closing an account finds its rooms (written in, joined) in the database
        erased = await c.request("DELETE", "/me", {"password": PASSWORD, "erase": True}, token=movers[0])
        assert erased.status == 204, erased.body
        await c.aclose()
        assert query(dsn, "SELECT count(*) FROM messages WHERE kind = 'erase'") == [(len(rooms),)]
    assert_dense_in_db(dsn)
    with trio.move_on_after(3):  # the nodes' connections report their statistics as they end
        while deadlocks() == before:
            await trio.sleep(0.2)
    assert deadlocks() == before


async def test_logins_and_limited_writes_from_two_nodes_never_deadlock(tmp_path: Path, dsn: str) -> None:
    """The rows of the shared limits (an address's login attempts, a username's backoff and
    failures, a user's successes, send, invite and registration limits) are locked by each batch
    first, in key order, with its rooms: wrong and right passwords for the same users and limited
    writes racing on both nodes never deadlock (each would stall both nodes' writes for a second)."""
    limits = ("--login-rate", "100000", "--login-burst", "100000", "--login-fail-limit", "1000000",
              "--login-fail-address-limit", "1000000", "--login-backoff-after", "1000000",
              "--login-user-limit", "1000000", "--send-rate", "1000", "--send-burst", "1000",
              "--invite-rate", "1000", "--invite-burst", "1000", "--register-limit", "1000000")
    before = deadlocks()
    async with node(tmp_path, dsn, "a", *limits) as a, node(tmp_path, dsn, "b", *limits) as b:
        ports = [a.port, b.port]
        c = HTTPClient(a.port)
        victims = [(await register_and_login(c, f"vic{n}"))[0] for n in range(2)]
        room_id = int((await make_room(c, victims[0], "lobby"))["id"])
        assert (await c.post(f"/rooms/{room_id}/join", token=victims[1])).status == 200
        await c.aclose()
        statuses: list[int] = []
        slowest = 0.0

        async def timed(reply: Awaitable[Any]) -> None:
            nonlocal slowest
            start = trio.current_time()
            statuses.append((await reply).status)
            slowest = max(slowest, trio.current_time() - start)

        async def guesser(n: int) -> None:
            c = HTTPClient(ports[n % 2])
            with trio.move_on_after(4):
                while True:
                    password = PASSWORD if n % 5 == 0 else "wrong password"
                    await timed(c.post("/login", {"username": f"vic{n % 3 % 2}", "password": password}))
            await c.aclose()

        async def writer(n: int) -> None:
            c = HTTPClient(ports[n % 2], victims[n % 2])
            with trio.move_on_after(4):
                for i in itertools.count():
                    await timed(send(c, victims[n % 2], room_id, f"{n}.{i}"))
                    await timed(c.post("/register", {"username": f"new{n}x{i}", "password": PASSWORD}))
            await c.aclose()

        async with trio.open_nursery() as nursery:
            for n in range(12):
                nursery.start_soon(guesser, n)
            for n in range(4):
                nursery.start_soon(writer, n)
        assert set(statuses) <= {200, 201, 401}, sorted(set(statuses))
        assert not [line for n in (a, b) for line in n.log().splitlines() if "rolled back" in line]
        assert slowest < 0.9, slowest
    with trio.move_on_after(3):  # the nodes' connections report their statistics as they end
        while deadlocks() == before:
            await trio.sleep(0.2)
    assert deadlocks() == before


async def test_a_users_successful_logins_are_limited_exactly_across_nodes(tmp_path: Path, dsn: str) -> None:
    """A user's successes in the window are counted under a lock of the user's row: correct
    passwords racing on two nodes get no more than --login-user-limit tokens between them."""
    limits = ("--login-user-limit", "3", "--login-rate", "1000", "--login-burst", "1000")
    async with node(tmp_path, dsn, "a", *limits) as a, node(tmp_path, dsn, "b", *limits) as b:
        c = HTTPClient(a.port)
        await register(c, "alice")
        await c.aclose()

        async def one(port: int, statuses: list[int]) -> None:
            c = HTTPClient(port)
            statuses.append((await c.post("/login", {"username": "alice", "password": PASSWORD})).status)
            await c.aclose()

        for round_ in range(3):
            query(dsn, "DELETE FROM limit_events")
            statuses: list[int] = []
            async with trio.open_nursery() as nursery:
                for n in range(16):
                    nursery.start_soon(one, (a.port, b.port)[n % 2], statuses)
            assert sorted(statuses) == [200] * 3 + [429] * 13, (round_, sorted(statuses))


async def test_a_batch_chosen_as_deadlock_victim_while_locking_is_retried(tmp_path: Path, dsn: str) -> None:
    """A database error while a batch takes its locks (here PostgreSQL picks it as the victim of a
    deadlock with another client) rolls it back and retries its writes one per transaction, as an
    error in a write does, instead of refusing them all (503)."""
    import psycopg

    async with node(tmp_path, dsn, "a", quiet=False) as a:
        c = HTTPClient(a.port)
        owner, _ = await register_and_login(c, "owner")
        rooms = [int((await make_room(c, owner, f"r{n}"))["id"]) for n in range(2)]
        leaver, _ = await register_and_login(c, "leaver")
        for room_id in rooms:
            assert (await c.post(f"/rooms/{room_id}/join", token=leaver)).status == 200
        other = await trio.to_thread.run_sync(partial(psycopg.connect, dsn))
        try:
            lock = "SELECT id FROM rooms WHERE id = %s FOR UPDATE"
            await trio.to_thread.run_sync(other.execute, lock, (rooms[1],))
            async with trio.open_nursery() as nursery:
                closed: list[int] = []

                async def close() -> None:  # locks both rooms: takes the first, waits for the second
                    reply = await c.request("DELETE", "/me", {"password": PASSWORD}, token=leaver)
                    closed.append(reply.status)

                nursery.start_soon(close)
                with trio.fail_after(10):
                    while query(dsn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                " AND datname = current_database()") == [(0,)]:
                        await trio.sleep(0.05)
                # The first room now closes the cycle; the node's transaction, waiting longer, is the victim.
                await trio.to_thread.run_sync(other.execute, lock, (rooms[0],))
                await trio.to_thread.run_sync(other.commit)
            assert closed == [204]
            assert "rolled back (deadlock detected" in a.log()
        finally:
            other.close()
        await c.aclose()


async def test_an_address_over_its_attempts_costs_no_transaction(tmp_path: Path, dsn: str) -> None:
    """The node's own attempt bucket per address refuses first (what it refuses the database would
    too): a login flood from one address is answered 429 without taking the writer's time."""
    async with node(tmp_path, dsn, "a", "--login-rate", "0.001", "--login-burst", "3") as a:
        c = HTTPClient(a.port)
        await register(c, "alice")
        statuses = [(await c.post("/login", {"username": "alice", "password": "wrong password"})).status
                    for _ in range(3)]
        commits = value(await scrape(c), "chat_trio_store_commits_total")
        statuses += [(await c.post("/login", {"username": "alice", "password": "wrong password"})).status
                     for _ in range(5)]
        assert statuses == [401] * 3 + [429] * 5
        assert commits > 0 and value(await scrape(c), "chat_trio_store_commits_total") == commits
        await c.aclose()


async def test_a_resync_closes_the_sockets_of_tokens_revoked_meanwhile(tmp_path: Path, dsn: str) -> None:
    """A revocation whose notification a node missed (its listener was reconnecting) still
    reaches that node's websockets: the resync checks the tokens it has cached against the
    database and feeds the missing ones on as revoked (the hub closes their sockets, 4001)."""
    with trio.fail_after(20):
        async with running_store(tmp_path, database=dsn) as (store, commits):
            assert store.node is not None
            commands = LocalCommands(store.config, store)
            user = await commands.create_user("alice", "hash")
            kept, gone = digest("kept-token"), digest("gone-token")
            for token in (kept, gone):
                await commands.create_token(token, user["id"])
                assert await store.token_user(token) == user
            query(dsn, "DELETE FROM tokens WHERE hash = %s", gone)  # committed elsewhere, not heard of
            await store.node.ordered.resync()
            revoked = [c.digests for commit in commits for c in commit.changes
                       if isinstance(c, TokensRevoked)]
            assert revoked[-1] == (gone,)
            assert await store.token_user(gone) is None and await store.token_user(kept) == user


async def test_failed_logins_count_on_every_node(tmp_path: Path, dsn: str) -> None:
    """Failed logins are rows in the database (store/loginlimits.py), decided there like the
    limits above: guesses alternating between nodes add up, at once."""
    limits = ("--login-fail-limit", "3")
    async with node(tmp_path, dsn, "a", *limits) as a, node(tmp_path, dsn, "b", *limits) as b:
        clients = [HTTPClient(a.port), HTTPClient(b.port)]
        await register(clients[0], "alice")
        for n in range(3):
            reply = await clients[n % 2].post("/login", {"username": "alice", "password": "wrong password"})
            assert reply.status == 401, reply.body
        for c in clients:
            reply = await c.post("/login", {"username": "alice", "password": PASSWORD})
            assert reply.status == 429, reply.body
            await c.aclose()


async def test_a_node_started_after_the_guesses_refuses_too(tmp_path: Path, dsn: str) -> None:
    """A guesser gets no fresh allowance from a node started (or restarted) after its guesses:
    the pair limit, the username's backoff and the address's attempt bucket outlive the node that
    counted them; a success clears them and the owner's address is remembered by every node."""
    limits = ("--login-fail-limit", "3", "--login-backoff-after", "4", "--login-fail-address-limit", "0")
    async with node(tmp_path, dsn, "a", *limits) as a:
        c = HTTPClient(a.port)
        await register(c, "alice")
        for _ in range(3):
            assert (await c.post("/login", {"username": "alice", "password": "wrong password"})).status == 401
        assert (await c.post("/login", {"username": "alice", "password": PASSWORD})).status == 429
        await c.aclose()
    async with node(tmp_path, dsn, "b", *limits) as b:
        c = HTTPClient(b.port)
        reply = await c.post("/login", {"username": "alice", "password": PASSWORD})
        assert reply.status == 429 and reply.json["error"]["retry_after_ms"] > 250_000, reply.body
        assert query(dsn, "SELECT tokens FROM limits WHERE key = 'login-backoff:alice'") == [(3,)]
        query(dsn, "DELETE FROM limit_events")  # the window passed: the username's backoff remains,
        query(dsn, "UPDATE limits SET tokens = 5, at = (extract(epoch FROM now()) * 1000)::bigint"
              " WHERE key = 'login-backoff:alice'")  # one failure past it: locked for a second
        reply = await c.post("/login", {"username": "alice", "password": PASSWORD})
        assert reply.status == 429 and 0 < reply.json["error"]["retry_after_ms"] <= 1000, reply.body
        query(dsn, "DELETE FROM limits WHERE key = 'login-backoff:alice'")
        assert (await c.post("/login", {"username": "alice", "password": PASSWORD})).status == 200
        assert query(dsn, "SELECT username, address FROM login_addresses") == [("alice", "127.0.0.1")]
        await c.aclose()


async def test_logout_on_one_node_closes_the_socket_on_the_other_4001(tmp_path: Path, dsn: str) -> None:
    async with node(tmp_path, dsn, "a") as a, node(tmp_path, dsn, "b") as b:
        _, [(token, _)] = await people_in_room([a.port, b.port], ["alice"])
        async with connect(b.port, token) as ws:
            c = HTTPClient(a.port, token)
            assert (await c.post("/logout", token=token)).status == 204
            await c.aclose()
            code, _ = await ws.closed()
            assert code == 4001
        c = HTTPClient(b.port, token)
        assert (await c.get("/rooms", token=token)).status == 401
        await c.aclose()


# -- faults --------------------------------------------------------------------------------------


class Load:
    """Senders that spread their sends over the nodes and retry one whose fate is unknown (a node
    killed, PostgreSQL down: 503) with its txn_id, and a websocket reader that resumes after its
    last seq on whichever node answers."""

    def __init__(self, ports: list[int], token: str, room_id: int) -> None:
        self.ports, self.token, self.room_id = ports, token, room_id
        self.acked: dict[str, JSON] = {}
        self.seen: list[JSON] = []
        self.refused = 0  # 503s while PostgreSQL was down
        self.reconnects = 0

    async def sender(self, n: int, count: int) -> None:
        for i in range(count):
            txn = f"s{n}-{i}"
            attempt = 0
            with trio.fail_after(30):
                while True:
                    c = HTTPClient(self.ports[(i + attempt) % len(self.ports)], self.token)
                    attempt += 1
                    try:
                        reply = await send(c, self.token, self.room_id, f"sender {n} message {i}", txn)
                    except GONE:
                        await trio.sleep(0.05)
                        continue
                    finally:
                        await c.aclose()
                    if reply.status == 503:
                        self.refused += 1
                        await trio.sleep(0.05)
                        continue
                    break
            assert reply.status in (200, 201), reply.body
            self.acked[txn] = reply.json["message"]

    def last_acked(self) -> int:
        return max(int(m["seq"]) for m in self.acked.values())

    async def reader(self, port: int, until: trio.Event) -> None:
        """Reads every message from a socket on `port`, reconnecting (to either node) and
        resuming after its last seq when that socket dies, until `until` is set and it has seen
        the last acknowledged message."""
        while True:
            try:
                async with connect(port, self.token) as ws:
                    await ws.subscribe(self.room_id, after=self.seen[-1]["seq"] if self.seen else 0)
                    while not (until.is_set() and self.seen and self.seen[-1]["seq"] >= self.last_acked()):
                        with trio.move_on_after(1.0):
                            self.seen.append((await ws.expect("message"))["message"])
                    return
            except* GONE:
                pass
            self.reconnects += 1
            port = self.ports[self.reconnects % len(self.ports)]
            await trio.sleep(0.05)

    async def run(self, reader_port: int, senders: int, count: int, fault: Callable[[], Awaitable[None]],
                  within: float) -> None:
        """The reader on `reader_port` and `senders` senders of `count` messages each; `fault()`
        once 40 sends are acknowledged (mid-load); returns once the room is quiet again."""
        done = trio.Event()
        with trio.fail_after(within):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.reader, reader_port, done)
                async with trio.open_nursery() as sending:
                    for n in range(senders):
                        sending.start_soon(self.sender, n, count)
                    while len(self.acked) < 40:
                        await trio.sleep(0.01)
                    await fault()
                done.set()

    async def check(self, port: int, senders: int, count: int) -> None:
        """Every acknowledged message is stored once, as acknowledged, and the reader saw each
        seq once in order; node `port` (not the reader's, maybe) has caught up (a node's view
        lags the others' writes by a notification, or by its resync after a reconnect)."""
        c = HTTPClient(port, self.token)
        with trio.fail_after(10):
            while (await c.get(f"/rooms/{self.room_id}", token=self.token)).json["room"]["last_seq"] \
                    < self.last_acked():
                await trio.sleep(0.05)
        stored = await all_messages(c, self.token, self.room_id)
        await c.aclose()
        assert_dense(stored, len(stored))
        by_txn = {m["txn_id"]: m for m in stored}
        assert len(self.acked) == senders * count and len(by_txn) == len(stored) == len(self.acked)
        for txn, message in self.acked.items():
            assert by_txn[txn] == message
        assert [m["seq"] for m in self.seen] == list(range(1, len(stored) + 1))


async def test_killed_node_restarts_and_nothing_acknowledged_is_lost(tmp_path: Path, dsn: str) -> None:
    async with node(tmp_path, dsn, "a") as a:
        b = ServerProcess(tmp_path, "--database", dsn, *OPEN, "--send-rate", "0", db=tmp_path / "b.db",
                          log_name="b.log")
        try:
            await b.start()
            room_id, [(token, _)] = await people_in_room([a.port, b.port], ["alice"])
            load = Load([a.port, b.port], token, room_id)

            async def kill_and_restart_b() -> None:
                nonlocal b
                os.kill(b.proc.pid, signal.SIGKILL)
                b.kill()
                b = ServerProcess(tmp_path, "--database", dsn, *OPEN, "--send-rate", "0", "--port",
                                  str(load.ports[1]), db=tmp_path / "b.db", log_name="b2.log")
                await b.start()

            await load.run(b.port, 4, 50, kill_and_restart_b, within=45)
            assert load.reconnects >= 1  # the reader's socket was on the killed node
            await load.check(b.port, 4, 50)
        finally:
            b.stop()
        assert_dense_in_db(dsn)


def pg_ctl(action: str) -> None:
    """`pg_ctl restart`, `stop` or `start` of the test cluster (scripts/pg-cluster.sh exports
    where it is)."""
    data, pg_bin = os.environ.get("PG_CLUSTER_DIR"), os.environ.get("PG_BIN")
    if not data or not pg_bin:
        message = f"needs the cluster of scripts/pg-cluster.sh (PG_CLUSTER_DIR, PG_BIN) to {action} it"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    starts = [] if action == "stop" else [  # as scripts/pg-cluster.sh starts it
        "-l", f"{data}/server.log",
        "-o", f"-c listen_addresses='' -k {data} -c fsync=on -c max_connections=300"]
    subprocess.run([*as_pg, f"{pg_bin}/pg_ctl", "-D", f"{data}/data", "-m", "fast", "-w", action, *starts],
                   check=True, stdout=subprocess.DEVNULL, timeout=30)


def restart_postgres() -> None:
    pg_ctl("restart")


async def test_postgres_restart_under_load_503_then_resync(tmp_path: Path, dsn: str) -> None:
    require_pg()
    async with node(tmp_path, dsn, "a", quiet=False) as a, node(tmp_path, dsn, "b", quiet=False) as b:
        room_id, [(token, _)] = await people_in_room([a.port, b.port], ["alice"])
        load = Load([a.port, b.port], token, room_id)
        await load.run(b.port, 3, 60, partial(trio.to_thread.run_sync, restart_postgres), within=50)
        await load.check(a.port, 3, 60)
        assert load.refused >= 1  # writes were refused (503) while it was down
        c = HTTPClient(b.port)
        with trio.fail_after(5):  # its own commits may have shown it the gaps before it listened again
            while value(metrics := await scrape(c), "chat_trio_pg_listener_connected") != 1:
                await trio.sleep(0.1)
        await c.aclose()
        assert value(metrics, "chat_trio_pg_listener_reconnects_total") >= 1
        for server in (a, b):
            assert "reconnecting" in server.log()
    assert_dense_in_db(dsn)


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "workers2"])
async def test_healthz_is_503_while_postgres_is_unreachable(tmp_path: Path, dsn: str, workers: int) -> None:
    """A load balancer must stop sending traffic to a node that would refuse every write: while
    PostgreSQL is down, /healthz answers 503 `unavailable` on the node (on each worker of a
    `--workers` node), judged from the node's listening connection; 200 again once it is back."""
    require_pg()
    async with node(tmp_path, dsn, "a", *workers_args(workers), quiet=False) as a:
        await wait_workers_ready(a.port, workers)
        try:
            await trio.to_thread.run_sync(pg_ctl, "stop")
            refused = await wait_workers_ready(a.port, workers, timeout=5, status=503)
        finally:
            await trio.to_thread.run_sync(pg_ctl, "start")
        for reply in refused.values():
            assert "database is unreachable" in assert_error(reply, 503, "unavailable")["message"]
        await wait_workers_ready(a.port, workers, timeout=10)


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "workers2"])
async def test_presence_and_typing_cross_nodes_and_a_dead_nodes_users_go_offline(
        tmp_path: Path, dsn: str, workers: int) -> None:
    """Node A may be a `--workers 2` node: its supervisor counts the other nodes as one more
    worker."""
    heartbeat = 0.4
    async with node(tmp_path, dsn, "a", "--node-heartbeat", str(heartbeat), *workers_args(workers)) as a:
        await wait_workers_ready(a.port, workers)
        b = ServerProcess(tmp_path, "--database", dsn, *OPEN, "--node-heartbeat", str(heartbeat),
                          db=tmp_path / "b.db", log_name="b.log")
        try:
            await b.start()
            room_id, [(ta, _), (tb, bob)] = await people_in_room([a.port, b.port], ["alice", "bobby"])
            c = HTTPClient(a.port, ta)

            async def bob_online_on_a() -> bool:
                reply = await c.get(f"/rooms/{room_id}/members", token=ta)
                assert reply.status == 200, reply.body
                return bool({m["user"]["id"]: m["online"] for m in reply.json["members"]}[bob["id"]])

            async def until(expected: bool, within: float = 5.0) -> None:
                with trio.fail_after(within):
                    while await bob_online_on_a() is not expected:
                        await trio.sleep(0.02)

            assert await bob_online_on_a() is False
            async with connect(a.port, ta) as on_a:
                await on_a.subscribe(room_id)
                async with connect(b.port, tb) as on_b:
                    await until(True, within=heartbeat)  # announced at once, not at a heartbeat
                    await on_b.subscribe(room_id)
                    await on_b.send({"type": "typing", "room_id": room_id})
                    assert await on_a.recv() == {"type": "typing", "room_id": room_id,
                                                 "user": {"id": bob["id"], "username": "bobby"}}
                await until(False, within=heartbeat)
                async with connect(b.port, tb):
                    await until(True)
                    b.kill()  # SIGKILL: node B never says goodbye
                    started = trio.current_time()
                    await until(False, within=4 * heartbeat)
                    assert trio.current_time() - started >= heartbeat  # it took its heartbeats
            await c.aclose()
        finally:
            b.stop()
