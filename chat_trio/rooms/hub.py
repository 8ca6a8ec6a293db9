"""room → subscribers. Fed by the change feed (store/feed.py, `react`), so it only ever sees
durable messages, once each, in seq order, and learns of leaves and revoked tokens committed
anywhere the feed reaches.

Publishing never waits on a subscriber: each frame is serialised and framed once (see
frames.py) and handed to every subscriber's `deliver`, which must not block: a websocket
session writes it straight to an idle socket or queues it in its bounded outbox, and closes
itself (4008) when that is full (rooms/outbox.py, rooms/session.py). Long-poll requests wait on
a per-room event.

In `--workers` mode a `Relay` (set by the worker) tells the supervisor when a user's first
websocket on this worker opens or its last closes, and passes typing on; presence is then the
union of this worker's users and those the supervisor reports online elsewhere, and typing from
other workers reaches this worker's subscribers through `remote_typing`. One process: no relay.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

import trio

from chat_trio.rooms.frames import json_frame, message_frame
from chat_trio.store.changes import Commit, MemberLeft, MessageCommitted, ReadMoved, TokensRevoked
from chat_trio.store.records import JSON, Message, User

CLOSE_GOING_AWAY = 1001
CLOSE_TOKEN_REVOKED = 4001


class Subscriber(Protocol):
    user_id: int
    token_digest: bytes

    def deliver(self, room_id: int, seq: int, frame: bytes) -> None:
        """Queue a message frame without blocking."""

    def deliver_ephemeral(self, frame: bytes) -> None:
        """Queue a frame that may be dropped under pressure (typing)."""

    def send(self, frame: bytes) -> None:
        """Queue a frame that is not about a subscribed room's timeline (e.g. `read`)."""

    def close(self, code: int, reason: str) -> None:
        """Ask the connection to close itself with this code."""

    def room_ended(self, room_id: int) -> None:
        """The subscriber's user left the room: stop its subscription."""


class Relay(Protocol):
    """Where a worker's hub sends what other workers must hear (never blocks)."""

    def presence(self, user_id: int, online: bool) -> None: ...

    def typing(self, room_id: int, user: JSON) -> None: ...


class Hub:
    def __init__(self) -> None:
        self.relay: Relay | None = None
        self._online_elsewhere: set[int] = set()  # reported by the supervisor (workers mode)
        self.rooms: dict[int, set[Subscriber]] = defaultdict(set)
        self.connections: set[Subscriber] = set()
        self._subscribed: dict[Subscriber, set[int]] = defaultdict(set)  # subscriber → its rooms
        self._online: dict[int, int] = defaultdict(int)  # user id → open websockets
        self._sockets: dict[int, set[Subscriber]] = {}  # user id → their open websockets
        self._waiters: dict[int, trio.Event] = {}
        self.closing = False
        self.delivered = 0

    # -- publishing ------------------------------------------------------------------------

    def react(self, commit: Commit) -> None:
        """The feed's reaction: called once per commit, after the state has taken it in."""
        for change in commit.changes:
            match change:
                case MessageCommitted(message, frame):
                    self.publish(message, frame)
                case MemberLeft(room_id, user_id):
                    self.user_left(room_id, user_id)
                case TokensRevoked(digests):
                    self.tokens_revoked(digests)
                case ReadMoved(room_id, user_id, read_seq, _):
                    self.to_user(user_id, {"type": "read", "room_id": room_id, "read_seq": read_seq})

    def publish(self, message: Message, frame: bytes | None = None) -> None:
        """Deliver a message right after the COMMIT that created it; wake its long-polls.
        `frame`: its websocket frame, when the commit arrived with it already encoded."""
        room_id = message["room_id"]
        subscribers = self.rooms.get(room_id)
        if subscribers:
            if frame is None:
                frame = message_frame(message)
            seq = message["seq"]
            for sub in list(subscribers):
                sub.deliver(room_id, seq, frame)
            self.delivered += len(subscribers)
        waiter = self._waiters.pop(room_id, None)
        if waiter is not None:
            waiter.set()

    def to_user(self, user_id: int, frame: JSON) -> None:
        """Send a frame to every open websocket of the user (on this process)."""
        sockets = self._sockets.get(user_id)
        if sockets:
            encoded = json_frame(frame)
            for sub in list(sockets):
                sub.send(encoded)

    def typing(self, room_id: int, user: User, sender: Subscriber) -> None:
        who: JSON = {"id": user["id"], "username": user["username"]}
        self._deliver_typing(room_id, who, sender)
        if self.relay is not None:
            self.relay.typing(room_id, who)

    def remote_typing(self, room_id: int, user: JSON) -> None:
        """Typing relayed from another worker: for every local subscriber of the room."""
        self._deliver_typing(room_id, user, None)

    def _deliver_typing(self, room_id: int, user: JSON, sender: Subscriber | None) -> None:
        subscribers = self.rooms.get(room_id)
        if not subscribers:
            return
        frame = json_frame({"type": "typing", "room_id": room_id, "user": user})
        for sub in list(subscribers):
            if sub is not sender:
                sub.deliver_ephemeral(frame)

    async def wait_for_message(self, room_id: int) -> None:
        """Return when the next message of `room_id` is committed (or the server stops)."""
        if self.closing:
            return
        waiter = self._waiters.get(room_id)
        if waiter is None:
            waiter = self._waiters[room_id] = trio.Event()
        await waiter.wait()

    # -- connections and subscriptions -----------------------------------------------------

    def connect(self, sub: Subscriber) -> None:
        self.connections.add(sub)
        self._sockets.setdefault(sub.user_id, set()).add(sub)
        self._online[sub.user_id] += 1
        if self._online[sub.user_id] == 1 and self.relay is not None:
            self.relay.presence(sub.user_id, True)

    def disconnect(self, sub: Subscriber) -> None:
        if sub not in self.connections:
            return
        self.connections.discard(sub)
        sockets = self._sockets.get(sub.user_id)
        if sockets is not None:
            sockets.discard(sub)
            if not sockets:
                del self._sockets[sub.user_id]
        self._online[sub.user_id] -= 1
        if self._online[sub.user_id] <= 0:
            del self._online[sub.user_id]
            if self.relay is not None:
                self.relay.presence(sub.user_id, False)
        for room_id in list(self._subscribed.get(sub, ())):
            self.unsubscribe(room_id, sub)
        self._subscribed.pop(sub, None)

    def subscribe(self, room_id: int, sub: Subscriber) -> None:
        if sub not in self.connections:  # already closing: nothing more is delivered to it
            return
        self.rooms[room_id].add(sub)
        self._subscribed[sub].add(room_id)

    def unsubscribe(self, room_id: int, sub: Subscriber) -> None:
        subs = self.rooms.get(room_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.rooms[room_id]
        rooms = self._subscribed.get(sub)
        if rooms is not None:
            rooms.discard(room_id)

    def is_online(self, user_id: int) -> bool:
        return user_id in self._online or user_id in self._online_elsewhere

    def set_online_elsewhere(self, user_id: int, online: bool) -> None:
        """The supervisor's word on a user's server-wide presence (workers mode)."""
        if online:
            self._online_elsewhere.add(user_id)
        else:
            self._online_elsewhere.discard(user_id)

    def sockets_of(self, user_id: int) -> int:
        """The user's open (authenticated) websockets."""
        return self._online.get(user_id, 0)

    @property
    def open_websockets(self) -> int:
        return len(self.connections)

    # -- membership and token changes ------------------------------------------------------

    def user_left(self, room_id: int, user_id: int) -> None:
        for sub in list(self.rooms.get(room_id, ())):
            if sub.user_id == user_id:
                self.unsubscribe(room_id, sub)
                sub.room_ended(room_id)

    def tokens_revoked(self, digests: tuple[bytes, ...]) -> None:
        """Close the websockets of tokens that stopped working (4001), in one pass over them."""
        gone = set(digests)
        for sub in list(self.connections):
            if sub.token_digest in gone:
                sub.close(CLOSE_TOKEN_REVOKED, "token revoked")

    def shutdown(self) -> None:
        """Server stopping: wake every long-poll and close every websocket with 1001."""
        self.closing = True
        for waiter in self._waiters.values():
            waiter.set()
        self._waiters.clear()
        for sub in list(self.connections):
            sub.close(CLOSE_GOING_AWAY, "server shutting down")
