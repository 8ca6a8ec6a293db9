"""The JSON shapes of the API's objects (typed), built once from rows, and time formatting."""

from __future__ import annotations

import time
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
    admin: bool  # a server operator
    deactivated: bool  # the account was closed: no login, its username stays reserved


class Message(TypedDict):
    id: int
    room_id: int
    seq: int  # dense per room, assigned at commit
    author: Author
    text: str
    created_at: str
    txn_id: str | None


class Room(TypedDict):
    id: int
    name: str
    topic: str
    created_by: int
    created_at: str
    member_count: int
    last_seq: int


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


def user_json(user_id: int, username: str, created_at: int, admin: bool = False,
              deactivated: bool = False) -> User:
    return {"id": user_id, "username": username, "created_at": iso(created_at), "admin": admin,
            "deactivated": deactivated}


def message_json(row: tuple[Any, ...], author: User | Author) -> Message:
    """A message from a (id, room_id, seq, author_id, text, txn_id, created_at) row."""
    msg_id, room_id, seq, _author_id, text, txn_id, created_at = row
    return {
        "id": msg_id,
        "room_id": room_id,
        "seq": seq,
        "author": {"id": author["id"], "username": author["username"]},
        "text": text,
        "created_at": iso(created_at),
        "txn_id": txn_id,
    }


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

    def json(self) -> Room:
        return {
            "id": self.id,
            "name": self.name,
            "topic": self.topic,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "member_count": len(self.members),
            "last_seq": self.last_seq,
        }
