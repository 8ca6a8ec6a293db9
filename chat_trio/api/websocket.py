"""GET /ws: the live push session of one websocket.

Frames are JSON text (see API.md). Each session is a hub subscriber: the hub hands it frames
without waiting, the session queues them in a bounded outbox and one writer task sends them.
When the outbox is full, typing frames are dropped first (they are refused once it is half
full) and a message frame that does not fit closes the socket with 4008, so a slow reader
resumes with `after` instead of holding memory.

Lossless resume: `subscribe` with `after` registers the live subscription first, then reads the
missed seqs from the store, holding live frames that arrive meanwhile, and forwards the held
ones it has not already sent — no gap and no duplicate.

The upgrade request is checked here before trio-websocket sees it (handshake, Origin, the user's
websocket count), so every refusal is an ordinary HTTP answer in the API's error format that
closes its connection at once. A session lives at most until its token expires (4001).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from chat_trio.api import validate
from chat_trio.api.context import Context, bearer_token, rate_limited
from chat_trio.api.messages import submit_message
from chat_trio.errors import APIError
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response
from chat_trio.http.upgrade import SWITCHED, ReplayStream, replay_stream, websocket_refusal
from chat_trio.rooms.frames import json_frame
from chat_trio.rooms.hub import CLOSE_GOING_AWAY, CLOSE_TOKEN_REVOKED
from chat_trio.rooms.outbox import Outbox
from chat_trio.security.ratelimit import TokenBucket
from chat_trio.security.tokens import digest
from chat_trio.store.records import JSON, now_ms

log = logging.getLogger("chat_trio.ws")

GAP_LIMIT = 1000
CLOSE_POLICY = 1008  # auth failed / not a member / too many websockets
CLOSE_INTERNAL = 1011
CLOSE_TOO_SLOW = 4008
CLOSE_GRACE = 1.0  # seconds a closing socket gets to finish its current frame, then its close handshake
_INBOX = 16  # inbound messages trio-websocket may buffer before it stops reading
_PONG = json_frame({"type": "pong"})
_MAX_IN_FLIGHT = 64  # sends of one socket waiting for their commit


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _room_id(frame: JSON) -> int:
    room_id = frame.get("room_id")
    if not isinstance(room_id, int) or isinstance(room_id, bool) or room_id < 1:
        raise validate.invalid("room_id", "must be a positive integer")
    return room_id


@dataclass(slots=True)
class _Subscription:
    last_seq: int  # highest seq queued to the client
    held: list[tuple[int, bytes]] | None = field(default_factory=list)  # live frames during replay


class Session:
    """One authenticated websocket; implements the hub's Subscriber protocol."""

    def __init__(
        self, context: Context, ws: WebSocketConnection, stream: ReplayStream, typing: TokenBucket
    ) -> None:
        self.s = context
        self.config = context.config
        self.ws = ws
        self.user: JSON = {}
        self.user_id = 0
        self.token_digest = b""
        self.subs: dict[int, _Subscription] = {}
        self.outbox = Outbox(stream, self.config.ws_queue)
        self._typing = typing  # the server's per-user bucket, shared by all of a user's sockets
        self._scope = trio.CancelScope()  # its deadline is the token's expiry
        self._tasks: trio.Nursery | None = None
        self._in_flight = trio.Semaphore(_MAX_IN_FLIGHT)
        self._acked = trio.Event()  # set once the latest send's ack (or error) is queued
        self._acked.set()
        self._sending: trio.CancelScope | None = None  # the frame being written, if any
        self._closing: tuple[int, str] | None = None
        self._inbound = TokenBucket(self.config.ws_rate, max(1, int(self.config.ws_rate * 2)))

    # -- the hub's Subscriber protocol ----------------------------------------------------

    def deliver(self, room_id: int, seq: int, frame: bytes) -> None:
        sub = self.subs.get(room_id)
        if sub is None:
            return
        if sub.held is not None:
            if len(sub.held) >= self.config.ws_queue:
                self.close(CLOSE_TOO_SLOW, "too slow; reconnect and resume with after")
                return
            sub.held.append((seq, frame))
        elif seq > sub.last_seq:
            sub.last_seq = seq
            self.send(frame)

    def deliver_ephemeral(self, frame: bytes) -> None:
        if self.outbox.backlog < self.outbox.capacity // 2:
            self.outbox.offer(frame)

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = (code, reason)
        self.outbox.open = False
        self.s.hub.disconnect(self)  # no more deliveries, and no longer online
        self._scope.cancel()
        if self._sending is not None:
            self._sending.deadline = min(self._sending.deadline, trio.current_time() + CLOSE_GRACE)

    def room_ended(self, room_id: int) -> None:
        if self.subs.pop(room_id, None) is not None:
            self.send(json_frame({"type": "unsubscribed", "room_id": room_id}))

    def send(self, frame: bytes) -> None:
        """Queue a frame; a full outbox closes the socket (4008) rather than grow."""
        if not self.outbox.offer(frame):
            self.close(CLOSE_TOO_SLOW, "too slow; reconnect and resume with after")

    # -- the session ----------------------------------------------------------------------

    async def run(self, header_token: str | None) -> None:
        try:
            with self._scope:
                await self._authenticate(header_token)
                if self.s.hub.sockets_of(self.user_id) >= self.config.max_websockets_per_user:
                    raise _Close(CLOSE_POLICY, "too many websockets")
                self.s.hub.connect(self)  # no checkpoint since the count: the cap holds
                self.send(json_frame({"type": "hello", "user": self.user,
                                  "heartbeat_s": self.config.heartbeat_s}))
                async with trio.open_nursery() as tasks:
                    self._tasks = tasks
                    tasks.start_soon(self._write_loop)
                    tasks.start_soon(self._heartbeat)
                    # Handled here, not below: out of the nursery they would come wrapped in
                    # an ExceptionGroup that the except clauses below do not match.
                    try:
                        await self._read_loop()
                    except _Close as exc:
                        self.close(exc.code, exc.reason)
                    except ConnectionClosed:
                        pass
                    tasks.cancel_scope.cancel()
        except _Close as exc:
            self._closing = self._closing or (exc.code, exc.reason)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("websocket session failed")
            self._closing = self._closing or (CLOSE_INTERNAL, "internal error")
        finally:
            if self._closing is None and trio.current_time() >= self._scope.deadline:
                self.close(CLOSE_TOKEN_REVOKED, "token expired")
            self.s.hub.disconnect(self)
            code, reason = self._closing or (1000, "")
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE):
                await self.ws.aclose(code, reason)

    async def _authenticate(self, header_token: str | None) -> None:
        token = header_token
        if token is None:
            with trio.move_on_after(self.config.ws_auth_timeout):
                token = self._auth_frame(await self.ws.get_message())
            if token is None:
                raise _Close(CLOSE_POLICY, "authentication timed out")
        user = await self.s.user_for_token(token)
        token_digest = digest(token)
        # The store's token cache holds (user id, expires ms) once token_user found it valid.
        cached = self.s.store._tokens.get(token_digest)
        if user is None or cached is None:  # None here: revoked while it was being looked up
            raise _Close(CLOSE_POLICY, "authentication failed")
        self.user, self.user_id, self.token_digest = user, user["id"], token_digest
        self._scope.deadline = trio.current_time() + (cached[1] - now_ms()) / 1000

    @staticmethod
    def _auth_frame(raw: str | bytes) -> str:
        if isinstance(raw, bytes):
            raise _Close(CLOSE_POLICY, 'first frame must be a text frame {"type":"auth","token":...}')
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            frame = None
        if not isinstance(frame, dict) or frame.get("type") != "auth" or not isinstance(
            frame.get("token"), str
        ):
            raise _Close(CLOSE_POLICY, 'first frame must be {"type":"auth","token":...}')
        token: str = frame["token"]
        return token

    async def _write_loop(self) -> None:
        # A frame cut off midway would corrupt the stream and hide the close frame that follows
        # (the peer would see 1007 instead of 4008): once started, a write is shielded from the
        # session's cancellation, bounded by send_timeout, or by CLOSE_GRACE once closing.
        try:
            while True:
                batch = await self.outbox.next_batch()
                deadline = trio.current_time() + self.config.send_timeout
                with trio.CancelScope(shield=True, deadline=deadline) as self._sending:
                    if self._closing is not None:
                        self._sending.deadline = min(deadline, trio.current_time() + CLOSE_GRACE)
                    await self.outbox.write(batch)
                self._sending = None
                if self._closing is None and trio.current_time() >= deadline:
                    self.close(CLOSE_TOO_SLOW, "too slow; reconnect and resume with after")
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            self._scope.cancel()

    async def _ack(
        self,
        committed: Callable[[], Awaitable[tuple[JSON, bool]]],
        ref: Any,
        previous: trio.Event,
        mine: trio.Event,
    ) -> None:
        """Wait for one send's commit and queue its ack, after the previous send's ack, so acks
        come in the order the sends did."""
        try:
            try:
                message, _ = await committed()
                frame = json_frame({"type": "ack", "ref": ref, "message": message})
            except APIError as exc:  # StoreClosed: `unavailable`
                frame = self._error_frame(exc, ref)
            except Exception:
                log.exception("send failed")
                frame = self._error_frame(APIError(500, "internal", "internal error"), ref)
            await previous.wait()
            self.send(frame)
        finally:
            mine.set()
            self._in_flight.release()

    async def _heartbeat(self) -> None:
        interval = self.config.heartbeat_s
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(interval) as waiting:
                try:
                    await self.ws.ping()
                except ConnectionClosed:
                    self._scope.cancel()
                    return
            if waiting.cancelled_caught:
                self.close(CLOSE_GOING_AWAY, "heartbeat timeout")
                return

    async def _read_loop(self) -> None:
        while True:
            raw = await self.ws.get_message()
            ref: Any = None
            try:
                if self._inbound.take(0):
                    raise APIError(429, "rate_limited", "too many frames; slow down")
                frame = self._parse(raw)
                ref = frame.get("ref")
                await self._dispatch(frame)
            except APIError as exc:
                self.send(self._error_frame(exc, ref))

    @staticmethod
    def _error_frame(exc: APIError, ref: Any) -> bytes:
        error: JSON = {"type": "error", "code": exc.code, "message": exc.message}
        if isinstance(ref, (str, int)) and not isinstance(ref, bool):
            error["ref"] = ref
        return json_frame(error)

    @staticmethod
    def _parse(raw: str | bytes) -> JSON:
        if isinstance(raw, bytes):
            raise APIError(400, "bad_request", "frames must be JSON text, not binary")
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise APIError(400, "invalid_json", "frame is not valid JSON") from None
        if not isinstance(frame, dict):
            raise APIError(400, "invalid_json", "frame must be a JSON object")
        return frame

    async def _dispatch(self, frame: JSON) -> None:
        kind = frame.get("type")
        ref = frame.get("ref")
        if ref is not None and not (
            (isinstance(ref, str) and len(ref) <= 64) or (isinstance(ref, int) and not isinstance(ref, bool))
        ):
            raise validate.invalid("ref", "must be a string of at most 64 characters or an integer")
        if kind == "subscribe":
            validate.only(frame, ("type", "room_id", "after", "ref"))
            await self._subscribe(_room_id(frame), frame.get("after"))
        elif kind == "unsubscribe":
            validate.only(frame, ("type", "room_id", "ref"))
            room_id = _room_id(frame)
            self.subs.pop(room_id, None)
            self.s.hub.unsubscribe(room_id, self)
            self.send(json_frame({"type": "unsubscribed", "room_id": room_id}))
        elif kind == "send":
            validate.only(frame, ("type", "room_id", "text", "txn_id", "ref"))
            room = self._member_room(_room_id(frame))
            # Sends are queued for commit in the order they arrive, but their commits are not
            # waited for here: a client's consecutive sends share group commits, and its pings
            # and other frames are not held up. At most _MAX_IN_FLIGHT wait at once.
            await self._in_flight.acquire()
            try:
                committed = await submit_message(self.s, self.user, room, frame)
            except BaseException:
                self._in_flight.release()
                raise
            assert self._tasks is not None
            previous, self._acked = self._acked, trio.Event()
            self._tasks.start_soon(self._ack, committed, ref, previous, self._acked)
        elif kind == "typing":
            validate.only(frame, ("type", "room_id", "ref"))
            room = self._member_room(_room_id(frame))
            if not self._typing.take(self.user_id):  # over the user's rate: dropped, as under pressure
                self.s.hub.typing(room.id, self.user, self)
        elif kind == "ping":
            validate.only(frame, ("type", "ref"))
            self.send(_PONG)
        else:
            raise APIError(400, "bad_request", "unknown frame type")

    def _member_room(self, room_id: int) -> Any:
        room = self.s.room(room_id)
        if self.user_id not in room.members:
            raise _Close(CLOSE_POLICY, f"not a member of room {room_id}")
        return room

    async def _subscribe(self, room_id: int, after: Any) -> None:
        if after is not None and (not isinstance(after, int) or isinstance(after, bool) or after < 0):
            raise validate.invalid("after", "must be a non-negative integer")
        room = self._member_room(room_id)
        if room_id in self.subs:  # re-subscribing restarts from the new `after`
            self.subs.pop(room_id)
        last = room.last_seq
        sub = _Subscription(last_seq=last if after is None else after)
        self.subs[room_id] = sub
        self.s.hub.subscribe(room_id, self)
        self.send(json_frame({"type": "subscribed", "room_id": room_id, "last_seq": last}))
        if after is not None and last - after > GAP_LIMIT:
            self.send(json_frame({"type": "gap", "room_id": room_id, "after": after, "last_seq": last}))
            sub.last_seq = last
        elif after is not None and after < last:
            # Replayed frames wait for room in the outbox (a resume may miss more messages than
            # ws_queue holds); live ones are held meanwhile, and a full hold closes with 4008.
            for message in await self.s.store.messages(room, after + 1, last):
                if self.subs.get(room_id) is not sub:
                    return  # the user left the room meanwhile (`unsubscribed` was sent)
                if message["seq"] > sub.last_seq:
                    sub.last_seq = message["seq"]
                    await self.outbox.put(json_frame({"type": "message", "message": message}))
        assert sub.held is not None
        while sub.held and self.subs.get(room_id) is sub:
            seq, frame = sub.held.pop(0)
            if seq > sub.last_seq:
                sub.last_seq = seq
                await self.outbox.put(frame)
        sub.held = None


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
    typing = TokenBucket(s.config.ws_typing_rate, s.config.ws_typing_burst)
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
                ws = await ws_request.accept()
            if not handshake.cancelled_caught:
                await Session(s, ws, stream, typing).run(token)
            nursery.cancel_scope.cancel()
        return Response(SWITCHED)

    return [Route("GET", "/ws", websocket)]
