"""The group-commit writer's PostgreSQL transaction shape (writer.py keeps the batching).

One transaction per batch: lock the rooms every write of the batch changes (messages, room events,
members, read markers: `Pending.rooms`) in id order (`FOR NO KEY UPDATE`: nodes never deadlock on
them, and foreign-key checks on them are not blocked), then the users they update and the limit
rows they decide on (`Pending.users`, `Pending.limits`) in id and key order, then run the writes (a
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
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from chat_trio.store import queries
from chat_trio.store.changes import Change, MessageCommitted
from chat_trio.store.pg import PgConnection
from chat_trio.store.pgfeed import payloads
from chat_trio.store.pgsearch import add_many
from chat_trio.store.queries import MESSAGE_COLUMNS, NewMessage, NothingWritten, Row
from chat_trio.store.records import entry_json, message_json, now_ms
from chat_trio.store.writer import GroupCommitWriter, Pending, StoreClosed

log = logging.getLogger("chat_trio.store")
_COLUMNS = ", ".join("m." + column.strip() for column in MESSAGE_COLUMNS.split(","))
T = TypeVar("T")


class _WriteFailed(Exception):
    """A write of the batch raised `error`: its transaction must be rolled back."""

    def __init__(self, item: Pending[Any], error: Exception) -> None:
        self.item = item
        self.error = error


def _append(conn: PgConnection, items: list[Pending[Any]]) -> list[Change]:
    """Append the messages of `items` (each's spec a queries.NewMessage) as `insert_message`
    would one by one, in a few statements for all of them: one txn_id lookup, one membership
    check, each sender's send bucket locked and saved once, one statement allocating each room's
    seqs and inserting every row. The rooms are locked already. A txn_id twice in the run: the second gets
    what the first got, as it would one by one."""
    specs: list[NewMessage] = [item.spec for item in items]
    for item in items:
        item.value, item.error = None, None
    keys = list({(s.room_id, s.author["id"], s.txn_id): None for s in specs if s.txn_id is not None})
    found: dict[tuple[int, int, str], Row] = {}
    if keys:
        rooms, authors, txns = zip(*keys, strict=True)
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM messages m"
            " JOIN unnest(?::bigint[], ?::bigint[], ?::text[]) AS k(room_id, author_id, txn_id)"
            " ON m.room_id = k.room_id AND m.author_id = k.author_id AND m.txn_id = k.txn_id",
            (list(rooms), list(authors), list(txns))).fetchall()
        found = {(row[1], row[3], row[5]): row for row in rows}
    new: list[Pending[Any]] = []
    buckets: dict[str, list[Pending[Any]]] = {}
    first: dict[tuple[int, int, str], Pending[Any]] = {}  # txn_id → the write of this run taking it
    repeats: list[tuple[Pending[Any], Pending[Any]]] = []  # (a retry, the write it repeats)
    for item, spec in zip(items, specs, strict=True):
        key = None if spec.txn_id is None else (spec.room_id, spec.author["id"], spec.txn_id)
        original = None if key is None else found.get(key)
        if original is not None:
            item.value = (entry_json(original, {spec.author["id"]: spec.author}), False)
            continue
        if key is not None:
            if key in first:
                repeats.append((item, first[key]))
                continue
            first[key] = item
        new.append(item)
    if new:  # a seq only while its author is a member (insert_message): a kick before it counts
        pairs = list({(item.spec.room_id, item.spec.author["id"]) for item in new})
        members = set(map(tuple, conn.execute(
            "SELECT m.room_id, m.user_id FROM members m"
            " JOIN unnest(?::bigint[], ?::bigint[]) AS k(room_id, user_id)"
            " ON m.room_id = k.room_id AND m.user_id = k.user_id",
            ([r for r, _ in pairs], [u for _, u in pairs])).fetchall()))
        for item in new:
            spec = item.spec
            if (spec.room_id, spec.author["id"]) not in members:
                item.error = queries.outsider(conn, spec.room_id, spec.author["id"])
            elif spec.bucket is not None:
                buckets.setdefault(spec.bucket[0], []).append(item)
    for bucket in sorted(buckets):  # in key order, as the rooms: no deadlock between nodes
        takers = buckets[bucket]
        _, rate, burst = takers[0].spec.bucket
        tokens, at = queries.locked_bucket(conn, bucket, burst, takers[0].spec.now)
        for item in takers:
            tokens, at = queries.refill(tokens, at, item.spec.now, rate, burst), max(at, item.spec.now)
            if tokens < 1.0:
                item.error = queries.Limited((1.0 - tokens) / rate)
            else:
                tokens -= 1.0
        queries.save_bucket(conn, bucket, tokens, at)
    new = [item for item in new if item.error is None]
    changes = _insert(conn, new) if new else []
    for item, repeated in repeats:  # as one by one: the retry finds it, or is refused as it was
        item.value, item.error = (None, repeated.error) if repeated.value is None else (
            (repeated.value[0], False), None)
    return changes


def _insert(conn: PgConnection, new: list[Pending[Any]]) -> list[Change]:
    """The new messages of `new`, in one statement: each room's seqs (and text numbers) allocated
    by one `UPDATE rooms … RETURNING` and numbered in the order of `new`, then one multi-row
    INSERT; then, as insert_message does for one, their search index rows and their authors'
    read markers (each moved to the author's last message of the run)."""
    specs: list[NewMessage] = [item.spec for item in new]
    counts: dict[int, int] = {}
    for spec in specs:
        counts[spec.room_id] = counts.get(spec.room_id, 0) + 1
    rows = conn.execute(
        "WITH bumped AS ("
        "  UPDATE rooms SET last_seq = rooms.last_seq + v.k, text_count = rooms.text_count + v.k"
        "  FROM unnest(?::bigint[], ?::bigint[]) AS v(id, k)"
        "  WHERE rooms.id = v.id"
        "  RETURNING rooms.id, rooms.last_seq - v.k AS base, rooms.text_count - v.k AS text_base),"
        " new AS (SELECT * FROM unnest(?::bigint[], ?::bigint[], ?::text[], ?::text[], ?::bigint[])"
        "  WITH ORDINALITY AS n(room_id, author_id, text, txn_id, created_at, position)),"
        " numbered AS (SELECT new.*, bumped.base, bumped.text_base,"
        "  row_number() OVER (PARTITION BY new.room_id ORDER BY position) AS n"
        "  FROM new JOIN bumped ON bumped.id = new.room_id)"
        " INSERT INTO messages (room_id, seq, author_id, text, txn_id, created_at, text_n)"
        " SELECT room_id, base + n, author_id, text, txn_id, created_at, text_base + n FROM numbered"
        " ORDER BY position RETURNING id, room_id, seq, text_n",
        (list(counts), list(counts.values()), [s.room_id for s in specs], [s.author["id"] for s in specs],
         [s.text for s in specs], [s.txn_id for s in specs], [s.now for s in specs])).fetchall()
    base: dict[int, int] = {}
    ids: dict[tuple[int, int], tuple[int, int]] = {}
    for message_id, room_id, seq, text_n in rows:
        base[room_id] = min(seq, base.get(room_id, seq))
        ids[room_id, seq] = message_id, text_n
    markers: dict[tuple[int, int], tuple[int, int]] = {}  # (room, author) → (seq, text_n), the last
    changes: list[Change] = []
    for item, spec in zip(new, specs, strict=True):
        seq = base[spec.room_id]
        base[spec.room_id] += 1
        message_id, text_n = ids[spec.room_id, seq]
        markers[spec.room_id, spec.author["id"]] = seq, text_n
        message = message_json((message_id, spec.room_id, seq, spec.author["id"], spec.text,
                                spec.txn_id, spec.now), spec.author)
        item.value = (message, True)
        changes.append(MessageCommitted(message))
    add_many(conn, [(m.message["id"], m.message["room_id"], m.message["text"])
                    for m in changes if isinstance(m, MessageCommitted)])
    conn.execute(
        "UPDATE members SET read_seq = v.seq, read_text_n = v.text_n"
        " FROM unnest(?::bigint[], ?::bigint[], ?::bigint[], ?::bigint[])"
        "  AS v(room_id, user_id, seq, text_n)"
        " WHERE members.room_id = v.room_id AND members.user_id = v.user_id",
        ([r for r, _ in markers], [u for _, u in markers], [m[0] for m in markers.values()],
         [m[1] for m in markers.values()]))
    return changes


def _lock_rows(conn: PgConnection, items: list[Pending[Any]]) -> None:
    """BEGIN, and lock the rows of every room the writes of `items` change, in id order, then
    the users they update, in id order, then the limit rows they lock, in key order (created if
    new, with their first tokens), before any of them runs: two nodes' transactions then take
    their locks in one order and never deadlock (a write that took its locks as it went could
    hold one row another transaction waits for while it waits for one that transaction holds).
    Their members, bans, invites and timeline rows are only written under their room's lock, a
    user's tokens under the user's, a limit's events under its row's, so they follow the order."""
    rooms = {room for item in items if not callable(item.rooms) for room in item.rooms}
    finders = [item.rooms for item in items if callable(item.rooms)]
    users = sorted({user for item in items for user in item.users})
    limits = dict(sorted(limit for item in items for limit in item.limits))
    now = now_ms()
    in_order = "WHERE id = ANY(?) ORDER BY id FOR NO KEY UPDATE"

    def lock() -> None:
        if rooms:
            conn.execute(f"SELECT id FROM rooms {in_order}", (sorted(rooms),))
        if users:
            conn.execute(f"SELECT id FROM users {in_order}", (users,))
        if limits:
            conn.execute("INSERT INTO limits (key, tokens, at) SELECT k.key, k.tokens, ?"
                         " FROM unnest(?::text[], ?::float8[]) WITH ORDINALITY AS k(key, tokens, n)"
                         " ORDER BY n ON CONFLICT (key) DO UPDATE SET at = limits.at",
                         (now, list(limits), list(limits.values())))

    with conn.raw.pipeline():  # one round trip for all, unless the database must find rooms first
        conn.execute("BEGIN")
        if not finders:
            lock()
    if finders:
        for find in finders:
            rooms.update(find(conn))
        with conn.raw.pipeline():
            lock()


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
            except _WriteFailed as failed:
                conn.execute("ROLLBACK")
                if isinstance(failed.error, psycopg.Error):  # not a refusal: a deadlock, say
                    log.warning("a batch was rolled back (%s); its %d writes are retried one by one",
                                " ".join(str(failed.error).split()) or type(failed.error).__name__,
                                len(batch))
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
        """BEGIN … COMMIT of `items`; _WriteFailed (still in the transaction) if one raised, or
        if taking their locks did (a deadlock victim, say: retried one write at a time, too)."""
        self._guarded(conn, items[0], _lock_rows, conn, items)
        changes: list[Change] = []
        at = 0
        while at < len(items):
            item = items[at]
            item.error = None
            if item.spec is not None and len(items) > 1:  # a run of messages: appended in bulk
                end = at
                while end < len(items) and items[end].spec is not None:
                    end += 1
                changes += self._guarded(conn, items[at], _append, conn, items[at:end])
                at = end
                continue
            at += 1
            try:
                item.value, made = self._guarded(conn, item, item.run, conn)
            except NothingWritten as exc:
                item.error = exc
                continue
            changes += made
        with conn.raw.pipeline():  # one round trip for the notifications and the COMMIT
            for note in payloads(changes):
                conn.execute("SELECT pg_notify(?, ?)", (self.channel, note))
            conn.execute("COMMIT")
        return changes

    @staticmethod
    def _guarded(conn: PgConnection, item: Pending[Any], run: Callable[..., T], *args: Any) -> T:
        """`run(*args)`; a failure of the write (not of the connection) is _WriteFailed."""
        try:
            return run(*args)
        except NothingWritten:
            raise
        except Exception as exc:
            if conn.broken:
                raise
            raise _WriteFailed(item, exc) from exc

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()
