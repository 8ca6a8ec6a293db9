"""One websocket's live session: authentication, the bounded outbox and its writer, heartbeats,
acks in send order, and lossless subscriptions.

Each session is a hub subscriber: the hub hands it frames without waiting, the session queues
them in a bounded outbox and one writer task sends them. When the outbox is full, typing frames
are dropped first (they are refused once it is half full) and a message frame that does not fit
closes the socket with 4008, so a slow reader resumes with `after` instead of holding memory.

Lossless resume: `subscribe` with `after` registers the live subscription first, then reads the
missed seqs from the store, holding live frames that arrive meanwhile, and forwards the held
ones it has not already sent — no gap and no duplicate.

What each client frame means (validation, membership, sending) is the API's business: the
session hands every parsed frame to its `FrameHandler` (api/websocket.py) and turns an
`APIError` into an `error` frame, a `CloseSocket` into a close.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from chat_trio.config import Config
from chat_trio.errors import APIError
from chat_trio.rooms.frames import json_frame
from chat_trio.rooms.hub import CLOSE_GOING_AWAY, CLOSE_TOKEN_REVOKED, Hub
from chat_trio.rooms.outbox import DirectStream, Outbox
from chat_trio.security.ratelimit import TokenBucket
from chat_trio.store.records import JSON, Message, RoomState, User, now_ms
from chat_trio.store.store import Store

log = logging.getLogger("chat_trio.ws")

GAP_LIMIT = 1000
CLOSE_POLICY = 1008  # auth failed / not a member / too many websockets
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013  # --workers: the worker could not catch up with recent writes in time
CLOSE_TOO_SLOW = 4008
CLOSE_GRACE = 1.0  # seconds a closing socket gets to finish its current frame, then its close handshake
_MAX_IN_FLIGHT = 64  # sends of one socket waiting for their commit

# (message, created) once a send has committed.
Committed = Callable[[], Awaitable[tuple[Message, bool]]]
# token → (user, token digest, expiry in epoch ms), or None when it is not a live token.
Authenticator = Callable[[str], Awaitable[tuple[User, bytes, int] | None]]


class CloseSocket(Exception):
    """End the session with this close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class FrameHandler(Protocol):
    async def handle(self, session: Session, frame: JSON) -> None:
        """Act on one client frame (a JSON object); raise APIError for an `error` frame."""


@dataclass(slots=True)
class _Subscription:
    last_seq: int  # highest seq queued to the client
    held: list[tuple[int, bytes]] | None = field(default_factory=list)  # live frames during replay


class Session:
    """One websocket after its upgrade; implements the hub's Subscriber protocol."""

    def __init__(self, ws: WebSocketConnection, stream: DirectStream, *, config: Config, hub: Hub,
                 store: Store, authenticate: Authenticator, frames: FrameHandler) -> None:
        self.ws = ws
        self.config = config
        self.hub = hub
        self.store = store
        self._authenticator = authenticate
        self._frames = frames
        self.user: User = {"id": 0, "username": "", "created_at": "", "admin": False,
                           "deactivated": False}  # set by _authenticate
        self.user_id = 0
        self.token_digest = b""
        self.subs: dict[int, _Subscription] = {}
        self.outbox = Outbox(stream, config.ws_queue)
        self._scope = trio.CancelScope()  # its deadline is the token's expiry
        self._tasks: trio.Nursery | None = None
        self._in_flight = trio.Semaphore(_MAX_IN_FLIGHT)
        self._acked = trio.Event()  # set once the latest send's ack (or error) is queued
        self._acked.set()
        self._sending: trio.CancelScope | None = None  # the frame being written, if any
        self._closing: tuple[int, str] | None = None
        self._inbound = TokenBucket(config.ws_rate, max(1, int(config.ws_rate * 2)))

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
        self.hub.disconnect(self)  # no more deliveries, and no longer online
        self._scope.cancel()
        if self._sending is not None:
            self._sending.deadline = min(self._sending.deadline, trio.current_time() + CLOSE_GRACE)

    def room_ended(self, room_id: int, reason: str) -> None:
        if self.subs.pop(room_id, None) is not None:
            self.send(json_frame({"type": "unsubscribed", "room_id": room_id, "reason": reason}))

    def send(self, frame: bytes) -> None:
        """Queue a frame; a full outbox closes the socket (4008) rather than grow."""
        if not self.outbox.offer(frame):
            self.close(CLOSE_TOO_SLOW, "too slow; reconnect and resume with after")

    # -- the session ----------------------------------------------------------------------

    async def run(self, header_token: str | None) -> None:
        try:
            with self._scope:
                await self._authenticate(header_token)
                if self.hub.closing:  # shutdown began while it authenticated: it missed the 1001
                    raise CloseSocket(CLOSE_GOING_AWAY, "server shutting down")
                if self.hub.sockets_of(self.user_id) >= self.config.max_websockets_per_user:
                    raise CloseSocket(CLOSE_POLICY, "too many websockets")
                self.hub.connect(self)  # no checkpoint since the count: the cap holds
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
                    except CloseSocket as exc:
                        self.close(exc.code, exc.reason)
                    except ConnectionClosed:
                        pass
                    tasks.cancel_scope.cancel()
        except CloseSocket as exc:
            self._closing = self._closing or (exc.code, exc.reason)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("websocket session failed")
            self._closing = self._closing or (CLOSE_INTERNAL, "internal error")
        finally:
            if self._closing is None and trio.current_time() >= self._scope.deadline:
                self.close(CLOSE_TOKEN_REVOKED, "token expired")
            self.hub.disconnect(self)
            code, reason = self._closing or (1000, "")
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE):
                await self.ws.aclose(code, reason)

    async def _authenticate(self, header_token: str | None) -> None:
        token = header_token
        if token is None:
            with trio.move_on_after(self.config.ws_auth_timeout):
                token = self._auth_frame(await self.ws.get_message())
            if token is None:
                raise CloseSocket(CLOSE_POLICY, "authentication timed out")
        found = await self._authenticator(token)
        if found is None:
            raise CloseSocket(CLOSE_POLICY, "authentication failed")
        self.user, self.token_digest, expires_ms = found
        self.user_id = self.user["id"]
        self._scope.deadline = trio.current_time() + (expires_ms - now_ms()) / 1000

    @staticmethod
    def _auth_frame(raw: str | bytes) -> str:
        if isinstance(raw, bytes):
            raise CloseSocket(CLOSE_POLICY, 'first frame must be a text frame {"type":"auth","token":...}')
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            frame = None
        if not isinstance(frame, dict) or frame.get("type") != "auth" or not isinstance(
            frame.get("token"), str
        ):
            raise CloseSocket(CLOSE_POLICY, 'first frame must be {"type":"auth","token":...}')
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
                await self._frames.handle(self, frame)
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

    # -- what frames do -------------------------------------------------------------------

    async def pipeline(self, submit: Callable[[], Awaitable[Committed]], ref: Any) -> None:
        """Queue a send for commit without waiting for the commit: a client's consecutive sends
        share group commits, and its pings and other frames are not held up. Acks (or errors)
        are queued in the order the sends came; at most _MAX_IN_FLIGHT wait at once."""
        await self._in_flight.acquire()
        try:
            committed = await submit()
        except BaseException:
            self._in_flight.release()
            raise
        assert self._tasks is not None
        previous, self._acked = self._acked, trio.Event()
        self._tasks.start_soon(self._ack, committed, ref, previous, self._acked)

    async def _ack(self, committed: Committed, ref: Any, previous: trio.Event, mine: trio.Event) -> None:
        """Wait for one send's commit and queue its ack, after the previous send's ack."""
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

    def unsubscribe(self, room_id: int) -> None:
        self.subs.pop(room_id, None)
        self.hub.unsubscribe(room_id, self)
        self.send(json_frame({"type": "unsubscribed", "room_id": room_id}))

    async def subscribe(self, room: RoomState, after: int | None) -> None:
        """`subscribed`, then every message after `after` (or a `gap`), then live ones."""
        room_id = room.id
        if room_id in self.subs:  # re-subscribing restarts from the new `after`
            self.subs.pop(room_id)
        last = room.last_seq
        sub = _Subscription(last_seq=last if after is None else after)
        self.subs[room_id] = sub
        self.hub.subscribe(room_id, self)
        self.send(json_frame({"type": "subscribed", "room_id": room_id, "last_seq": last}))
        if after is not None and last - after > GAP_LIMIT:
            self.send(json_frame({"type": "gap", "room_id": room_id, "after": after, "last_seq": last}))
            sub.last_seq = last
        elif after is not None and after < last:
            # Replayed frames wait for room in the outbox (a resume may miss more messages than
            # ws_queue holds); live ones are held meanwhile, and a full hold closes with 4008.
            for message in await self.store.messages(room, after + 1, last):
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
