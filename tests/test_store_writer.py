"""The group-commit writer on a real sqlite file, at the edges the HTTP tests cannot reach, and
what the server answers when a commit fails."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
import trio

from chat_trio.store.sqlite import connect, sqlite3
from chat_trio.store.writer import GroupCommitWriter, Pending, StoreClosed
from tests.client import HTTPClient
from tests.helpers import (
    assert_error,
    make_config,
    make_room,
    operator,
    register_and_login,
    send,
    serve,
    store_of,
)
from tests.test_openapi import Checker, served
from tests.ws_client import connect as ws_connect


def _insert(value: int) -> Callable[[sqlite3.Connection], int]:
    def run(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t VALUES (?)", (value,))
        return value

    return run


def lose_connection(conn: sqlite3.Connection) -> None:
    """A write that closes the writer's connection: what a closed or broken connection does to
    everything after it in the batch, down to the ROLLBACK, which fails too and stops the writer."""
    conn.close()


def open_writer(
    tmp_path: Path, *, max_batch: int, queue_size: int
) -> tuple[sqlite3.Connection, GroupCommitWriter]:
    """A writer on a fresh file with one table `t`; also its connection, to look at the result."""
    conn = connect(str(tmp_path / "w.db"))
    conn.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)")
    return conn, GroupCommitWriter(conn, max_batch=max_batch, queue_size=queue_size)


async def test_waiting_writes_share_one_transaction_and_failures_stay_isolated(tmp_path: Path) -> None:
    conn, writer = open_writer(tmp_path, max_batch=64, queue_size=64)
    gate, entered = threading.Event(), threading.Event()

    def busy(c: sqlite3.Connection) -> bool:
        entered.set()
        return gate.wait(10)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            first = await writer.submit(busy)
            await in_thread(entered)  # the writer's thread is busy with `first`: the rest queue up
            pending = [await writer.submit(_insert(v)) for v in (1, 2, 1, 3)]  # the second 1 fails
            gate.set()
            await first.result()
            results: list[object] = []
            for item in pending:
                try:
                    results.append(await item.result())
                except sqlite3.IntegrityError:
                    results.append("conflict")
            nursery.cancel_scope.cancel()
    assert results == [1, 2, "conflict", 3]
    assert [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")] == [1, 2, 3]
    assert (writer.commits, writer.writes) == (2, 5)  # the four waiting writes: one transaction


async def in_thread(entered: threading.Event) -> None:
    """Wait until the writer's thread has entered a write that sets `entered`."""
    assert await trio.to_thread.run_sync(entered.wait, 10)


async def release_after(gate: threading.Event, seconds: float) -> None:
    await trio.sleep(seconds)
    gate.set()


async def test_a_cancelled_caller_still_gets_the_answer_of_its_write(tmp_path: Path) -> None:
    """Waiting for a commit is uncancellable: a request whose deadline passes meanwhile still
    learns what became of the write it handed over; the cancellation arrives right after."""
    conn, writer = open_writer(tmp_path, max_batch=64, queue_size=64)
    gate = threading.Event()

    def slow_insert(c: sqlite3.Connection) -> int:
        gate.wait(10)
        return _insert(7)(c)

    got: list[int] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            item = await writer.submit(slow_insert)
            nursery.start_soon(release_after, gate, 0.05)
            with trio.CancelScope() as scope:
                scope.cancel()  # cancelled before and all through the wait
                got.append(await item.result())
                await trio.lowlevel.checkpoint()  # the cancellation is delivered here
                got.append(-1)  # never reached
            nursery.cancel_scope.cancel()
    assert scope.cancelled_caught
    assert got == [7]
    assert [r[0] for r in conn.execute("SELECT v FROM t")] == [7]


async def test_a_stopped_writer_refuses_queued_and_new_writes(tmp_path: Path) -> None:
    """Callers wait for commits shielded from cancellation; if the writer stops with writes
    still queued, they must be told (StoreClosed), not left waiting forever."""
    conn, writer = open_writer(tmp_path, max_batch=1, queue_size=16)
    gate = threading.Event()

    entered = threading.Event()

    def blocked(c: sqlite3.Connection) -> int:
        entered.set()
        gate.wait(10)
        return 0

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            first = await writer.submit(blocked)
            await in_thread(entered)  # the writer's thread is now inside `blocked`
            queued = [await writer.submit(_insert(v)) for v in (1, 2)]
            nursery.cancel_scope.cancel()  # the app stops while the first batch commits
            gate.set()
        assert await first.result() == 0  # the batch in progress still committed
        for item in queued:
            with pytest.raises(StoreClosed):
                await item.result()
        with pytest.raises(StoreClosed):
            await writer.submit(_insert(3))
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


async def test_a_failure_outside_any_write_refuses_its_batch_and_stops_the_writer(tmp_path: Path) -> None:
    """If the transaction cannot even be rolled back (here the connection is gone mid-batch), the
    writer cannot know what its connection holds: it refuses the batch it had taken and every
    later write with StoreClosed and returns, instead of leaving those callers (uncancellable)
    and shutdown waiting forever."""
    _, writer = open_writer(tmp_path, max_batch=64, queue_size=64)
    with trio.fail_after(10):
        # Queued before the writer starts, so the three are one batch.
        pending: list[Pending[object]] = [
            await writer.submit(_insert(1)), await writer.submit(lose_connection),
            await writer.submit(_insert(2))]
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            while not all(item.finished for item in pending):
                await trio.sleep(0.01)
        # The nursery closed by itself: the writer returned, nothing had to cancel it.
        for item in pending:
            with pytest.raises(StoreClosed):
                await item.result()
        with pytest.raises(StoreClosed):
            await writer.submit(_insert(3))
    with closing(connect(str(tmp_path / "w.db"))) as fresh:
        assert fresh.execute("SELECT count(*) FROM t").fetchone()[0] == 0


async def test_a_failed_transaction_is_503_over_rest_and_unavailable_on_the_websocket(tmp_path: Path) -> None:
    """A commit that fails as a whole (a trigger rolls the transaction back, as a full disk or an
    I/O error would) refuses its writes with 503 `unavailable` and Retry-After, or an `error`
    frame `unavailable` for a websocket `send`, without any internals; the server keeps going."""
    config = make_config(tmp_path)
    with trio.fail_after(30):
        async with serve(config) as app:
            client = HTTPClient(app.port)
            token, _ = await register_and_login(client, "wendy")
            room_id = (await make_room(client, token, "general"))["id"]
            with closing(sqlite3.connect(config.db)) as db:
                db.execute("CREATE TRIGGER fail_commit BEFORE INSERT ON messages WHEN NEW.text = 'boom'"
                           " BEGIN SELECT RAISE(ROLLBACK, 'disk on fire'); END")
                db.commit()
            reply = await send(client, token, room_id, "boom")
            assert_error(reply, 503, "unavailable")
            assert reply.headers[b"retry-after"] == b"1"
            assert b"disk on fire" not in reply.body and b"sqlite" not in reply.body.lower()
            async with ws_connect(app.port, token) as ws:
                error = await ws.request({"type": "send", "room_id": room_id, "text": "boom", "ref": "r1"},
                                         "error")
                assert (error["code"], error["ref"]) == ("unavailable", "r1")
                assert "disk on fire" not in error["message"]
                ack = await ws.request({"type": "send", "room_id": room_id, "text": "fine", "ref": "r2"},
                                       "ack")
                assert ack["message"]["seq"] == 1
            assert (await send(client, token, room_id, "still fine")).status == 201
            await client.aclose()


async def test_healthz_is_503_once_the_writer_has_stopped(tmp_path: Path) -> None:
    """A load balancer must stop sending traffic to a server that refuses every write: once a
    failure outside any write has stopped the writer, GET /healthz (on the port and on the admin
    socket) answers 503 `unavailable` saying why, as the OpenAPI document describes; reads go on."""
    config = make_config(tmp_path)
    with trio.fail_after(30):
        async with serve(config) as app:
            client = HTTPClient(app.port)
            token, _ = await register_and_login(client, "wendy")
            check = Checker(await served(client), client)
            await check("GET", "/healthz", 200)
            with pytest.raises(StoreClosed):
                await store_of(app).writer.write(lose_connection)
            reply = await check("GET", "/healthz", 503)
            error = assert_error(reply, 503, "unavailable")
            assert "writer has stopped" in error["message"]
            assert reply.headers[b"retry-after"] == b"1"
            local = operator(config)
            assert_error(await local.get("/healthz"), 503, "unavailable")
            await local.aclose()
            assert (await client.get("/me", token=token)).status == 200
            assert_error(await client.post("/rooms", {"name": "later"}, token=token), 503, "unavailable")
            await client.aclose()
