"""Every write and every server-wide limit decision, behind one interface.

Handlers and websocket frames check what they can from local state (auth, membership, names
taken) and then call `context.commands` for what must be decided in one place: writes, the send /
room-create / registration rate limits and the login policy. One process uses `LocalCommands`
directly; with `--workers` the supervisor runs one for all its workers and each worker's
`RemoteCommands` forwards the same calls to it. So every argument and result is plain data
(ids, strings, User/Message dicts, token digests as bytes, which travel as hex), and passwords
never cross: the caller hashes them in its own process.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Protocol

from chat_trio.config import Config
from chat_trio.errors import APIError
from chat_trio.security.logins import LoginGuard
from chat_trio.security.ratelimit import TokenBucket, WindowLimit
from chat_trio.store import membership, queries
from chat_trio.store.changes import Changes
from chat_trio.store.db import Connection
from chat_trio.store.queries import Conflict, Limited, NotMember
from chat_trio.store.records import Message, RoomState, User
from chat_trio.store.store import Store

# Every 401 names the scheme (RFC 9110 §11.6.1), the login's included.
WWW_AUTHENTICATE = (b"www-authenticate", b'Bearer realm="chat_trio"')


def rate_limited(seconds: float) -> APIError:
    millis = max(1, math.ceil(seconds * 1000))
    return APIError(429, "rate_limited", "too many requests; retry later",
                     headers=[(b"retry-after", str(math.ceil(millis / 1000)).encode())],
                     extra={"retry_after_ms": millis})


def username_taken() -> APIError:
    return APIError(409, "username_taken", "that username is taken")


def room_name_taken() -> APIError:
    return APIError(409, "room_name_taken", "a room with that name exists")


def no_such_room() -> APIError:
    return APIError(404, "not_found", "no such room")


def no_such_user() -> APIError:
    return APIError(404, "not_found", "no such user")


def deactivated(status: int = 409) -> APIError:
    return APIError(status, "deactivated", "this account is deactivated")


def last_admin() -> APIError:
    return APIError(409, "last_admin", "the server must keep at least one admin: promote another first")


def invalid_credentials() -> APIError:
    return APIError(401, "invalid_credentials", "wrong username or password", headers=[WWW_AUTHENTICATE])


_REFUSALS = {"last_admin": last_admin, "deactivated": deactivated, "not_found": no_such_user,
             "password_changed": invalid_credentials}


def refusal(conflict: Conflict) -> APIError:
    """The API's answer to a rule the store enforced inside the transaction (queries.Conflict)."""
    return _REFUSALS.get(str(conflict), username_taken)()
def not_a_member() -> APIError:
    return APIError(403, "forbidden", "you are not a member of this room")


class Commands(Protocol):
    """Writes and server-wide limits. `client` is the caller's address as the per-address limits
    count it (`security.ratelimit.client_network`). Each call returns once the commit it made is
    in the caller's state (read-your-writes)."""

    async def check_writable(self) -> None:
        """APIError 503 `unavailable` if this server cannot accept writes now (its writer has
        stopped, the database is unreachable, a worker lost its supervisor), for GET /healthz.
        Decided from state already held: no write, no database query, no call to a supervisor
        (it tells its workers when its answer changes)."""
        ...

    async def allow_registration(self, client: str) -> None:
        """Count one registration (it costs a password hash) from `client`; APIError 429 when over."""
        ...

    async def create_user(self, username: str, password_hash: str, admin: bool = False) -> User:
        """APIError 409 username_taken."""
        ...

    async def login_allowed(self, username: str, client: str) -> None:
        """Before the password is verified; APIError 429 when the attempt must wait."""
        ...

    async def login_failed(self, username: str, client: str, has_account: bool) -> None: ...

    async def login_succeeded(self, username: str, client: str) -> None:
        """APIError 429 if parallel logins used up the user's limit while this one was hashing."""
        ...

    async def rehash_password(self, user_id: int, password_hash: str) -> None: ...

    async def create_token(self, digest: bytes, user_id: int, client: str = "",
                           verified: str | None = None) -> int:
        """Store a token's hash (revoking the user's oldest beyond the cap); its expiry, epoch ms.
        `client`: the User-Agent its session shows. `verified`: the password hash the login
        checked; if it changed meanwhile, 401 invalid_credentials. A closed account: 403."""
        ...

    async def revoke_token(self, digest: bytes) -> None: ...

    async def set_password(self, user_id: int, password_hash: str, keep: bytes | None = None) -> None:
        """Replace the password and revoke every token of the user but `keep` (a digest)."""
        ...

    async def end_session(self, user_id: int, session_id: str) -> bool:
        """Revoke the user's token with this public id; False if there is none."""
        ...

    async def touch_token(self, digest: bytes) -> None:
        """Note that a token was used (its session's last_seen_at); returns once queued."""
        ...

    async def set_admin(self, user_id: int, admin: bool) -> User:
        """Promote or demote; 409 last_admin when no active admin would remain, 409 deactivated."""
        ...

    async def deactivate(self, user_id: int, erase: bool) -> None:
        """Close the account: tokens revoked, out of every room, login refused; with `erase`
        its texts are erased. 409 last_admin for the last active admin."""
        ...

    async def create_room(self, user_id: int, name: str, topic: str, visibility: str = "public") -> int:
        """The new room's id; APIError 429 over the user's rate, 409 room_name_taken."""
        ...

    async def join(self, room_id: int, user_id: int) -> None:
        """APIError 404 for a private room without an invite (the invite is consumed), 403 banned."""
        ...

    async def leave(self, room_id: int, user_id: int) -> None: ...

    # Room administration: `user_id` acts, on `target_id`. Each checks the actor's role on what
    # is committed (store/membership.py) and refuses with 403, or 404 for a private room the
    # actor may not see.

    async def update_room(self, user_id: int, room_id: int, name: str | None, topic: str | None,
                          visibility: str | None) -> None:
        """APIError 409 room_name_taken."""
        ...

    async def invite(self, user_id: int, room_id: int, target_id: int) -> None:
        """APIError 409 already_member, 403 banned, 429 over the user's invite rate."""
        ...

    async def uninvite(self, user_id: int, room_id: int, target_id: int) -> None: ...

    async def kick(self, user_id: int, room_id: int, target_id: int, reason: str | None) -> None: ...

    async def ban(self, user_id: int, room_id: int, target_id: int, reason: str | None) -> None: ...

    async def unban(self, user_id: int, room_id: int, target_id: int) -> None: ...

    async def set_role(self, user_id: int, room_id: int, target_id: int, role: str) -> None: ...

    async def open_direct(self, user_id: int, other_id: int) -> bool:
        """The pair's direct room, brought back if either left: True if it was created."""
        ...

    async def submit_message(self, user_id: int, room_id: int, text: str,
                             txn_id: str | None) -> Callable[[], Awaitable[tuple[Message, bool]]]:
        """Queue a message for commit (APIError 429 over the send rate); returns what to await for
        (message, created)."""
        ...

    async def edit_message(self, user_id: int, room_id: int, seq: int, text: str,
                           txn_id: str | None) -> Message:
        """Replace the text of the user's message `seq`; the edit entry. An edit counts as a send
        for the rate limit (429); idempotent by txn_id like a send. APIError 403 (not a member,
        not the author), 404 (no such message), 409 not_editable."""
        ...

    async def delete_message(self, user_id: int, room_id: int, seq: int) -> Message:
        """Delete message `seq` (the author's own, or any as a moderator, the owner or a server
        admin); the delete entry. APIError 403, 404, 409 not_editable."""
        ...

    async def mark_read(self, user_id: int, room_id: int, seq: int) -> int:
        """Move the member's read marker forward to `seq` (clamped to the room's last seq); the
        marker after the call. APIError 403 if not a member."""
        ...


async def _replayed(message: Message) -> tuple[Message, bool]:
    return message, False


@contextmanager
def limits_as_429() -> Iterator[None]:
    """A limit the database decided (a PostgreSQL node: Store.shares_limits) answers 429."""
    try:
        yield
    except Limited as exc:
        raise rate_limited(exc.wait) from None


async def _sent_within_limits(sent: Callable[[], Awaitable[tuple[Message, bool]]]) -> tuple[Message, bool]:
    with limits_as_429():
        return await sent()


class LocalCommands:
    """The commands done in this process: the store's writes and the limits kept in memory."""

    def __init__(self, config: Config, store: Store) -> None:
        c = config
        self.config = config
        self.store = store
        self.logins = LoginGuard(c)  # the policy: chat_trio/security/logins.py
        self.registrations = WindowLimit(c.register_limit, c.register_window)  # per client address
        self.sends = TokenBucket(c.send_rate, c.send_burst)  # per user
        self.room_creates = TokenBucket(c.room_create_rate, c.room_create_burst)  # per user
        self.invites = TokenBucket(c.invite_rate, c.invite_burst)  # per user: each may reach someone

    async def check_writable(self) -> None:
        self.store.check_writable()

    # -- accounts --------------------------------------------------------------------------

    async def allow_registration(self, client: str) -> None:
        if self.store.shares_limits:
            if self.config.register_limit > 0:
                with limits_as_429():
                    await self.store.count_event(f"register:{client}", self.config.register_limit,
                                                 self.config.register_window)
            return
        wait = self.registrations.retry_after(client)
        if wait:
            raise rate_limited(wait)
        self.registrations.add(client)

    async def create_user(self, username: str, password_hash: str, admin: bool = False) -> User:
        try:
            return await self.store.create_user(username, password_hash, admin)
        except Conflict:
            raise username_taken() from None

    # On PostgreSQL the login policy's counters are rows every node decides on (a node started
    # after the guesses refuses too); else they are this process's memory. On PostgreSQL the
    # address's attempt bucket in memory is a first gate too: an address over it on this node
    # alone is refused without a transaction, so a login flood does not take the writer's time.

    async def login_allowed(self, username: str, client: str) -> None:
        if self.store.shares_limits:
            if wait := self.logins.attempts.take(client):
                raise rate_limited(wait)
            with limits_as_429():
                await self.store.login_check(username.lower(), client)
        elif wait := self.logins.check(username.lower(), client):
            raise rate_limited(wait)

    async def login_failed(self, username: str, client: str, has_account: bool) -> None:
        if self.store.shares_limits:
            await self.store.login_failed(username.lower(), client, has_account)
        else:
            self.logins.failed(username.lower(), client, account=has_account)

    async def login_succeeded(self, username: str, client: str) -> None:
        if self.store.shares_limits:
            with limits_as_429():
                await self.store.login_succeeded(username.lower(), client)
        elif wait := self.logins.succeeded(username.lower(), client):
            raise rate_limited(wait)

    async def rehash_password(self, user_id: int, password_hash: str) -> None:
        await self.store.rehash_password(user_id, password_hash)

    async def create_token(self, digest: bytes, user_id: int, client: str = "",
                           verified: str | None = None) -> int:
        c = self.config
        try:
            return await self.store.create_token(digest, user_id, int(c.token_ttl * 1000),
                                                 keep=c.max_tokens_per_user, client=client, verified=verified)
        except Conflict as exc:
            raise deactivated(403) if str(exc) == "deactivated" else refusal(exc) from None

    async def revoke_token(self, digest: bytes) -> None:
        await self.store.revoke_token(digest)  # the feed closes its websockets (4001)

    async def set_password(self, user_id: int, password_hash: str, keep: bytes | None = None) -> None:
        # The feed closes the revoked tokens' websockets (4001).
        await self._on_user(user_id, partial(self.store.set_password, user_id, password_hash, keep or b""))

    async def end_session(self, user_id: int, session_id: str) -> bool:
        return await self.store.end_session(user_id, session_id)

    async def touch_token(self, digest: bytes) -> None:
        await self.store.touch_token(digest)

    async def set_admin(self, user_id: int, admin: bool) -> User:
        await self._on_user(user_id, partial(self.store.set_admin, user_id, admin))
        return self._user(user_id)

    async def deactivate(self, user_id: int, erase: bool) -> None:
        await self._on_user(user_id, partial(self.store.deactivate, user_id, erase))

    async def _on_user(self, user_id: int, write: Callable[[], Awaitable[None]]) -> None:
        """A write on an account: 404 for an unknown user, the API's refusal for a rule the store
        enforced (queries.Conflict)."""
        self._user(user_id)
        try:
            await write()
        except Conflict as exc:
            raise refusal(exc) from None

    # -- rooms -----------------------------------------------------------------------------

    async def create_room(self, user_id: int, name: str, topic: str, visibility: str = "public") -> int:
        if visibility == "public" and self.store.room_name_taken(name):
            raise room_name_taken()
        c = self.config
        bucket = None
        if self.store.shares_limits:
            if c.room_create_rate:
                bucket = (f"room:{user_id}", c.room_create_rate, c.room_create_burst)
        elif wait := self.room_creates.take(user_id):  # valid and free: only rooms that would be created
            raise rate_limited(wait)
        try:
            with limits_as_429():
                room = await self.store.create_room(user_id, name, topic, visibility, bucket)
        except Conflict:
            raise room_name_taken() from None
        return room.id

    async def join(self, room_id: int, user_id: int) -> None:
        await self.store.join(self._room(room_id), user_id)

    async def leave(self, room_id: int, user_id: int) -> None:
        await self.store.leave(self._room(room_id), user_id)  # the feed ends the user's subscriptions

    async def update_room(self, user_id: int, room_id: int, name: str | None, topic: str | None,
                          visibility: str | None) -> None:
        actor = self._user(user_id)
        try:
            await self.store.change(
                lambda c, now: membership.update_room(c, room_id, actor, name, topic, visibility, now),
                (room_id,))
        except Conflict:
            raise room_name_taken() from None

    async def invite(self, user_id: int, room_id: int, target_id: int) -> None:
        self._open_account(target_id)
        c = self.config
        bucket = None
        if self.store.shares_limits:
            if c.invite_rate:
                bucket = (f"invite:{user_id}", c.invite_rate, c.invite_burst)
        elif wait := self.invites.take(user_id):
            raise rate_limited(wait)

        def invite(conn: Connection, now: int) -> tuple[None, Changes]:
            if bucket is not None:
                queries.take_token(conn, *bucket, now)
            return membership.invite(conn, room_id, user_id, target_id, now)

        with limits_as_429():
            await self.store.change(invite, (room_id,), limits=queries.bucket_limits(bucket))

    async def uninvite(self, user_id: int, room_id: int, target_id: int) -> None:
        await self.store.change(lambda c, _: membership.uninvite(c, room_id, user_id, target_id), (room_id,))

    async def kick(self, user_id: int, room_id: int, target_id: int, reason: str | None) -> None:
        actor, target = self._user(user_id), self._user(target_id)
        await self.store.change(lambda c, now: membership.kick(c, room_id, actor, target, reason, now),
                                (room_id,))

    async def ban(self, user_id: int, room_id: int, target_id: int, reason: str | None) -> None:
        actor, target = self._user(user_id), self._user(target_id)
        await self.store.change(lambda c, now: membership.ban(c, room_id, actor, target, reason, now),
                                (room_id,))

    async def unban(self, user_id: int, room_id: int, target_id: int) -> None:
        await self.store.change(lambda c, _: membership.unban(c, room_id, user_id, target_id), (room_id,))

    async def set_role(self, user_id: int, room_id: int, target_id: int, role: str) -> None:
        await self.store.change(lambda c, _: membership.set_role(c, room_id, user_id, target_id, role),
                                (room_id,))

    async def open_direct(self, user_id: int, other_id: int) -> bool:
        user, other = self._user(user_id), self._open_account(other_id)
        return await self.store.change(lambda c, now: membership.open_direct(c, user, other, now),
                                       lambda c: membership.direct_room(c, user_id, other_id))

    # -- messages --------------------------------------------------------------------------

    async def submit_message(self, user_id: int, room_id: int, text: str,
                             txn_id: str | None) -> Callable[[], Awaitable[tuple[Message, bool]]]:
        room, user = self._member_room(room_id, user_id), self._user(user_id)
        if self.store.shares_limits:
            sent = await self.store.submit_post(room, user, text, txn_id, self._send_bucket(user_id))
            return partial(_sent_within_limits, sent)
        wait = self.sends.take(user_id)
        if wait:
            # A retry of a send that already committed writes nothing, so the limit does not
            # apply: it gets its original message, as it would have without the limit.
            original = None if txn_id is None else await self.store.sent_message(room, user, txn_id)
            if original is None:
                raise rate_limited(wait)
            return partial(_replayed, original)
        return await self.store.submit_post(room, user, text, txn_id)

    async def edit_message(self, user_id: int, room_id: int, seq: int, text: str,
                           txn_id: str | None) -> Message:
        room, user = self._member_room(room_id, user_id), self._user(user_id)
        if self.store.shares_limits:  # the send bucket, taken in the edit's transaction
            bucket = self._send_bucket(user_id)
            with limits_as_429():
                return await self.store.edit_message(room, user, seq, text, txn_id, bucket)
        wait = self.sends.take(user_id)
        if wait:
            # As for sends: a retry of an edit that committed writes nothing, so it is answered.
            original = None if txn_id is None else await self.store.sent_message(room, user, txn_id)
            if original is None or original["kind"] != "edit" or original["target_seq"] != seq:
                raise rate_limited(wait)
            return original
        return await self.store.edit_message(room, user, seq, text, txn_id)

    async def delete_message(self, user_id: int, room_id: int, seq: int) -> Message:
        # Who may is decided in the delete's transaction (a server admin need not be a member).
        return await self.store.delete_message(self._room(room_id), self._user(user_id), seq)

    async def mark_read(self, user_id: int, room_id: int, seq: int) -> int:
        room = self._member_room(room_id, user_id)
        try:
            return await self.store.mark_read(room, user_id, seq)  # the feed tells their websockets
        except NotMember:
            raise not_a_member() from None

    # -- lookups: a caller checked these already, but a worker's view may lag ------------------

    def _room(self, room_id: int) -> RoomState:
        room = self.store.room(room_id)
        if room is None:
            raise no_such_room()
        return room

    def _member_room(self, room_id: int, user_id: int) -> RoomState:
        """The room if the user is a member; 404 if they may not know of it, else 403."""
        room = self._room(room_id)
        if user_id not in room.members:
            raise no_such_room() if not room.visible_to(user_id) else not_a_member()
        return room

    def _send_bucket(self, user_id: int) -> queries.Bucket | None:
        """The user's send limit as the database keeps it (Store.shares_limits); edits take it too."""
        c = self.config
        return (f"send:{user_id}", c.send_rate, c.send_burst) if c.send_rate else None

    def _user(self, user_id: int) -> User:
        user = self.store.users.get(user_id)
        if user is None:
            raise no_such_user()
        return user

    def _open_account(self, user_id: int) -> User:
        """A user others may bring into a room: 409 deactivated for a closed account."""
        user = self._user(user_id)
        if user["deactivated"]:
            raise deactivated()
        return user
