"""The async facade the handlers use: durable writes through the group-commit writer, hot
reads from memory.

Users, rooms, memberships, live tokens and each room's newest messages are kept in memory
(`State`, state.py), which only the change feed (feed.py) updates from committed transactions,
so a read never sees what is not yet durable and the hot paths (token → user, membership,
recent history) need no thread hop at all. Each write returns once its commit has been applied.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, TypeVar

import orjson
import trio

from chat_trio.config import Config
from chat_trio.errors import APIError
from chat_trio.store import loginlimits, membership, queries, timeline
from chat_trio.store.changes import Changes
from chat_trio.store.db import Connection, Readers
from chat_trio.store.feed import Feed
from chat_trio.store.queries import Bucket, Conflict, Limits, NotMember
from chat_trio.store.readers import ReaderPool
from chat_trio.store.records import Message, RoomState, User, entry_json, now_ms
from chat_trio.store.schema import migrate
from chat_trio.store.sqlite import backup, connect, sqlite3
from chat_trio.store.state import State
from chat_trio.store.writer import GroupCommitWriter, Rooms, StoreClosed, Users

if TYPE_CHECKING:
    from chat_trio.store.pgstore import PgNode

__all__ = ["Conflict", "NotMember", "ReadOnlyStore", "Store"]
T = TypeVar("T")

LIMITS_KEPT_MS = 86_400_000  # a limit row untouched this long limits nothing any more


class ReadOnlyStore(RuntimeError):
    """A write on a worker's store: in `--workers` mode every write goes to the supervisor
    through `context.commands`, never to sqlite from a worker."""


class Store:
    def __init__(self, config: Config, conn: sqlite3.Connection | None, readers: Readers) -> None:
        self.config = config
        self._conn = conn
        self.readers = readers
        self.state = State(config.recent_cache)
        self.feed = Feed(self.state)
        self.search_limiter = trio.CapacityLimiter(max(1, min(config.search_readers, config.readers)))
        self._writer = None if conn is None else GroupCommitWriter(
            conn, max_batch=config.write_batch, queue_size=config.write_queue, on_commit=self.feed.apply)
        # PostgreSQL (store/pgstore.py): the feed between nodes, when this node writes.
        self.node: PgNode | None = None
        self.users = self.state.users  # read-only views for the handlers
        self.rooms = self.state.rooms

    @property
    def writer(self) -> GroupCommitWriter:
        """The group-commit writer; ReadOnlyStore on a remote (worker) store, which has none."""
        if self._writer is None:
            raise ReadOnlyStore("a worker's store is read-only: writes go through context.commands")
        return self._writer

    @property
    def remote(self) -> bool:
        return self._writer is None

    # -- life cycle ------------------------------------------------------------------------

    @classmethod
    async def open(cls, config: Config) -> Store:
        if config.postgres:
            from chat_trio.store.pgstore import open_node

            return await open_node(cls, config)

        def setup() -> Store:
            conn = connect(config.db, durability=config.durability,
                           wal_autocheckpoint=config.wal_autocheckpoint)
            migrate(conn)
            queries.delete_expired_tokens(conn, now_ms())
            store = cls(config, conn, ReaderPool(config.db, config.readers))
            store.state.load(conn)
            return store

        return await trio.to_thread.run_sync(setup)

    @classmethod
    async def open_remote(cls, config: Config) -> Store:
        """A worker's store: read-only connections to a database the supervisor has migrated and
        writes; no writer, no purge. Its state is loaded (one snapshot) by `load_remote`, after
        the worker has subscribed to the supervisor's feed, and then kept current by
        `feed.apply_encoded` with every commit the supervisor sends."""
        if config.postgres:
            from chat_trio.store.pg import PgReaderPool

            return cls(config, None, PgReaderPool(config.database, config.readers))
        return cls(config, None, await trio.to_thread.run_sync(ReaderPool, config.db, config.readers))

    async def load_remote(self) -> None:
        """Fill the state from sqlite in one read transaction (so rooms and memberships agree).
        Commits that arrived meanwhile are applied after it: `State.apply` skips what it saw."""

        def load(conn: Connection) -> None:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ" if self.config.postgres else "BEGIN")
            try:
                self.state.load(conn)
            finally:
                conn.execute("COMMIT")

        await self.readers.read(load)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background: the writer and, on a PostgreSQL node, the feed from the other nodes
        (`started` once this node listens to it)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.writer.run)
            if self.node is not None:
                await nursery.start(self.node.run)
            task_status.started()

    def check_writable(self) -> None:
        """StoreClosed (503) if a write now would surely be refused: the writer has stopped for
        good, or on PostgreSQL the node's listening connection is down (pgstore.PgNode). Judged
        from state the store already keeps, with no write and no query, so a load balancer may
        ask as often as it likes (GET /healthz)."""
        if self.writer.stopped:
            raise StoreClosed("the store's writer has stopped after a failure; "
                              "no write is accepted until the server restarts")
        if self.node is not None:
            self.node.check_reachable()

    def watch_writable(self, hook: Callable[[], None]) -> None:
        """Call `hook()` whenever `check_writable`'s answer may have changed (the writer stopped;
        the node's listening connection went down or came back), so a `--workers` supervisor
        can tell its workers then, instead of each of their health checks asking it."""
        self.writer.on_stop = hook
        if self.node is not None:
            self.node.listener.on_connected = hook

    async def backup(self, path: str) -> None:
        """A consistent online copy of the database at `path` (sqlite.backup), in a thread."""
        if self.config.postgres:
            raise APIError(409, "conflict", "the database is PostgreSQL: back it up with pg_dump")
        await trio.to_thread.run_sync(backup, self.config.db, path)

    async def close(self) -> None:
        def close_all() -> None:
            self.readers.close()
            if self.node is not None:
                self.node.close()
            if self._conn is not None:
                with suppress(sqlite3.Error):  # best effort: a stopped writer may have lost it
                    self._conn.execute("PRAGMA optimize")
                self._conn.close()

        await trio.to_thread.run_sync(close_all)

    @property
    def messages_committed(self) -> int:
        return self.state.messages_committed

    # -- accounts --------------------------------------------------------------------------

    def username_taken(self, username: str) -> bool:
        return username.lower() in self.state.user_ids

    async def create_user(self, username: str, password_hash: str, admin: bool = False) -> User:
        now = now_ms()
        user_id = await self.writer.change(
            lambda c: queries.insert_user(c, username, password_hash, now, admin))
        return self.state.users[user_id]

    async def password_hash(self, username: str) -> tuple[int, str] | None:
        if username.lower() not in self.state.user_ids:
            return None
        row = await self.readers.read(lambda c: queries.password_hash(c, username))
        return None if row is None else (row[0], row[1])

    async def rehash_password(self, user_id: int, new_hash: str) -> None:
        await self.writer.write(lambda c: queries.update_password_hash(c, user_id, new_hash),
                                users=(user_id,))

    async def create_token(self, digest: bytes, user_id: int, ttl_ms: int, keep: int = 0,
                           client: str = "", verified: str | None = None) -> int:
        """Store a token's hash and, with `keep` > 0, revoke the user's oldest live tokens beyond
        the newest `keep`, in the same transaction. Returns its expiry (ms). Conflict when the
        account is closed or its password is no longer `verified` (see queries.insert_token)."""
        now = now_ms()
        expires = now + ttl_ms
        await self.writer.change(
            lambda c: queries.insert_token(c, digest, user_id, now, expires, keep, client, verified),
            users=(user_id,))
        return expires

    async def set_password(self, user_id: int, password_hash: str, keep: bytes = b"") -> None:
        """Replace the password; every token of the user but `keep` is revoked in the same commit."""
        await self.writer.change(lambda c: queries.set_password(c, user_id, password_hash, keep),
                                 users=(user_id,))

    async def end_session(self, user_id: int, public_id: str) -> bool:
        """Revoke the user's token with this public id; False if there is none."""
        return await self.writer.change(lambda c: queries.delete_session(c, user_id, public_id))

    async def sessions(self, user_id: int) -> list[tuple[str, int, int, str, bytes]]:
        now = now_ms()
        rows = await self.readers.read(lambda c: queries.sessions(c, user_id, now))
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def touch_token(self, digest: bytes) -> None:
        """Queue a last-seen update for a token; returns without waiting for its commit."""
        now = now_ms()
        entry = self.state.tokens.get(digest)
        await self.writer.submit(lambda c: queries.touch_token(c, digest, now),
                                 users=() if entry is None else (entry[0],))

    async def set_admin(self, user_id: int, admin: bool) -> None:
        await self.writer.change(lambda c: queries.set_admin(c, user_id, admin), users=(user_id,))

    async def deactivate(self, user_id: int, erase: bool) -> None:
        """Close the account in one commit: it leaves every room (a `leave` entry each) and, with
        `erase`, its texts are erased (timeline.erase_author: as a delete erases, and an `erase`
        entry in each room it wrote in)."""
        user = self.state.users[user_id]

        def close(conn: Connection, now: int) -> tuple[None, Changes]:
            rooms, changes = queries.deactivate_user(conn, user_id)
            if erase:
                wrote_in, erased = timeline.erase_author(conn, user_id)
                changes += erased
                for room_id in wrote_in:
                    text = f"{user['username']}'s messages were erased"
                    changes += (membership.append_event(conn, room_id, "erase", user, user, text, now),)
            for room_id in rooms:
                changes += membership.leave(conn, room_id, user, now)[1]
            return None, changes

        # the writer checkpoints the WAL after an erasure (sqlite)
        await self.change(close, lambda c: queries.account_rooms(c, user_id, erase), users=(user_id,))

    async def users_page(self, prefix: str, after: int,
                         limit: int) -> tuple[list[tuple[User, int | None]], bool]:
        """Users whose name starts with `prefix` (ignoring case) in id order after `after`, each
        with when it was last seen (epoch ms or None), and whether more follow."""
        rows = await self.readers.read(lambda c: queries.users_page(c, prefix, after, limit + 1))
        users = self.state.users
        page = [(users[uid], seen) for uid, seen in rows[:limit] if uid in users]
        return page, len(rows) > limit

    async def export_messages(self, user_id: int, after_id: int, limit: int) -> tuple[bytes, int]:
        """Up to `limit` of the user's messages after message id `after_id`, read and encoded
        (JSON objects joined by commas) in a reader thread, and the last id (0: none left)."""
        users = self.state.users

        def page(conn: Connection) -> tuple[bytes, int]:
            rows = queries.messages_by_author(conn, user_id, after_id, limit)
            if not rows:
                return b"", 0
            return orjson.dumps([entry_json(row, users) for row in rows])[1:-1], rows[-1][0]

        return await self.readers.read(page)

    async def purge_expired_tokens(self, chunk: int = 1000) -> list[bytes]:
        """Delete every expired token; returns their hashes. The table scan runs on a reader
        (there is no index on expiry), the writer only deletes by key, `chunk` per transaction."""
        purged: list[bytes] = []
        while len(found := await self._purge_chunk(chunk)) == chunk:
            purged += found
        if self.shares_limits:  # and the limits nobody has touched for a day
            before = now_ms() - LIMITS_KEPT_MS
            await self.writer.write(lambda c: queries.purge_limits(c, before))
        return purged + found

    async def _purge_chunk(self, chunk: int) -> list[bytes]:
        now = now_ms()
        found = await self.readers.read(lambda c: queries.expired_tokens(c, now, chunk))
        if found:
            await self.writer.change(lambda c: queries.delete_expired_tokens_by_hash(c, found, now))
        return found

    @property
    def shares_limits(self) -> bool:
        """Whether rate limits are kept in the database, decided in the transaction of the write
        they limit, so they hold across nodes (PostgreSQL), instead of in this process's memory."""
        return self.node is not None

    async def login_check(self, username: str, address: str) -> None:
        """The login policy kept in the database (store/loginlimits.py, when `shares_limits`):
        queries.Limited if the attempt must wait, else it is counted against the address."""
        now = now_ms()
        await self.writer.write(lambda c: loginlimits.check(c, self.config, username, address, now),
                                limits=loginlimits.check_limits(self.config, address))

    async def login_failed(self, username: str, address: str, account: bool) -> None:
        now = now_ms()
        await self.writer.write(lambda c: loginlimits.failed(c, self.config, username, address, account, now),
                                limits=loginlimits.failed_limits(self.config, username, address, account))

    async def login_succeeded(self, username: str, address: str) -> None:
        """queries.Limited when the user's successes ran out meanwhile (loginlimits.succeeded)."""
        now = now_ms()
        await self.writer.write(lambda c: loginlimits.succeeded(c, self.config, username, address, now),
                                limits=loginlimits.succeeded_limits(username, address))

    async def count_event(self, key: str, limit: int, window: float) -> None:
        """Count one event against a window limit shared between nodes (queries.Limited when over)."""
        now = now_ms()
        await self.writer.write(lambda c: queries.count_event(c, key, limit, int(window * 1000), now),
                                limits=((key, 0.0),))

    async def revoke_token(self, digest: bytes) -> None:
        await self.writer.change(lambda c: queries.delete_token(c, digest))

    async def token_user(self, digest: bytes) -> User | None:
        """The user a token belongs to, or None if it is unknown, revoked or expired."""
        state = self.state
        entry = state.tokens.get(digest)
        if entry is None:
            revocations = state.revocations
            row = await self.readers.read(lambda c: queries.token_owner(c, digest))
            if row is None:
                return None
            entry = (row[0], row[1])
            state.cache_token(digest, entry, revocations)
        user_id, expires = entry
        if expires <= now_ms():
            state.tokens.pop(digest, None)
            return None
        user = state.users.get(user_id)
        return None if user is None or user["deactivated"] else user

    def token_expiry(self, digest: bytes) -> int | None:
        """When a token `token_user` found live expires (epoch ms); None once it is revoked."""
        entry = self.state.tokens.get(digest)
        return None if entry is None else entry[1]

    # -- rooms -----------------------------------------------------------------------------

    def room(self, room_id: int) -> RoomState | None:
        return self.state.rooms.get(room_id)

    def rooms_page(self, viewer: int, after: int, limit: int,
                   joined: bool = False) -> tuple[list[RoomState], bool]:
        """Up to `limit` rooms with id > `after` in id order that `viewer` may see (only theirs
        with `joined`), and whether more follow: found by bisection, so a late page costs what
        an early one does."""
        state = self.state
        if joined:
            ids = state.joined.get(viewer, [])
            start = bisect_right(ids, after)
            return [state.rooms[i] for i in ids[start:start + limit]], len(ids) > start + limit
        page = list(itertools.islice(state.visible_rooms(viewer, after), limit + 1))
        return [state.rooms[i] for i in page[:limit]], len(page) > limit

    def every_room_page(self, after: int, limit: int) -> tuple[list[RoomState], bool]:
        """Up to `limit` rooms with id > `after` in id order, private and direct ones included
        (what an admin lists), and whether more follow."""
        ids = self.state.room_order
        start = bisect_right(ids, after)
        return [self.state.rooms[i] for i in ids[start:start + limit]], len(ids) > start + limit

    def room_name_taken(self, name: str) -> bool:
        return queries.name_key(name) in self.state.room_ids

    async def create_room(
        self, user_id: int, name: str, topic: str, visibility: str = "public", bucket: Bucket | None = None
    ) -> RoomState:
        """A new room; with a `bucket` (a limit shared between nodes) it first takes a token from
        it in the same transaction (queries.Limited when empty)."""
        now = now_ms()

        def create(c: Connection) -> tuple[int, Changes]:
            if bucket is not None:
                queries.take_token(c, *bucket, now)
            return queries.insert_room(c, name, topic, user_id, now, visibility)

        room_id = await self.writer.change(create, limits=queries.bucket_limits(bucket))
        return self.state.rooms[room_id]

    async def join(self, room: RoomState, user_id: int) -> None:
        if user_id in room.members:
            return
        user = self.state.users[user_id]
        await self.change(lambda c, now: membership.join(c, room.id, user, now), (room.id,))

    async def leave(self, room: RoomState, user_id: int) -> None:
        if user_id not in room.members:
            return
        user = self.state.users[user_id]
        await self.change(lambda c, now: membership.leave(c, room.id, user, now), (room.id,))

    async def change(self, run: Callable[[Connection, int], tuple[T, Changes]], rooms: Rooms = (), *,
                     limits: Limits = (), users: Users = ()) -> T:
        """Run a write that changes what the caches hold (e.g. one of store/membership.py) with
        the current time (epoch ms) in the next transaction; its result once applied. `rooms`:
        every room whose rows it changes (writer.Rooms), `users` and `limits` the user and limit
        rows it locks, so that PostgreSQL nodes lock them in one order and never deadlock."""
        now = now_ms()
        return await self.writer.change(lambda c: run(c, now), rooms, limits=limits, users=users)

    # -- messages --------------------------------------------------------------------------

    async def submit_post(
        self, room: RoomState, author: User, text: str, txn_id: str | None, bucket: Bucket | None = None
    ) -> Callable[[], Awaitable[tuple[Message, bool]]]:
        """Queue a message for the next commit; returns what to await for (message, created).
        Messages submitted one after another get increasing seqs. `bucket`: a send limit shared
        between nodes, decided in the transaction (queries.Limited)."""
        now = now_ms()
        room_id = room.id
        new = queries.NewMessage(room_id, author, text, txn_id, now, bucket)
        pending = await self.writer.submit_changes(new.insert, (room_id,), new,
                                                   limits=queries.bucket_limits(bucket))
        return pending.result

    async def sent_message(self, room: RoomState, author: User, txn_id: str) -> Message | None:
        """The committed message `author` sent to `room` with `txn_id`, if there is one."""
        row = await self.readers.read(lambda c: queries.message_by_txn(c, room.id, author["id"], txn_id))
        return None if row is None else entry_json(row, {author["id"]: author})

    async def messages(self, room: RoomState, first: int, last: int) -> list[Message]:
        """Messages first..last (inclusive, ascending) from memory when it holds them."""
        if first > last:
            return []
        recent = room.recent
        if recent and recent[0]["seq"] <= first and last <= recent[-1]["seq"]:
            base = recent[0]["seq"]
            return recent[first - base : last - base + 1]
        erasures = self.state.erasures
        rows = await self.readers.read(lambda c: queries.messages_between(c, room.id, first, last))
        users = self.state.users
        messages = [entry_json(row, users) for row in rows]
        if erasures == self.state.erasures:  # else the read may predate an erasure: do not cache it
            self.state.warm(room, messages)
        return messages

    async def edit_message(self, room: RoomState, editor: User, seq: int, text: str,
                           txn_id: str | None, bucket: Bucket | None = None) -> Message:
        """The edit entry (store/timeline.py); APIError 403 / 404 / 409 as it says. `bucket`:
        the send limit shared between nodes, decided in the transaction (queries.Limited)."""
        room_id = room.id
        entry: Message = await self.change(
            lambda c, now: timeline.edit_message(c, room_id, editor, seq, text, txn_id, now, bucket),
            (room_id,), limits=queries.bucket_limits(bucket))
        return entry

    async def delete_message(self, room: RoomState, actor: User, seq: int) -> Message:
        """The delete entry (store/timeline.py); APIError 403 / 404 / 409 as it says."""
        room_id = room.id
        entry: Message = await self.change(
            lambda c, now: timeline.delete_message(c, room_id, actor, seq, now), (room_id,))
        return entry

    # -- read markers and search -----------------------------------------------------------

    async def mark_read(self, room: RoomState, user_id: int, seq: int) -> int:
        """Move the member's read marker forward to `seq`; the marker after the call.
        NotMember if they are not a member when it commits."""
        room_id = room.id
        read_seq: int = await self.writer.change(
            lambda c: queries.move_read_marker(c, room_id, user_id, seq), (room_id,))
        return read_seq

    async def search(self, query_words: list[str], room_ids: list[int], before: int | None,
                     limit: int) -> list[Message]:
        """Messages in `room_ids` matching every word by prefix, newest first (store/search.py)."""
        async with self.search_limiter:  # a costly search never holds every reader connection
            rows = await self.readers.read(lambda c: queries.search(c, query_words, room_ids, before, limit))
        users = self.state.users
        return [entry_json(row, users) for row in rows]
