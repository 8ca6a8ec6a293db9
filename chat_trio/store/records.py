"""The JSON shapes of the API's objects (typed), built once from rows, and time formatting."""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import orjson

JSON = dict[str, Any]  # any JSON object: request bodies, frames, schemas


class Author(TypedDict):
    id: int
    username: str


class User(TypedDict):
    id: int
    username: str
    created_at: str
    admin: bool  # a server operator
    deactivated: bool  # the account was closed: no login, its username stays reserved


class _Entry(TypedDict):
    id: int
    room_id: int
    seq: int  # dense per room, assigned at commit
    author: Author
    text: str
    created_at: str
    txn_id: str | None
    kind: str


class Message(_Entry, total=False):
    """A timeline entry: a `text` message, an `edit` or `delete` of one, or a room event
    (`join`, `leave`, `kick`, `ban`, `room_updated`); all but text entries have a human-readable
    summary as `text`, and `author` is who acted. (The keys below are optional: each kind
    carries its own.)"""

    edited_at: str | None  # text entries only
    deleted: bool  # text entries only
    subject: Author | None  # room events only: the user acted on
    changes: RoomChanges  # room_updated only: the new values of the changed fields
    target_seq: int  # edits and deletes: the text entry they change
    new_text: str  # edits only: the text it now has ("" once the message is deleted)


class RoomChanges(TypedDict, total=False):
    name: str
    topic: str
    visibility: str


class _Room(TypedDict):
    id: int
    name: str  # a direct room's is the other user's username, as each viewer sees it
    topic: str
    created_by: int
    created_at: str
    member_count: int
    last_seq: int
    visibility: str  # "public" | "private"
    kind: str  # "room" | "direct"


class Room(_Room, total=False):
    my_role: str  # only for a viewer who is a member, as are the two below
    read_seq: int
    unread: int


class Member(TypedDict):
    user: User
    joined_at: str
    online: bool
    role: str  # "owner" | "moderator" | "member"


class _Invite(TypedDict):
    room_id: int
    user: User
    invited_by: User
    created_at: str


class Invite(_Invite, total=False):
    room: Room  # in GET /invites and `invite` frames


class Ban(TypedDict):
    user: User
    banned_by: User
    reason: str | None
    created_at: str


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-24T19:00:00.123Z."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def user_json(user_id: int, username: str, created_at: int, admin: bool = False,
              deactivated: bool = False) -> User:
    return {"id": user_id, "username": username, "created_at": iso(created_at), "admin": admin,
            "deactivated": deactivated}


def message_json(row: tuple[Any, ...], author: User | Author) -> Message:
    """A text message from a (id, room_id, seq, author_id, text, txn_id, created_at) row."""
    msg_id, room_id, seq, _author_id, text, txn_id, created_at = row[:7]
    return {
        "id": msg_id,
        "room_id": room_id,
        "seq": seq,
        "author": {"id": author["id"], "username": author["username"]},
        "text": text,
        "created_at": iso(created_at),
        "txn_id": txn_id,
        "kind": "text",
        "edited_at": None,
        "deleted": False,
    }


def entry_json(row: tuple[Any, ...], users: Mapping[int, User | Author]) -> Message:
    """Any timeline entry from a row of `queries.MESSAGE_COLUMNS` (the message columns, then
    kind, subject_id, changes, edited_at, deleted, target_seq, new_text)."""
    author = users[row[3]]
    kind, subject_id, changes, edited_at, deleted, target_seq, new_text = row[7:14]
    if kind == "text":
        entry = message_json(row, author)
        entry["edited_at"] = None if edited_at is None else iso(edited_at)
        entry["deleted"] = bool(deleted)
        return entry
    if kind in ("edit", "delete"):
        return change_json(message_json(row, author), kind, target_seq, new_text)
    return event_json(row, author, kind, None if subject_id is None else users[subject_id],
                      None if changes is None else orjson.loads(changes))


def change_json(entry: Message, kind: str, target_seq: int, new_text: str | None) -> Message:
    """`entry` (a text message's shape) as an `edit` or `delete` entry of message `target_seq`."""
    del entry["edited_at"], entry["deleted"]
    entry["kind"] = kind
    entry["target_seq"] = target_seq
    if kind == "edit":
        entry["new_text"] = new_text or ""
    return entry


def event_json(row: tuple[Any, ...], author: User | Author, kind: str, subject: User | Author | None,
               changes: RoomChanges | None) -> Message:
    """A room event from its (id, room_id, seq, author_id, text, txn_id, created_at) row."""
    entry = message_json(row, author)  # then what an event has instead of a text's fields
    del entry["edited_at"], entry["deleted"]
    entry["kind"] = kind
    entry["subject"] = None if subject is None else {"id": subject["id"], "username": subject["username"]}
    if changes is not None:
        entry["changes"] = changes
    return entry


ROLES = ("member", "moderator", "owner")  # in rank order
RANK = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(slots=True, eq=False)
class RoomState:
    """A room as the server keeps it in memory: its row, its members (with their roles), its
    pending invites and its newest messages. A direct room has no name of its own: `direct` is
    its pair of user ids (lower first), and each viewer sees the other's username."""

    id: int
    name: str
    topic: str
    created_by: int
    created_at: int
    last_seq: int
    visibility: str = "public"
    direct: tuple[int, int] | None = None
    members: dict[int, int] = field(default_factory=dict)  # user id → joined_at ms
    roles: dict[int, str] = field(default_factory=dict)  # member id → its role, when not "member"
    invites: dict[int, tuple[int, int]] = field(default_factory=dict)  # invitee → (inviter, at ms)
    recent: list[Message] = field(default_factory=list)  # contiguous seqs ending at last_seq
    text_count: int = 0  # text entries ever committed (deleted ones too)
    # member → (read_seq, text_count when the room's last_seq was read_seq)
    reads: dict[int, tuple[int, int]] = field(default_factory=dict)
    deleted: list[int] = field(default_factory=list)  # seqs of deleted text entries, ascending

    def unread(self, user_id: int) -> int:
        """Text entries past the member's marker that are not deleted: a subtraction and a
        bisection, never a walk over history. None of them is the member's own, since sending
        moves the sender's marker to the message it sent."""
        read_seq, text_n = self.reads.get(user_id, (self.last_seq, self.text_count))
        return self.text_count - text_n - (len(self.deleted) - bisect_right(self.deleted, read_seq))

    @property
    def private(self) -> bool:
        return self.visibility == "private"

    def role(self, user_id: int) -> str | None:
        """The member's role; None for a non-member."""
        if user_id not in self.members:
            return None
        return self.roles.get(user_id, "member")

    def visible_to(self, user_id: int) -> bool:
        """Whether the user may know the room exists: public, or a member, or invited."""
        return self.visibility == "public" or user_id in self.members or user_id in self.invites

    def json(self, viewer: int = 0, users: dict[int, User] | None = None) -> Room:
        """The room as `viewer` sees it (their role, read marker and unread count; a direct room
        named after the other user)."""
        name = self.name
        if self.direct is not None and users is not None:
            others = [u for u in self.direct if u != viewer] or [viewer]
            name = ", ".join(users[u]["username"] for u in others if u in users)
        room: Room = {
            "id": self.id,
            "name": name,
            "topic": self.topic,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "member_count": len(self.members),
            "last_seq": self.last_seq,
            "visibility": self.visibility,
            "kind": "room" if self.direct is None else "direct",
        }
        if viewer in self.members:
            room["my_role"] = self.roles.get(viewer, "member")
            room["read_seq"] = self.reads.get(viewer, (self.last_seq, 0))[0]
            room["unread"] = self.unread(viewer)
        return room
