"""The group-commit writer: one connection, one task, many writes per transaction and fsync.

Callers hand a write (a function of the connection) to `write()`. The writer task takes every
write that is waiting (up to `max_batch`), runs them all in one worker-thread hop inside one
`BEGIN IMMEDIATE … COMMIT`, each under its own SAVEPOINT so one failing write does not undo the
others, then wakes the callers. With N concurrent writers there is one fsync per batch instead
of N, and one thread handoff instead of N.

A write returns its result and the changes it made (store/changes.py); a failed write makes
none. After COMMIT the writer hands the batch's changes, in commit order, to `on_commit` (the
feed, store/feed.py) as one `Commit`, on the event loop and before waking anyone, so caches and
live subscribers see changes in the order (and only once) they became durable, and a caller
reads its own write as soon as it wakes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import trio

from chat_trio.errors import APIError
from chat_trio.metrics import BATCH_BUCKETS, Histogram
from chat_trio.store.changes import NO_CHANGES, Change, Changes, Commit, TextErased
from chat_trio.store.queries import Limits
from chat_trio.store.sqlite import BUSY_TIMEOUT_MS, sqlite3

log = logging.getLogger("chat_trio.store")
T = TypeVar("T")
ERASE_WAIT_MS = 100  # how long the checkpoint after an erasure waits for readers to finish
# The rooms whose rows a write changes (seqs, members, room events): their ids, or a function of
# the connection that finds them, for a write whose rooms only the database knows (closing an
# account). PostgreSQL locks every room of a batch first, in id order (pgwriter.py).
Rooms = tuple[int, ...] | Callable[[Any], Iterable[int]]
# The users whose rows a write updates, and the limit rows it locks (queries.Limits): PostgreSQL
# locks them after the rooms, in id and key order, so two nodes' batches lock in one order.
Users = tuple[int, ...]


class StoreClosed(APIError):
    """The write was refused: the writer has stopped, or its transaction failed as a whole (disk
    full, I/O error), so it is not known to be committed. Answered 503 `unavailable` (REST) or an
    `error` frame `unavailable` (websocket): the client may retry later."""

    def __init__(self, message: str = "the store is not accepting writes; retry later") -> None:
        super().__init__(503, "unavailable", message, headers=[(b"retry-after", b"1")])


@dataclass(slots=True, eq=False)
class Pending(Generic[T]):
    """A write handed to the writer; `await pending.result()` (from one task) once it has
    committed."""

    run: Callable[[Any], tuple[T, Changes]]
    rooms: Rooms = ()  # the rooms it changes (PostgreSQL locks them first, in id order)
    spec: Any = None  # the write as data, if a writer may run it in bulk (queries.NewMessage)
    limits: Limits = ()  # the limit rows it locks (PostgreSQL locks them first, in key order)
    users: Users = ()  # the users whose rows it updates (locked first too, in id order)
    value: Any = None
    error: BaseException | None = None
    finished: bool = False
    _waiter: trio.lowlevel.Task | None = None

    async def result(self) -> T:
        """The write's result once COMMITted. The wait cannot be cancelled: a caller cancelled
        meanwhile (a timeout, shutdown) still gets the answer of the write it handed over, and
        the cancellation reaches it at its next checkpoint. This is a shielded Event.wait() at
        a fraction of the cost, which matters on the per-message hot path."""
        if not self.finished:
            assert self._waiter is None, "one task awaits a write's result"
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        if self.error is not None:
            raise self.error
        value: T = self.value
        return value

    def finish(self) -> None:
        """Event loop: the write is decided (committed, or failed with `error`); wake its waiter."""
        self.finished = True
        if self._waiter is not None:
            trio.lowlevel.reschedule(self._waiter)
            self._waiter = None


def _unchanged(run: Callable[[Any], T]) -> Callable[[Any], tuple[T, Changes]]:
    return lambda conn: (run(conn), NO_CHANGES)


class GroupCommitWriter:
    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        max_batch: int,
        queue_size: int,
        on_commit: Callable[[Commit], None] | None = None,
    ) -> None:
        self._conn = conn
        self.on_commit = on_commit  # told of each transaction's changes, before anyone wakes
        self._max_batch = max_batch
        self._send, self._receive = trio.open_memory_channel[Pending[Any]](queue_size)
        self._taken: list[Pending[Any]] = []  # the batch being committed; `run` finishes what is left
        self.thread = trio.CapacityLimiter(1)
        self.stopped = False  # for good: every write is refused from then on (GET /healthz says so)
        self.on_stop: Callable[[], None] | None = None  # told once `stopped` is set
        # Figures for /metrics.
        self.commits = 0
        self.writes = 0
        self.batch_sizes = Histogram("chat_trio_group_commit_batch_size",
                                     "writes committed per transaction", BATCH_BUCKETS)

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    async def write(self, run: Callable[[Any], T], *, limits: Limits = (), users: Users = ()) -> T:
        """Run `run(conn)`, a write that changes nothing the caches hold, in the next
        transaction; return once it has COMMITted.

        If the caller is cancelled after handing the write over, the write still commits."""
        return await (await self.submit(run, limits=limits, users=users)).result()

    async def submit(self, run: Callable[[Any], T], *, limits: Limits = (), users: Users = ()) -> Pending[T]:
        """Queue a write that changes nothing the caches hold, without waiting for its commit."""
        return await self.submit_changes(_unchanged(run), limits=limits, users=users)

    async def change(self, run: Callable[[Any], tuple[T, Changes]], rooms: Rooms = (), *,
                     limits: Limits = (), users: Users = ()) -> T:
        """Run `run(conn)`, which returns (result, changes made), in the next transaction; return
        the result once it has COMMITted and its changes are applied. `rooms`: those it changes."""
        return await (await self.submit_changes(run, rooms, limits=limits, users=users)).result()

    async def submit_changes(
        self, run: Callable[[Any], tuple[T, Changes]], rooms: Rooms = (), spec: Any = None, *,
        limits: Limits = (), users: Users = (),
    ) -> Pending[T]:
        """Queue a write without waiting for its commit. Writes commit in the order they were
        submitted, so one caller can keep several in flight and still keep their order. `rooms`:
        the rooms whose rows the write changes (Rooms); `spec`: what `run` does, as data;
        `limits`, `users`: the limit rows it locks and the user rows it updates (Limits, Users)."""
        item: Pending[T] = Pending(run, rooms, spec, limits, users)
        try:
            try:
                self._send.send_nowait(item)  # the common case: no scheduler pass of its own
            except trio.WouldBlock:
                await self._send.send(item)  # the queue is full: wait for room (backpressure)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise StoreClosed("the store is shutting down") from None
        return item

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await self._commit_batches()
        except Exception:
            # Something failed outside any one write (a ROLLBACK that failed, a bug): the
            # connection's state is unknown, so stop writing; reads and websockets keep working.
            log.critical("the writer stopped; every write is refused from now on", exc_info=True)
        finally:
            self.stopped = True
            # Stopped (shutdown, or the failure above): refuse the batch it had taken, what is
            # still queued and whatever is submitted from now on, rather than leave a caller
            # (or shutdown) waiting forever in an uncancellable wait.
            for item in self._taken:
                if not item.finished:
                    item.error = StoreClosed()
                    item.finish()
            while True:
                try:
                    item = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                item.error = StoreClosed("the store is shutting down")
                item.finish()
            self._receive.close()
            if self.on_stop is not None:
                try:
                    self.on_stop()
                except Exception:
                    log.exception("telling that the writer stopped failed")

    async def _commit_batches(self) -> None:
        async for first in self._receive:
            self._taken = batch = [first]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            for changes in await trio.to_thread.run_sync(self._commit, batch, limiter=self.thread):
                self.commits += 1
                if changes and self.on_commit is not None:
                    try:
                        self.on_commit(Commit(tuple(changes)))
                    except Exception:
                        log.exception("applying a commit failed")
            self.writes += len(batch)
            self.batch_sizes.observe(len(batch))
            for item in batch:
                item.finish()

    def _erase_checkpoint(self) -> None:
        """Worker thread, after a commit that erased text: older copies of its pages are still
        in the WAL, so copy the WAL into the database and truncate it. A reader in the middle
        of a read makes it wait ERASE_WAIT_MS at most; then the copies stay until the WAL is
        next checkpointed and reused (see docs/API.md, what deleting erases)."""
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {ERASE_WAIT_MS}")
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if busy:
                log.info("the WAL could not be truncated after an erasure (readers were busy)")
        except sqlite3.Error:
            log.warning("checkpoint after an erasure failed", exc_info=True)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def _commit(self, batch: list[Pending[Any]]) -> list[list[Change]]:
        """Worker thread: one transaction for the whole batch. Returns the changes of each
        transaction committed (here one, with those of the writes that succeeded, in order; none
        if it did not commit)."""
        conn = self._conn
        changes: list[Change] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                conn.execute("SAVEPOINT w")
                try:
                    item.value, made = item.run(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO w")
                    item.error = exc
                else:
                    changes += made
                conn.execute("RELEASE w")
            conn.execute("COMMIT")
            if any(isinstance(change, TextErased) for change in changes):
                self._erase_checkpoint()
            return [changes]
        except sqlite3.Error:
            log.exception("transaction failed; %d writes refused", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for item in batch:
                item.error = StoreClosed("the write could not be committed; retry later")
            return []
