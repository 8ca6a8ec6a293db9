"""The server's hot, in-memory view of what is committed: users, rooms, memberships, live tokens
and each room's newest messages.

Committed changes reach it only through `apply` (called by the feed, store/feed.py, in commit
order), so a read never sees what is not yet durable and every process fed the same commits
holds the same view. `apply` is idempotent: a worker loads its state from sqlite and then applies
the commits buffered since it subscribed, some of which the load already saw. The only other
mutations fill it from what a reader found on disk (a token not yet cached, older messages that
join up with the recent ones), guarded against racing commits.
"""

from __future__ import annotations

import heapq
import sqlite3
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from typing import cast

from chat_trio.store import queries, timeline
from chat_trio.store.changes import (
    Commit,
    Invited,
    InviteRemoved,
    MemberJoined,
    MemberLeft,
    MessageCommitted,
    ReadMoved,
    RoleChanged,
    RoomCreated,
    RoomUpdated,
    TextErased,
    TokenIssued,
    TokensRevoked,
    UserCreated,
    UserUpdated,
)
from chat_trio.store.queries import name_key
from chat_trio.store.records import Message, RoomState, User, user_json


class State:
    def __init__(self, recent_cache: int) -> None:
        self.recent_cache = recent_cache
        self.users: dict[int, User] = {}
        self.user_ids: dict[str, int] = {}  # lower-cased username → id
        self.rooms: dict[int, RoomState] = {}  # in id order: ids only grow, rooms arrive in commit order
        self.room_ids: dict[str, int] = {}  # queries.name_key(room name) → id
        # Room ids in order, all and per member, so a page of GET /rooms is found by bisection
        # instead of a walk over every room before it (rooms are never deleted).
        self.room_order: list[int] = []
        self.joined: dict[int, list[int]] = {}  # user id → ids of the rooms they are in
        self.public_order: list[int] = []  # ids of the public rooms, in order
        self.invited: dict[int, list[int]] = {}  # user id → ids of the rooms they are invited to
        self.directs: dict[tuple[int, int], int] = {}  # (lower, higher user id) → direct room id
        self.tokens: dict[bytes, tuple[int, int]] = {}  # sha256 → (user id, expires ms)
        self.revocations = 0  # bumped by every revocation; guards the token cache against races
        self.erasures = 0  # bumped by every erasure; guards the message cache against racing reads
        self.messages_committed = 0

    def load(self, conn: sqlite3.Connection) -> None:
        """Fill an empty state with the users, rooms and memberships committed in the database."""
        for user_id, username, created_at, admin, deactivated in queries.load_users(conn):
            self.add_user(user_id, username, created_at)
            self._flag_user(user_id, bool(admin), bool(deactivated))
        for room_id, name, topic, created_by, created_at, last_seq, visibility, a, b in (
                queries.load_rooms(conn)):
            self.add_room(RoomState(room_id, name, topic, created_by, created_at, last_seq, visibility,
                                    None if a is None else (a, b)))
        for room_id, user_id, joined_at, role in queries.load_members(conn):
            self.add_member(self.rooms[room_id], user_id, joined_at, role)
        for room_id, user_id, invited_by, created_at in queries.load_invites(conn):
            self._add_invite(self.rooms[room_id], user_id, invited_by, created_at)
        for room_id, text_count in queries.load_text_counts(conn):
            self.rooms[room_id].text_count = text_count
        for room_id, user_id, read_seq, text_n in queries.load_reads(conn):
            self.rooms[room_id].reads[user_id] = (read_seq, text_n)
        for room_id, seq in timeline.load_deleted(conn):
            self.rooms[room_id].deleted.append(seq)  # ascending

    # -- the feed's consumer ---------------------------------------------------------------

    def apply(self, commit: Commit) -> None:
        """Take in one committed transaction's changes, in order. A change the state already has
        (a room it knows, a message at or below its room's last seq) changes nothing."""
        for change in commit.changes:
            match change:
                case MessageCommitted(message):
                    self._add_message(message)
                case UserCreated(user_id, username, created_at):
                    if user_id not in self.users:  # applied again: keep the flags it has since
                        self.add_user(user_id, username, created_at)
                case RoomCreated(room_id, name, topic, created_by, created_at, visibility, direct):
                    if room_id not in self.rooms:
                        self.add_room(RoomState(room_id, name, topic, created_by, created_at, 0,
                                                visibility, direct))
                case MemberJoined(room_id, user_id, joined_at, role):
                    if (room := self.rooms.get(room_id)) is not None:
                        self.add_member(room, user_id, joined_at, role)
                case MemberLeft(room_id, user_id):
                    if (room := self.rooms.get(room_id)) is not None:
                        self._remove_member(room, user_id)
                case RoomUpdated(room_id, name, topic, visibility):
                    if (room := self.rooms.get(room_id)) is not None:
                        self._update_room(room, name, topic, visibility)
                case RoleChanged(room_id, user_id, role):
                    if (room := self.rooms.get(room_id)) is not None and user_id in room.members:
                        self._set_role(room, user_id, role)
                case Invited(room_id, user_id, invited_by, created_at):
                    if (room := self.rooms.get(room_id)) is not None:
                        self._add_invite(room, user_id, invited_by, created_at)
                case InviteRemoved(room_id, user_id):
                    if (room := self.rooms.get(room_id)) is not None:
                        self._remove_invite(room, user_id)
                case TokenIssued(digest, user_id, expires_at):
                    self.tokens[digest] = (user_id, expires_at)
                case TokensRevoked(digests):
                    self.revocations += 1
                    for digest in digests:
                        self.tokens.pop(digest, None)
                case TextErased(room_id, seqs):
                    if (room := self.rooms.get(room_id)) is not None:
                        self._erase(room, seqs)
                case ReadMoved(room_id, user_id, read_seq, text_n):
                    room = self.rooms.get(room_id)
                    if room is not None and user_id in room.members \
                            and read_seq > room.reads.get(user_id, (0, 0))[0]:
                        room.reads[user_id] = (read_seq, text_n)
                case UserUpdated(user_id, admin, deactivated):
                    self._flag_user(user_id, admin, deactivated)

    def add_user(self, user_id: int, username: str, created_at: int) -> None:
        self.users[user_id] = user_json(user_id, username, created_at)
        self.user_ids[username.lower()] = user_id

    def _flag_user(self, user_id: int, admin: bool, deactivated: bool) -> None:
        """A new user dict rather than a change in place: a caller holding the old one (an
        authenticated request) keeps a consistent view of it."""
        user = self.users.get(user_id)
        if user is not None:
            self.users[user_id] = {**user, "admin": admin, "deactivated": deactivated}

    def add_room(self, room: RoomState) -> None:
        self.rooms[room.id] = room
        insort(self.room_order, room.id)
        for user_id in room.members:
            insort(self.joined.setdefault(user_id, []), room.id)
        if room.direct is not None:
            self.directs[room.direct] = room.id
        elif not room.private:
            insort(self.public_order, room.id)
            # setdefault: of two rooms whose names came to collide (schema migration 2), the
            # older one keeps the key. Only public rooms' names are taken (a private room's
            # name is unique by a key of its own, see queries.room_key).
            self.room_ids.setdefault(name_key(room.name), room.id)

    def _update_room(self, room: RoomState, name: str, topic: str, visibility: str) -> None:
        if not room.private and self.room_ids.get(name_key(room.name)) == room.id:
            del self.room_ids[name_key(room.name)]
        if room.private != (visibility == "private"):
            if visibility == "private":
                _discard(self.public_order, room.id)
            else:
                insort(self.public_order, room.id)
        room.name, room.topic, room.visibility = name, topic, visibility
        if not room.private:
            self.room_ids.setdefault(name_key(name), room.id)

    def add_member(self, room: RoomState, user_id: int, joined_at: int, role: str = "member") -> None:
        if user_id not in room.members:
            insort(self.joined.setdefault(user_id, []), room.id)
            # A new member has read what came before; their join entry then moves the marker to
            # it (queries.next_seq does the same).
            room.reads[user_id] = (room.last_seq, room.text_count)
        room.members[user_id] = joined_at
        self._set_role(room, user_id, role)

    def _set_role(self, room: RoomState, user_id: int, role: str) -> None:
        if role == "member":
            room.roles.pop(user_id, None)
        else:
            room.roles[user_id] = role

    def _remove_member(self, room: RoomState, user_id: int) -> None:
        room.reads.pop(user_id, None)
        room.roles.pop(user_id, None)
        if room.members.pop(user_id, None) is not None:
            _discard_from(self.joined, user_id, room.id)

    def _add_invite(self, room: RoomState, user_id: int, invited_by: int, created_at: int) -> None:
        if user_id not in room.invites:
            insort(self.invited.setdefault(user_id, []), room.id)
        room.invites[user_id] = (invited_by, created_at)

    def _remove_invite(self, room: RoomState, user_id: int) -> None:
        if room.invites.pop(user_id, None) is not None:
            _discard_from(self.invited, user_id, room.id)

    def _add_message(self, message: Message) -> None:
        room = self.rooms.get(message["room_id"])
        seq = message["seq"]
        if room is None or seq <= room.last_seq:
            return
        room.last_seq = seq
        self.messages_committed += 1
        kind = message["kind"]
        if kind == "text":
            room.text_count += 1
        elif kind == "edit":
            self._replace_recent(room, message["target_seq"], text=message["new_text"],
                                 edited_at=message["created_at"])
        if message["author"]["id"] in room.members:  # a member's own entry moves their marker to it
            room.reads[message["author"]["id"]] = (seq, room.text_count)
        recent = room.recent
        if recent and recent[-1]["seq"] == seq - 1:
            recent.append(message)
            if len(recent) > self.recent_cache:
                del recent[: len(recent) - self.recent_cache]
        else:
            room.recent = [message]

    def _replace_recent(self, room: RoomState, seq: int, **fields: object) -> None:
        """Show a cached entry's new state: a new dict, since the old one may be on its way to
        a client."""
        recent = room.recent
        if recent and recent[0]["seq"] <= seq <= recent[-1]["seq"]:
            at = seq - recent[0]["seq"]
            recent[at] = cast(Message, {**recent[at], **fields})

    def _erase(self, room: RoomState, seqs: tuple[int, ...]) -> None:
        """Text entries erased (a delete, an account's erasure): deleted, and their edits too."""
        self.erasures += 1
        for seq in seqs:
            at = bisect_left(room.deleted, seq)
            if at == len(room.deleted) or room.deleted[at] != seq:  # once each: apply is idempotent
                room.deleted.insert(at, seq)
            self._replace_recent(room, seq, text="", deleted=True)
        erased = set(seqs)
        for entry in room.recent:
            if entry["kind"] == "edit" and entry["target_seq"] in erased:
                self._replace_recent(room, entry["seq"], new_text="")
    # -- views -----------------------------------------------------------------------------

    def visible_rooms(self, user_id: int, after: int) -> Iterator[int]:
        """Ids > `after`, ascending, of the rooms `user_id` may see: public ones, theirs and
        those they are invited to (a private room they are neither in nor invited to is not)."""
        lists = [ids[bisect_right(ids, after):] for ids in
                 (self.public_order, self.joined.get(user_id, []), self.invited.get(user_id, []))]
        last = after
        for room_id in heapq.merge(*lists):
            if room_id != last:
                last = room_id
                yield room_id

    # -- filled from reads -----------------------------------------------------------------

    def cache_token(self, digest: bytes, entry: tuple[int, int], revocations: int) -> None:
        """Remember a token a reader found, unless a revocation committed since the read began
        (`revocations` is the counter's value then)."""
        if revocations == self.revocations:
            self.tokens[digest] = entry

    def warm(self, room: RoomState, messages: list[Message]) -> None:
        """Put messages read from disk in front of the recent cache when they join up with it."""
        joins_at = room.recent[0]["seq"] - 1 if room.recent else room.last_seq
        if not messages or messages[-1]["seq"] != joins_at:
            return
        room.recent = (messages + room.recent)[-self.recent_cache :]


def _discard(ids: list[int], room_id: int) -> None:
    """Remove `room_id` from a sorted list of ids, if it is there."""
    at = bisect_left(ids, room_id)
    if at < len(ids) and ids[at] == room_id:
        del ids[at]


def _discard_from(index: dict[int, list[int]], user_id: int, room_id: int) -> None:
    """Remove `room_id` from a user's sorted list of room ids, and the list once it is empty."""
    rooms = index[user_id]
    _discard(rooms, room_id)
    if not rooms:
        del index[user_id]
