"""The async facade the handlers use: durable writes through the group-commit writer, hot
reads from memory.

Users, rooms, memberships, live tokens and each room's newest messages are kept in memory and
changed only by after-commit hooks, so a read never sees what is not yet durable and the hot
paths (token → user, membership, recent history) need no thread hop at all.
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_left, bisect_right, insort
from collections.abc import Awaitable, Callable

import trio

from chat_trio.config import Config
from chat_trio.store import queries
from chat_trio.store.queries import Conflict, Row
from chat_trio.store.readers import ReaderPool
from chat_trio.store.records import Message, RoomState, User, message_json, now_ms, user_json
from chat_trio.store.schema import migrate
from chat_trio.store.sqlite import connect
from chat_trio.store.writer import GroupCommitWriter

__all__ = ["Conflict", "Store"]

MessageListener = Callable[[Message], None]


class Store:
    def __init__(self, config: Config, conn: sqlite3.Connection, readers: ReaderPool) -> None:
        self.config = config
        self._conn = conn
        self.readers = readers
        self.writer = GroupCommitWriter(conn, max_batch=config.write_batch, queue_size=config.write_queue)
        self.users: dict[int, User] = {}
        self.user_ids: dict[str, int] = {}  # lower-cased username → id
        self.rooms: dict[int, RoomState] = {}
        self.room_ids: dict[str, int] = {}  # queries.name_key(room name) → id
        # Room ids in order, all and per member, so a page of GET /rooms is found by bisection
        # instead of a walk over every room before it (rooms are never deleted).
        self._room_order: list[int] = []
        self._joined: dict[int, list[int]] = {}  # user id → ids of the rooms they are in
        self._tokens: dict[bytes, tuple[int, int]] = {}  # sha256 → (user id, expires ms)
        self._revocations = 0  # bumped by every logout; guards the token cache against races
        self.listeners: list[MessageListener] = []  # told of each new message, in commit order
        self.messages_committed = 0

    # -- life cycle ------------------------------------------------------------------------

    @classmethod
    async def open(cls, config: Config) -> Store:
        def setup() -> Store:
            conn = connect(config.db, durability=config.durability,
                           wal_autocheckpoint=config.wal_autocheckpoint)
            migrate(conn)
            queries.delete_expired_tokens(conn, now_ms())
            store = cls(config, conn, ReaderPool(config.db, config.readers))
            store._load(conn)
            return store

        return await trio.to_thread.run_sync(setup)

    def _load(self, conn: sqlite3.Connection) -> None:
        for user_id, username, created_at in queries.load_users(conn):
            self._add_user(user_id, username, created_at)
        for room_id, name, topic, created_by, created_at, last_seq in queries.load_rooms(conn):
            self._add_room(RoomState(room_id, name, topic, created_by, created_at, last_seq))
        for room_id, user_id, joined_at in queries.load_members(conn):
            self._member_added(self.rooms[room_id], user_id, joined_at)

    async def close(self) -> None:
        def close_all() -> None:
            self.readers.close()
            self._conn.execute("PRAGMA optimize")
            self._conn.close()

        await trio.to_thread.run_sync(close_all)

    def _add_user(self, user_id: int, username: str, created_at: int) -> User:
        user = user_json(user_id, username, created_at)
        self.users[user_id] = user
        self.user_ids[username.lower()] = user_id
        return user

    def _add_room(self, room: RoomState) -> None:
        self.rooms[room.id] = room
        insort(self._room_order, room.id)
        for user_id in room.members:
            insort(self._joined.setdefault(user_id, []), room.id)
        # setdefault: of two rooms whose names came to collide (schema migration 2), the older
        # one keeps the key.
        self.room_ids.setdefault(queries.name_key(room.name), room.id)

    # -- accounts --------------------------------------------------------------------------

    def username_taken(self, username: str) -> bool:
        return username.lower() in self.user_ids

    async def create_user(self, username: str, password_hash: str) -> User:
        now = now_ms()

        def remember(user_id: int) -> None:
            self._add_user(user_id, username, now)

        user_id = await self.writer.write(
            lambda c: queries.insert_user(c, username, password_hash, now), remember
        )
        return self.users[user_id]

    async def password_hash(self, username: str) -> tuple[int, str] | None:
        if username.lower() not in self.user_ids:
            return None
        row = await self.readers.read(lambda c: queries.password_hash(c, username))
        return None if row is None else (row[0], row[1])

    async def rehash_password(self, user_id: int, new_hash: str) -> None:
        await self.writer.write(lambda c: queries.update_password_hash(c, user_id, new_hash))

    async def create_token(
        self, digest: bytes, user_id: int, ttl_ms: int, keep: int = 0
    ) -> tuple[int, list[bytes]]:
        """Store a token's hash and, with `keep` > 0, revoke the user's oldest live tokens beyond
        the newest `keep`, in the same transaction. Returns its expiry (ms) and the revoked hashes."""
        now = now_ms()
        expires = now + ttl_ms

        def remember(revoked: list[bytes]) -> None:
            self._tokens[digest] = (user_id, expires)
            self._forget_tokens(revoked)

        revoked = await self.writer.write(
            lambda c: queries.insert_token(c, digest, user_id, now, expires, keep), remember
        )
        return expires, revoked

    def _forget_tokens(self, digests: list[bytes]) -> None:
        if digests:
            self._revocations += 1
            for digest in digests:
                self._tokens.pop(digest, None)

    async def purge_expired_tokens(self, chunk: int = 1000) -> list[bytes]:
        """Delete every expired token; returns their hashes. The table scan runs on a reader
        (there is no index on expiry), the writer only deletes by key, `chunk` per transaction."""
        purged: list[bytes] = []
        while len(found := await self._purge_chunk(chunk)) == chunk:
            purged += found
        return purged + found

    async def _purge_chunk(self, chunk: int) -> list[bytes]:
        now = now_ms()
        found = await self.readers.read(lambda c: queries.expired_tokens(c, now, chunk))
        if found:
            await self.writer.write(lambda c: queries.delete_expired_tokens_by_hash(c, found, now),
                                    lambda _: self._forget_tokens(found))
        return found

    async def revoke_token(self, digest: bytes) -> None:
        def forget(_: None) -> None:
            self._revocations += 1
            self._tokens.pop(digest, None)

        await self.writer.write(lambda c: queries.delete_token(c, digest), forget)

    async def token_user(self, digest: bytes) -> User | None:
        """The user a token belongs to, or None if it is unknown, revoked or expired."""
        entry = self._tokens.get(digest)
        if entry is None:
            revocations = self._revocations
            row = await self.readers.read(lambda c: queries.token_owner(c, digest))
            if row is None:
                return None
            entry = (row[0], row[1])
            if revocations == self._revocations:  # no logout raced with this read
                self._tokens[digest] = entry
        user_id, expires = entry
        if expires <= now_ms():
            self._tokens.pop(digest, None)
            return None
        return self.users.get(user_id)

    def token_expiry(self, digest: bytes) -> int | None:
        """When a token `token_user` found live expires (epoch ms); None once it is revoked."""
        entry = self._tokens.get(digest)
        return None if entry is None else entry[1]

    # -- rooms -----------------------------------------------------------------------------

    def room(self, room_id: int) -> RoomState | None:
        return self.rooms.get(room_id)

    def rooms_page(self, after: int, limit: int, member: int | None = None) -> tuple[list[RoomState], bool]:
        """Up to `limit` rooms with id > `after` in id order (only `member`'s, if given), and
        whether more follow."""
        ids = self._room_order if member is None else self._joined.get(member, [])
        start = bisect_right(ids, after)
        return [self.rooms[i] for i in ids[start:start + limit]], len(ids) > start + limit

    def _member_added(self, room: RoomState, user_id: int, joined_at: int) -> None:
        if user_id not in room.members:
            insort(self._joined.setdefault(user_id, []), room.id)
        room.members[user_id] = joined_at

    def room_name_taken(self, name: str) -> bool:
        return queries.name_key(name) in self.room_ids

    async def create_room(self, user_id: int, name: str, topic: str) -> RoomState:
        now = now_ms()

        def remember(room_id: int) -> None:
            room = RoomState(room_id, name, topic, user_id, now, 0, {user_id: now})
            self._add_room(room)

        room_id = await self.writer.write(
            lambda c: queries.insert_room(c, name, topic, user_id, now), remember
        )
        return self.rooms[room_id]

    async def join(self, room: RoomState, user_id: int) -> None:
        if user_id in room.members:
            return
        now = now_ms()

        def remember(joined_at: int) -> None:
            self._member_added(room, user_id, joined_at)

        await self.writer.write(lambda c: queries.insert_member(c, room.id, user_id, now), remember)

    async def leave(self, room: RoomState, user_id: int) -> None:
        if user_id not in room.members:
            return

        def forget(_: None) -> None:
            if room.members.pop(user_id, None) is not None:
                rooms = self._joined[user_id]
                del rooms[bisect_left(rooms, room.id)]
                if not rooms:
                    del self._joined[user_id]

        await self.writer.write(lambda c: queries.delete_member(c, room.id, user_id), forget)

    # -- messages --------------------------------------------------------------------------

    async def submit_post(
        self, room: RoomState, author: User, text: str, txn_id: str | None
    ) -> Callable[[], Awaitable[tuple[Message, bool]]]:
        """Queue a message for the next commit; returns what to await for (message, created).
        Messages submitted one after another get increasing seqs."""
        now = now_ms()
        out: list[Message] = []

        def publish(result: tuple[Row, bool]) -> None:
            row, created = result
            message = message_json(row, self.users.get(row[3], author))
            out.append(message)
            if not created:
                return
            room.last_seq = message["seq"]
            self.messages_committed += 1
            if room.recent and room.recent[-1]["seq"] == room.last_seq - 1:
                room.recent.append(message)
                if len(room.recent) > self.config.recent_cache:
                    del room.recent[: len(room.recent) - self.config.recent_cache]
            else:
                room.recent = [message]
            for listener in self.listeners:
                listener(message)

        pending = await self.writer.submit(
            lambda c: queries.insert_message(c, room.id, author["id"], text, txn_id, now), publish
        )

        async def committed() -> tuple[Message, bool]:
            _, created = await pending.result()
            return out[0], created

        return committed

    async def sent_message(self, room: RoomState, author: User, txn_id: str) -> Message | None:
        """The committed message `author` sent to `room` with `txn_id`, if there is one."""
        row = await self.readers.read(lambda c: queries.message_by_txn(c, room.id, author["id"], txn_id))
        return None if row is None else message_json(row, author)

    async def messages(self, room: RoomState, first: int, last: int) -> list[Message]:
        """Messages first..last (inclusive, ascending) from memory when it holds them."""
        if first > last:
            return []
        recent = room.recent
        if recent and recent[0]["seq"] <= first and last <= recent[-1]["seq"]:
            base = recent[0]["seq"]
            return recent[first - base : last - base + 1]
        rows = await self.readers.read(lambda c: queries.messages_between(c, room.id, first, last))
        messages = [message_json(row, self.users[row[3]]) for row in rows]
        self._warm(room, messages)
        return messages

    def _warm(self, room: RoomState, messages: list[Message]) -> None:
        """Put messages read from disk in front of the recent cache when they join up with it."""
        joins_at = room.recent[0]["seq"] - 1 if room.recent else room.last_seq
        if not messages or messages[-1]["seq"] != joins_at:
            return
        room.recent = (messages + room.recent)[-self.config.recent_cache :]
