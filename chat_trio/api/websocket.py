"""GET /ws: the upgrade, and what each client frame means.

The upgrade request is checked here before trio-websocket sees it (handshake, Origin, the user's
websocket count), so every refusal is an ordinary HTTP answer in the API's error format that
closes its connection at once. After the upgrade the connection belongs to a
`rooms.session.Session` (outbox, heartbeats, acks, lossless resume), which hands each client
frame to `Frames` below: validation, membership and sending, through the same context as REST.
A session lives at most until its token expires (4001).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import trio
from trio_websocket import wrap_server_stream

from chat_trio.api import validate
from chat_trio.api.commands import rate_limited
from chat_trio.api.context import Context, bearer_token
from chat_trio.api.shapes import shapes_for
from chat_trio.errors import APIError
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response
from chat_trio.http.upgrade import SWITCHED, replay_stream, websocket_refusal
from chat_trio.rooms.frames import json_frame
from chat_trio.rooms.session import CLOSE_POLICY, CLOSE_TRY_AGAIN, CloseSocket, Session
from chat_trio.security.ratelimit import TokenBucket
from chat_trio.store.records import JSON, RoomState, User

_INBOX = 16  # inbound messages trio-websocket may buffer before it stops reading
_PONG = json_frame({"type": "pong"})


class Frames:
    """The client frames of the contract (subscribe, unsubscribe, send, typing, ping), for every
    session of one server."""

    def __init__(self, context: Context) -> None:
        self.s = context
        self.shapes = shapes_for(context.config)
        self.typing = TokenBucket(context.config.ws_typing_rate, context.config.ws_typing_burst)  # per user

    async def _catch_up(self) -> None:
        """A frame, like a request, sees every commit acknowledged before it (store/barrier.py)."""
        barrier = self.s.barrier
        if barrier is not None and not barrier.current():
            await barrier.wait()

    async def authenticate(self, token: str) -> tuple[User, bytes, int] | None:
        """(user, token digest, expiry ms) of a live token, for the session. The auth frame
        catches up first, so a token revoked on another worker a moment ago is refused."""
        try:
            await self._catch_up()
        except APIError:
            raise CloseSocket(CLOSE_TRY_AGAIN, "server catching up with recent writes; retry") from None
        found = await self.s.token_session(token)
        if found is None:
            return None
        user, token_digest = found
        expires = self.s.store.token_expiry(token_digest)
        if expires is None:  # revoked while it was being looked up
            return None
        return user, token_digest, expires

    async def handle(self, session: Session, frame: JSON) -> None:
        await self._catch_up()
        kind = frame.get("type")
        shape = self.shapes.frames.get(kind) if isinstance(kind, str) else None
        if shape is None:
            raise APIError(400, "bad_request", "unknown frame type")
        validate.only(frame, ("type", *(f.name for f in shape.fields)))
        values = shape.values(frame)
        if kind == "subscribe":
            await session.subscribe(self._member_room(session, values["room_id"]), values["after"])
        elif kind == "unsubscribe":
            session.unsubscribe(values["room_id"])
        elif kind == "send":
            room = self._member_room(session, values["room_id"])
            text, txn_id = values["text"], values["txn_id"]
            await session.pipeline(
                lambda: self.s.commands.submit_message(session.user_id, room.id, text, txn_id), values["ref"])
        elif kind == "typing":
            room = self._member_room(session, values["room_id"])
            if not self.typing.take(session.user_id):  # over the user's rate: dropped, as under pressure
                self.s.hub.typing(room.id, session.user, session)
        else:  # ping
            session.send(_PONG)

    def _member_room(self, session: Session, room_id: int) -> RoomState:
        room = self.s.visible_room(room_id, session.user)  # a private room of others: not_found
        if session.user_id not in room.members:
            raise CloseSocket(CLOSE_POLICY, f"not a member of room {room_id}")
        return room


_DEFAULT_PORTS = {"http": 80, "https": 443}
_CLOSE = (b"connection", b"close")


def _origin(text: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin such as `https://chat.example.com`, None if it is not
    one (RFC 6454: `null`, another scheme, a path, credentials)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def routes(s: Context) -> list[Route]:
    allowed = {o for o in map(_origin, s.config.ws_origins.split(",")) if o is not None}
    frames = Frames(s)
    behind_proxy = bool(s.config.trusted_proxies.strip())

    def own_origin(request: Request) -> tuple[str, str, int] | None:
        """This server's origin as the browser sees it: the Host header, and the scheme a trusted
        proxy names in X-Forwarded-Proto (it terminates TLS), else http."""
        scheme = "http"
        proto = request.header(b"x-forwarded-proto")
        if behind_proxy and proto is not None:
            scheme = proto.rsplit(b",", 1)[-1].strip().decode("latin-1").lower()
        host = request.header(b"host")
        return None if host is None else _origin(f"{scheme}://{host.decode('latin-1')}")

    def origin_ok(request: Request) -> bool:
        """Scheme, host and port all equal: this server's own origin, or one of --ws-origins."""
        header = request.header(b"origin")
        if header is None:
            return True  # not a browser
        origin = _origin(header.decode("latin-1"))
        return origin is not None and (origin in allowed or origin == own_origin(request))

    async def check_user_cap(token: str | None) -> None:
        """A header token's user at --max-websockets-per-user is refused before the upgrade (a bad
        token is not: it is answered after the upgrade with 1008, as the contract says)."""
        user = await s.user_for_token(token)
        if user is not None and s.hub.sockets_of(user["id"]) >= s.config.max_websockets_per_user:
            refusal = rate_limited(1.0)
            refusal.message = f"too many websockets (at most {s.config.max_websockets_per_user})"
            refusal.headers.append(_CLOSE)
            raise refusal

    async def websocket(request: Request) -> Response:
        refusal = websocket_refusal(request)
        if refusal is not None:
            raise refusal
        if not origin_ok(request):
            raise APIError(403, "forbidden", "origin not allowed", [_CLOSE])
        token = bearer_token(request)
        if token is not None:
            await check_user_cap(token)
        stream = replay_stream(request)  # from here on this handler alone writes the connection
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(s.config.ws_auth_timeout) as handshake:
                ws_request = await wrap_server_stream(
                    nursery, stream, message_queue_size=_INBOX,
                    max_message_size=s.config.ws_max_frame,
                )
                ws = await ws_request.accept(extra_headers=stream.answer_headers)
            if not handshake.cancelled_caught:
                session = Session(ws, stream, config=s.config, hub=s.hub, store=s.store,
                                  authenticate=frames.authenticate, frames=frames)
                await session.run(token)
            nursery.cancel_scope.cancel()
        return Response(SWITCHED)

    return [Route("GET", "/ws", websocket)]
