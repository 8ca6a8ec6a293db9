"""The JSON shapes of the API's objects, built once from rows, and time formatting."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-24T19:00:00.123Z."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def user_json(user_id: int, username: str, created_at: int) -> JSON:
    return {"id": user_id, "username": username, "created_at": iso(created_at)}


def message_json(row: tuple[Any, ...], author: JSON) -> JSON:
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
    recent: list[JSON] = field(default_factory=list)  # contiguous seqs ending at last_seq

    def json(self) -> JSON:
        return {
            "id": self.id,
            "name": self.name,
            "topic": self.topic,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "member_count": len(self.members),
            "last_seq": self.last_seq,
        }
