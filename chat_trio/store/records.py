"""The JSON shapes of the API's objects (typed), built once from rows, and time formatting."""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

JSON = dict[str, Any]  # any JSON object: request bodies, frames, schemas


class Author(TypedDict):
    id: int
    username: str


class User(TypedDict):
    id: int
    username: str
    created_at: str


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
    """A timeline entry: a `text` message, or an `edit` / `delete` of one, whose `text` is a
    human-readable summary. (The keys below are optional: each kind carries its own.)"""

    edited_at: str | None  # text entries only
    deleted: bool  # text entries only
    target_seq: int  # edits and deletes: the text entry they change
    new_text: str  # edits only: the text it now has ("" once the message is deleted)


class RoomFields(TypedDict):
    id: int
    name: str
    topic: str
    created_by: int
    created_at: str
    member_count: int
    last_seq: int


class Room(RoomFields, total=False):
    read_seq: int  # these two only for a member (see RoomState.json)
    unread: int


class Member(TypedDict):
    user: User
    joined_at: str
    online: bool


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-24T19:00:00.123Z."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def user_json(user_id: int, username: str, created_at: int) -> User:
    return {"id": user_id, "username": username, "created_at": iso(created_at)}


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
    entry = message_json(row, users[row[3]])
    kind, _subject_id, _changes, edited_at, deleted, target_seq, new_text = row[7:14]
    if kind == "text":
        entry["edited_at"] = None if edited_at is None else iso(edited_at)
        entry["deleted"] = bool(deleted)
        return entry
    return change_json(entry, kind, target_seq, new_text)


def change_json(entry: Message, kind: str, target_seq: int, new_text: str | None) -> Message:
    """`entry` (a text message's shape) as an `edit` or `delete` entry of message `target_seq`."""
    del entry["edited_at"], entry["deleted"]
    entry["kind"] = kind
    entry["target_seq"] = target_seq
    if kind == "edit":
        entry["new_text"] = new_text or ""
    return entry


@dataclass(slots=True, eq=False)
class RoomState:
    """A room as the server keeps it in memory: its row, its members and its newest messages."""

    id: int
    name: str
    topic: str
    created_by: int
    created_at: int
    last_seq: int
    members: dict[int, int] = field(default_factory=dict)  # user id → joined_at ms
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

    def json(self, viewer: int | None = None) -> Room:
        """The room as `viewer` sees it: a member also gets their read marker and unread count."""
        room: Room = {
            "id": self.id,
            "name": self.name,
            "topic": self.topic,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "member_count": len(self.members),
            "last_seq": self.last_seq,
        }
        if viewer is not None and viewer in self.members:
            room["read_seq"] = self.reads.get(viewer, (self.last_seq, 0))[0]
            room["unread"] = self.unread(viewer)
        return room
