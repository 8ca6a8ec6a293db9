"""The group-commit writer's PostgreSQL transaction shape (writer.py keeps the batching).

One transaction per batch: lock the batch's rooms in id order (`FOR NO KEY UPDATE`: nodes never
deadlock on them, and foreign-key checks on them are not blocked), then run the writes (a
message's txn_id is looked up after the lock, so a retry racing on another node finds the
original and takes no seq; `UPDATE rooms … RETURNING` allocates the seq, and a rollback gives it
back, so seqs stay dense), then NOTIFY the commit's change records (pgfeed.payloads), then
COMMIT. There is no SAVEPOINT per write (subtransactions stall PostgreSQL at scale): when a write
fails, the transaction is rolled back and the batch's writes are retried one per transaction, so
only the failing one fails.

A lost connection (the server restarting) refuses the writes in flight with StoreClosed (503:
the client retries; one whose COMMIT was under way may have committed, which its txn_id
resolves) and the next batch reconnects.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from chat_trio.store.changes import Change
from chat_trio.store.pg import PgConnection
from chat_trio.store.pgfeed import payloads
from chat_trio.store.queries import NothingWritten
from chat_trio.store.writer import GroupCommitWriter, Pending, StoreClosed

log = logging.getLogger("chat_trio.store")


class _WriteFailed(Exception):
    """A write of the batch raised `error`: its transaction must be rolled back."""

    def __init__(self, item: Pending[Any], error: Exception) -> None:
        self.item = item
        self.error = error


class PgWriter(GroupCommitWriter):
    def __init__(self, dsn: str, channel: str, **kw: Any) -> None:
        super().__init__(None, **kw)  # type: ignore[arg-type]
        self._dsn = dsn
        self.channel = channel
        self.pg: PgConnection | None = None
        self.pid = 0  # the writer connection's backend pid: the listener skips its notifications

    def _connection(self) -> PgConnection:
        if self.pg is None or self.pg.broken:
            if self.pg is not None:
                self.pg.close()
            self.pg = PgConnection.connect(self._dsn)
            self.pid = self.pg.backend_pid
        return self.pg

    def _commit(self, batch: list[Pending[Any]]) -> list[list[Change]]:
        committed: list[list[Change]] = []
        decided: set[int] = set()  # ids of the writes whose outcome is known
        try:
            conn = self._connection()
            try:
                committed.append(self._transaction(conn, batch))
                return committed
            except _WriteFailed:
                conn.execute("ROLLBACK")
            for item in batch:
                try:
                    committed.append(self._transaction(conn, [item]))
                except _WriteFailed as failed:
                    conn.execute("ROLLBACK")
                    item.error = failed.error
                decided.add(id(item))
        except psycopg.Error as exc:
            log.warning("transaction failed (%s); %d writes refused",
                        str(exc).strip() or type(exc).__name__, len(batch) - len(decided))
            self._abandon()
            for item in batch:
                if id(item) not in decided:
                    item.error = StoreClosed("the write could not be committed; retry later")
        return committed

    def _abandon(self) -> None:
        """After a failure outside any one write: roll back what is open, or drop a broken
        connection (the next batch reconnects)."""
        if self.pg is None or self.pg.broken:
            return
        try:
            self.pg.execute("ROLLBACK")
        except psycopg.Error:
            self.pg.close()

    def _transaction(self, conn: PgConnection, items: list[Pending[Any]]) -> list[Change]:
        """BEGIN … COMMIT of `items`; _WriteFailed (still in the transaction) if one raised."""
        conn.execute("BEGIN")
        rooms = sorted({item.room for item in items if item.room is not None})
        if rooms:
            conn.execute("SELECT id FROM rooms WHERE id = ANY(?) ORDER BY id FOR NO KEY UPDATE", (rooms,))
        changes: list[Change] = []
        for item in items:
            item.error = None
            try:
                item.value, made = item.run(conn)
            except NothingWritten as exc:
                item.error = exc
                continue
            except Exception as exc:
                if conn.broken:
                    raise
                raise _WriteFailed(item, exc) from exc
            changes += made
        notes = payloads(changes)
        if len(notes) == 1:
            conn.execute("SELECT pg_notify(?, ?)", (self.channel, notes[0]))
        elif notes:
            conn.executemany("SELECT pg_notify(?, ?)", [(self.channel, note) for note in notes])
        conn.execute("COMMIT")
        return changes

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()
