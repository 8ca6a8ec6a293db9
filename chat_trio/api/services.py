"""What the handlers share: the store, the hub, password hashing, rate limits, and the checks
every authenticated or room-scoped call starts with."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from chat_trio.config import Config
from chat_trio.http.messages import HTTPError, Request
from chat_trio.metrics import Registry
from chat_trio.rooms.hub import Hub
from chat_trio.security.passwords import Passwords
from chat_trio.security.ratelimit import TokenBucket, WindowLimit
from chat_trio.security.tokens import digest
from chat_trio.store.records import JSON, RoomState
from chat_trio.store.store import Store

_BEARER = b"bearer "


def rate_limited(seconds: float) -> HTTPError:
    millis = max(1, math.ceil(seconds * 1000))
    return HTTPError(429, "rate_limited", "too many requests; retry later",
                     headers=[(b"retry-after", str(math.ceil(millis / 1000)).encode())],
                     extra={"retry_after_ms": millis})


def bearer_token(request: Request) -> str | None:
    value = request.header(b"authorization")
    if value is None or value[:7].lower() != _BEARER:
        return None
    return value[7:].strip().decode("latin-1")


@dataclass(eq=False)
class Services:
    config: Config
    store: Store
    hub: Hub
    passwords: Passwords
    metrics: Registry = field(default_factory=Registry)
    login_by_name: WindowLimit = field(init=False)
    login_by_client: WindowLimit = field(init=False)
    registrations: WindowLimit = field(init=False)
    sends: TokenBucket = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        self.login_by_name = WindowLimit(c.login_fail_limit, c.login_fail_window)
        self.login_by_client = WindowLimit(c.login_fail_limit, c.login_fail_window)
        self.registrations = WindowLimit(c.register_limit, c.register_window)  # per client address
        self.sends = TokenBucket(c.send_rate, c.send_burst)

    async def user_for_token(self, token: str | None) -> JSON | None:
        if not token or len(token) > 256:
            return None
        return await self.store.token_user(digest(token))

    async def authenticate(self, request: Request) -> JSON:
        """The caller's user, or 401."""
        user = await self.user_for_token(bearer_token(request))
        if user is None:
            raise HTTPError(401, "unauthorized", "missing, invalid, expired or revoked token",
                            headers=[(b"www-authenticate", b'Bearer realm="chat_trio"')])
        return user

    def room(self, room_id: int) -> RoomState:
        room = self.store.room(room_id)
        if room is None:
            raise HTTPError(404, "not_found", "no such room")
        return room

    def member_room(self, room_id: int, user: JSON) -> RoomState:
        """The room if `user` is a member: 404 if it does not exist, 403 if not a member."""
        room = self.room(room_id)
        if user["id"] not in room.members:
            raise HTTPError(403, "forbidden", "you are not a member of this room")
        return room

    def check_send_rate(self, user: JSON) -> None:
        wait = self.sends.take(user["id"])
        if wait:
            raise rate_limited(wait)
