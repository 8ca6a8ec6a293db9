"""The group-commit writer: one connection, one task, many writes per transaction and fsync.

Callers hand a write (a function of the connection) to `write()`. The writer task takes every
write that is waiting (up to `max_batch`), runs them all in one worker-thread hop inside one
`BEGIN IMMEDIATE … COMMIT`, each under its own SAVEPOINT so one failing write does not undo the
others, then wakes the callers. With N concurrent writers there is one fsync per batch instead
of N, and one thread handoff instead of N.

Each write may carry an `after_commit` callback. The writer runs those on the event loop in
commit order, before waking anyone, so caches and live subscribers see changes in the order
(and only once) they became durable.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio

from chat_trio.metrics import BATCH_BUCKETS, Histogram

log = logging.getLogger("chat_trio.store")
T = TypeVar("T")


@dataclass(slots=True, eq=False)
class _Write(Generic[T]):
    run: Callable[[sqlite3.Connection], T]
    after_commit: Callable[[T], None] | None
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


class GroupCommitWriter:
    def __init__(self, conn: sqlite3.Connection, *, max_batch: int, queue_size: int) -> None:
        self._conn = conn
        self._max_batch = max_batch
        self._send, self._receive = trio.open_memory_channel[_Write[Any]](queue_size)
        self.thread = trio.CapacityLimiter(1)
        # Figures for /metrics.
        self.commits = 0
        self.writes = 0
        self.batch_sizes = Histogram("chat_trio_group_commit_batch_size",
                                     "writes committed per transaction", BATCH_BUCKETS)

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    async def write(
        self,
        run: Callable[[sqlite3.Connection], T],
        after_commit: Callable[[T], None] | None = None,
    ) -> T:
        """Run `run(conn)` in the next transaction; return once it has COMMITted.

        If the caller is cancelled after handing the write over, the write still commits."""
        item: _Write[T] = _Write(run, after_commit)
        await self._send.send(item)
        with trio.CancelScope(shield=True):
            await item.done.wait()
        if item.error is not None:
            raise item.error
        result: T = item.result
        return result

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for first in self._receive:
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            committed = await trio.to_thread.run_sync(self._commit, batch, limiter=self.thread)
            self.commits += committed
            self.writes += len(batch)
            self.batch_sizes.observe(len(batch))
            for item in batch:
                if item.error is None and item.after_commit is not None:
                    try:
                        item.after_commit(item.result)
                    except Exception:
                        log.exception("after-commit hook failed")
                item.done.set()

    def _commit(self, batch: list[_Write[Any]]) -> int:
        """Worker thread: one transaction for the whole batch. Returns 1 if it committed."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                conn.execute("SAVEPOINT w")
                try:
                    item.result = item.run(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO w")
                    item.error = exc
                conn.execute("RELEASE w")
            conn.execute("COMMIT")
            return 1
        except sqlite3.Error as exc:
            log.exception("transaction failed; %d writes refused", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for item in batch:
                item.error = exc
            return 0
