"""What the handlers share: the store, the hub, password hashing, the commands (every write and
server-wide limit, api/commands.py), and the checks every authenticated or room-scoped call
starts with."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from chat_trio.api.commands import WWW_AUTHENTICATE, Commands, no_such_room, not_a_member
from chat_trio.config import Config
from chat_trio.errors import APIError
from chat_trio.http.types import Request
from chat_trio.metrics import Registry
from chat_trio.rooms.hub import Hub
from chat_trio.security.passwords import Passwords
from chat_trio.security.tokens import digest
from chat_trio.store.barrier import ReadBarrier
from chat_trio.store.records import RoomState, User
from chat_trio.store.store import Store
from chat_trio.store.writer import StoreClosed

log = logging.getLogger("chat_trio")
SEEN_EVERY = 60.0  # seconds: a token's last_seen_at is written at most this often (per process)
_SEEN_MAX = 100_000  # tokens remembered before the memo starts over
_BEARER = b"bearer "


def bearer_token(request: Request) -> str | None:
    value = request.header(b"authorization")
    if value is None or value[:7].lower() != _BEARER:
        return None
    return value[7:].strip().decode("latin-1")


@dataclass(eq=False)
class Context:
    config: Config
    store: Store
    hub: Hub
    passwords: Passwords
    commands: Commands
    metrics: Registry = field(default_factory=Registry)
    # What GET /metrics shows; a --workers worker sets it to the supervisor's merged scrape.
    scrape_all: Callable[[], Awaitable[bytes]] | None = None
    # With --workers: holds a request until this worker has applied every commit acknowledged
    # before it arrived (store/barrier.py); None where the state is current when a write returns.
    barrier: ReadBarrier | None = None
    # Token digest → when this process last wrote its last_seen_at (trio clock).
    seen: dict[bytes, float] = field(default_factory=dict)

    async def scrape(self) -> bytes:
        """The Prometheus exposition: every process's with --workers, else this one's."""
        if self.scrape_all is not None:
            return await self.scrape_all()
        return self.metrics.render()

    async def user_for_token(self, token: str | None) -> User | None:
        found = await self.token_session(token)
        return None if found is None else found[0]

    async def token_session(self, token: str | None) -> tuple[User, bytes] | None:
        """The user of a live token and the token's digest (what it is stored, looked up and
        revoked by), hashed once for a caller that needs both; None for a bad token."""
        if not token or len(token) > 256:
            return None
        key = digest(token)
        user = await self.store.token_user(key)
        if user is None:
            return None
        await self._note_seen(key)
        return user, key

    def just_seen(self, key: bytes) -> None:
        """A token was issued with last_seen_at = now: no write for it for a while."""
        if len(self.seen) >= _SEEN_MAX:
            self.seen.clear()
        self.seen[key] = trio.current_time()

    async def _note_seen(self, key: bytes) -> None:
        """Keep a session's last_seen_at current to within SEEN_EVERY, at one queued write per
        token per SEEN_EVERY rather than one per request. Best effort: never fails the request."""
        last = self.seen.get(key)
        if last is not None and trio.current_time() - last < SEEN_EVERY:
            return
        self.just_seen(key)
        with contextlib.suppress(APIError):
            await self.commands.touch_token(key)

    async def authenticate(self, request: Request) -> User:
        """The caller's user, or 401."""
        return (await self.authenticate_session(request))[0]

    async def authenticate_session(self, request: Request) -> tuple[User, bytes]:
        """The caller's user and its token's digest (`token_session`: hashed once), or 401: for
        the calls about the caller's own session (logout, password change, the session list)."""
        found = await self.token_session(bearer_token(request))
        if found is None:
            raise APIError(401, "unauthorized", "missing, invalid, expired or revoked token",
                            headers=[WWW_AUTHENTICATE])
        return found

    def room(self, room_id: int) -> RoomState:
        room = self.store.room(room_id)
        if room is None:
            raise no_such_room()
        return room

    def user(self, user_id: int) -> User:
        """A user by id, or 404."""
        user = self.store.users.get(user_id)
        if user is None:
            raise APIError(404, "not_found", "no such user")
        return user

    def visible_room(self, room_id: int, user: User) -> RoomState:
        """The room if `user` may know of it: 404 if it does not exist, and also if it is private
        and they are neither a member nor invited (its existence is not revealed). A server admin
        knows of every room (it acts as owner in any)."""
        room = self.store.room(room_id)
        if room is None or not (room.visible_to(user["id"]) or user["admin"]):
            raise no_such_room()
        return room

    def member_room(self, room_id: int, user: User) -> RoomState:
        """The room if `user` is a member: 404 as `visible_room`, 403 if not a member."""
        room = self.visible_room(room_id, user)
        if user["id"] not in room.members:
            raise not_a_member()
        return room

    async def purge_tokens(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background task: every `token_purge_interval`, delete expired tokens (else each login's
        row stays until the next start); the feed closes their websockets."""
        task_status.started()
        while True:
            await trio.sleep(self.config.token_purge_interval)
            try:
                await self.store.purge_expired_tokens()
            except StoreClosed:
                return
            except Exception:
                log.exception("purging expired tokens failed; trying again later")
