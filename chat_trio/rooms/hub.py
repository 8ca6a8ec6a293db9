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
from chat_trio.store.changes import (
    Commit,
    Invited,
    MemberJoined,
    MemberLeft,
    MessageCommitted,
    ReadMoved,
    RoomCreated,
    RoomUpdated,
    TokensRevoked,
)
from chat_trio.store.records import JSON, Message, RoomState, User
from chat_trio.store.state import State
from chat_trio.store.views import invite_view, room_view

CLOSE_GOING_AWAY = 1001
CLOSE_TOKEN_REVOKED = 4001


class Subscriber(Protocol):
    user_id: int
    token_digest: bytes

    def deliver(self, room_id: int, seq: int, frame: bytes) -> None:
        """Queue a message frame without blocking."""

    def deliver_ephemeral(self, frame: bytes) -> None:
        """Queue a frame that may be dropped under pressure (typing)."""

    def close(self, code: int, reason: str) -> None:
        """Ask the connection to close itself with this code."""

    def room_ended(self, room_id: int, reason: str) -> None:
        """The subscriber's user stopped being a member ("left", "kicked", "banned"): stop its
        subscription."""

    def send(self, frame: bytes) -> None:
        """Queue a frame that must not be dropped (room, invite, presence, read), without blocking."""


class Relay(Protocol):
    """Where a worker's hub sends what other workers must hear (never blocks)."""

    def presence(self, user_id: int, online: bool) -> None: ...

    def typing(self, room_id: int, user: JSON) -> None: ...


class Hub:
    def __init__(self) -> None:
        self.state: State | None = None  # set once the store is open: who may see what
        self.relay: Relay | None = None
        self._online_elsewhere: set[int] = set()  # reported by the supervisor (workers mode)
        self.rooms: dict[int, set[Subscriber]] = defaultdict(set)
        self.connections: set[Subscriber] = set()
        self._subscribed: dict[Subscriber, set[int]] = defaultdict(set)  # subscriber → its rooms
        self._sockets: dict[int, set[Subscriber]] = {}  # user id → their open websockets
        self._waiters: dict[int, trio.Event] = {}
        self.closing = False
        self.delivered = 0

    # -- publishing ------------------------------------------------------------------------

    def react(self, commit: Commit) -> None:
        """The feed's reaction: called once per commit, after the state has taken it in."""
        created: tuple[int, ...] = ()  # rooms this commit created (their joins need no frame)
        for change in commit.changes:
            match change:
                case MessageCommitted(message, frame):
                    self.publish(message, frame)
                case MemberLeft(room_id, user_id, reason):
                    self.user_left(room_id, user_id, reason)
                case TokensRevoked(digests):
                    self.tokens_revoked(digests)
                case ReadMoved(room_id, user_id, read_seq, _):
                    self.to_user(user_id, {"type": "read", "room_id": room_id, "read_seq": read_seq})
                case RoomCreated(room_id):
                    created += (room_id,)
                    self._room_frames(room_id, "created")
                case RoomUpdated(room_id):
                    self._room_frames(room_id, "updated")
                case MemberJoined(room_id, user_id) if room_id not in created:
                    self._room_frames(room_id, "updated", only=user_id)
                case Invited(room_id, user_id):
                    self._invite_frame(room_id, user_id)

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

    def _room_frames(self, room_id: int, event: str, only: int | None = None) -> None:
        """`room` frames to every connection whose user can see the room (public: everyone;
        private: its members, not its invitees, who got theirs in the `invite` frame), each
        shaped for its user (their role, a direct room's name); with `only`, to that user alone
        (someone who joined a private room sees it appear)."""
        room = self.state.rooms.get(room_id) if self.state is not None else None
        if room is None or (only is not None and not room.private):  # a public room: seen already
            return
        shared: bytes | None = None  # one frame for every non-member
        for sub in list(self.connections if only is None else self._sockets.get(only, ())):
            viewer = sub.user_id
            if room.private and viewer not in room.members:
                continue
            if viewer in room.members or room.direct is not None:
                sub.send(self._room_frame(room, event, viewer))
            else:
                if shared is None:
                    shared = self._room_frame(room, event, viewer)
                sub.send(shared)

    def _room_frame(self, room: RoomState, event: str, viewer: int) -> bytes:
        assert self.state is not None
        return json_frame({"type": "room", "event": event, "room": room_view(self.state, room, viewer)})

    def _invite_frame(self, room_id: int, user_id: int) -> None:
        """An `invite` frame to each of the invitee's connections."""
        state = self.state
        room = state.rooms.get(room_id) if state is not None else None
        if state is None or room is None or user_id not in room.invites:
            return
        subs = list(self._sockets.get(user_id, ()))
        if subs:
            frame = json_frame({"type": "invite", "invite": invite_view(state, room, user_id, True)})
            for sub in subs:
                sub.send(frame)

    def _presence(self, user_id: int, online: bool) -> None:
        """A user came online (first websocket anywhere) or went offline (last one closed):
        `presence` frames to the subscribers of every room they are a member of."""
        state = self.state
        if state is None:
            return
        user = state.users.get(user_id)
        who: JSON = {"id": user_id, "username": "" if user is None else user["username"]}
        for room_id in state.joined.get(user_id, ()):
            subscribers = self.rooms.get(room_id)
            if subscribers:
                frame = json_frame({"type": "presence", "room_id": room_id, "user": who, "online": online})
                for sub in list(subscribers):
                    sub.send(frame)

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
        sockets = self._sockets.setdefault(sub.user_id, set())
        sockets.add(sub)
        if len(sockets) == 1:
            if self.relay is not None:
                self.relay.presence(sub.user_id, True)
            if sub.user_id not in self._online_elsewhere:
                self._presence(sub.user_id, True)

    def disconnect(self, sub: Subscriber) -> None:
        if sub not in self.connections:
            return
        self.connections.discard(sub)
        for room_id in list(self._subscribed.get(sub, ())):
            self.unsubscribe(room_id, sub)
        self._subscribed.pop(sub, None)
        sockets = self._sockets.get(sub.user_id, set())
        sockets.discard(sub)
        if not sockets:
            self._sockets.pop(sub.user_id, None)
            if self.relay is not None:
                self.relay.presence(sub.user_id, False)
            if sub.user_id not in self._online_elsewhere and not self.closing:
                self._presence(sub.user_id, False)

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
        return user_id in self._sockets or user_id in self._online_elsewhere

    def set_online_elsewhere(self, user_id: int, online: bool) -> None:
        """The supervisor's word on a user's server-wide presence (workers mode)."""
        before = self.is_online(user_id)
        if online:
            self._online_elsewhere.add(user_id)
        else:
            self._online_elsewhere.discard(user_id)
        if self.is_online(user_id) != before:
            self._presence(user_id, online)

    def sockets_of(self, user_id: int) -> int:
        """The user's open (authenticated) websockets."""
        return len(self._sockets.get(user_id, ()))

    @property
    def open_websockets(self) -> int:
        return len(self.connections)

    # -- membership and token changes ------------------------------------------------------

    def user_left(self, room_id: int, user_id: int, reason: str = "left") -> None:
        for sub in list(self.rooms.get(room_id, ())):
            if sub.user_id == user_id:
                self.unsubscribe(room_id, sub)
                sub.room_ended(room_id, reason)

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
