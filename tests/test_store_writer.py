"""The group-commit writer on a real sqlite file, at the edges the HTTP tests cannot reach."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import trio

from chat_trio.store.sqlite import connect
from chat_trio.store.writer import GroupCommitWriter, StoreClosed


def _insert(value: int) -> object:
    def run(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t VALUES (?)", (value,))
        return value

    return run


async def test_waiting_writes_share_one_transaction_and_failures_stay_isolated(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "w.db"))
    conn.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)")
    writer = GroupCommitWriter(conn, max_batch=64, queue_size=64)
    gate = threading.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            first = await writer.submit(lambda c: gate.wait(10))
            await trio.sleep(0.05)  # the writer's thread is busy with `first`: the rest queue up
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


async def test_a_stopped_writer_refuses_queued_and_new_writes(tmp_path: Path) -> None:
    """Callers wait for commits shielded from cancellation; if the writer stops with writes
    still queued, they must be told (StoreClosed), not left waiting forever."""
    conn = connect(str(tmp_path / "w.db"))
    conn.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)")
    writer = GroupCommitWriter(conn, max_batch=1, queue_size=16)
    gate = threading.Event()

    def blocked(c: sqlite3.Connection) -> int:
        gate.wait(10)
        return 0

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            first = await writer.submit(blocked)
            await trio.sleep(0.05)  # the writer's thread is now inside `blocked`
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
