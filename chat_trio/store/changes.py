"""What a committed transaction changed, as small typed records that cross process boundaries.

Every write the group-commit writer runs returns its result and the changes it made; after
COMMIT the writer hands the batch's changes, in commit order, to the feed as one `Commit`
(store/feed.py). `encode`/`decode` turn changes into orjson bytes and back without loss, so a
supervisor can ship them to workers over a socket, or a PostgreSQL node over NOTIFY, and every
process applies the same records the same way. Token digests travel as hex.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from chat_trio.rooms.frames import message_frame_from, split_text_frame
from chat_trio.store.records import Message


@dataclass(frozen=True, slots=True)
class UserCreated:
    kind: ClassVar[str] = "user"
    id: int
    username: str
    created_at: int  # epoch ms

    def pack(self) -> list[Any]:
        return [self.kind, self.id, self.username, self.created_at]

    @classmethod
    def unpack(cls, f: list[Any]) -> UserCreated:
        return cls(f[1], f[2], f[3])


@dataclass(frozen=True, slots=True)
class UserUpdated:
    """A user's operator or deactivated flag changed (an admin created, promoted, demoted, or an
    account closed)."""

    kind: ClassVar[str] = "user_flags"
    id: int
    admin: bool
    deactivated: bool

    def pack(self) -> list[Any]:
        return [self.kind, self.id, self.admin, self.deactivated]

    @classmethod
    def unpack(cls, f: list[Any]) -> UserUpdated:
        return cls(f[1], bool(f[2]), bool(f[3]))


@dataclass(frozen=True, slots=True)
class RoomCreated:
    """A new room (its first members join it by MemberJoined in the same commit). `direct` is a
    direct room's pair of user ids, lower first."""

    kind: ClassVar[str] = "room"
    id: int
    name: str
    topic: str
    created_by: int
    created_at: int  # epoch ms
    visibility: str = "public"
    direct: tuple[int, int] | None = None

    def pack(self) -> list[Any]:
        return [self.kind, self.id, self.name, self.topic, self.created_by, self.created_at,
                self.visibility, None if self.direct is None else list(self.direct)]

    @classmethod
    def unpack(cls, f: list[Any]) -> RoomCreated:
        return cls(f[1], f[2], f[3], f[4], f[5], f[6], None if f[7] is None else (f[7][0], f[7][1]))


@dataclass(frozen=True, slots=True)
class RoomUpdated:
    """A room's name, topic or visibility changed (PATCH); these are its new values."""

    kind: ClassVar[str] = "room_updated"
    id: int
    name: str
    topic: str
    visibility: str

    def pack(self) -> list[Any]:
        return [self.kind, self.id, self.name, self.topic, self.visibility]

    @classmethod
    def unpack(cls, f: list[Any]) -> RoomUpdated:
        return cls(f[1], f[2], f[3], f[4])


@dataclass(frozen=True, slots=True)
class MemberJoined:
    kind: ClassVar[str] = "joined"
    room_id: int
    user_id: int
    joined_at: int  # epoch ms
    role: str = "member"

    def pack(self) -> list[Any]:
        return [self.kind, self.room_id, self.user_id, self.joined_at, self.role]

    @classmethod
    def unpack(cls, f: list[Any]) -> MemberJoined:
        return cls(f[1], f[2], f[3], f[4])


@dataclass(frozen=True, slots=True)
class MemberLeft:
    """A member stopped being one: `reason` is "left", "kicked" or "banned"."""

    kind: ClassVar[str] = "left"
    room_id: int
    user_id: int
    reason: str = "left"

    def pack(self) -> list[Any]:
        return [self.kind, self.room_id, self.user_id, self.reason]

    @classmethod
    def unpack(cls, f: list[Any]) -> MemberLeft:
        return cls(f[1], f[2], f[3])


@dataclass(frozen=True, slots=True)
class RoleChanged:
    kind: ClassVar[str] = "role"
    room_id: int
    user_id: int
    role: str

    def pack(self) -> list[Any]:
        return [self.kind, self.room_id, self.user_id, self.role]

    @classmethod
    def unpack(cls, f: list[Any]) -> RoleChanged:
        return cls(f[1], f[2], f[3])


@dataclass(frozen=True, slots=True)
class Invited:
    kind: ClassVar[str] = "invited"
    room_id: int
    user_id: int
    invited_by: int
    created_at: int  # epoch ms

    def pack(self) -> list[Any]:
        return [self.kind, self.room_id, self.user_id, self.invited_by, self.created_at]

    @classmethod
    def unpack(cls, f: list[Any]) -> Invited:
        return cls(f[1], f[2], f[3], f[4])


@dataclass(frozen=True, slots=True)
class InviteRemoved:
    """An invite was accepted (the join consumed it), declined, withdrawn or voided by a ban."""

    kind: ClassVar[str] = "uninvited"
    room_id: int
    user_id: int

    def pack(self) -> list[Any]:
        return [self.kind, self.room_id, self.user_id]

    @classmethod
    def unpack(cls, f: list[Any]) -> InviteRemoved:
        return cls(f[1], f[2])


@dataclass(frozen=True, slots=True)
class MessageCommitted:
    """A new message with its seq, in its API shape (built once, in the writer's thread), and,
    once it has crossed a socket, its websocket frame as the sender encoded it (so a worker's
    hub sends those bytes rather than serialising the message again)."""

    kind: ClassVar[str] = "message"
    message: Message
    frame: bytes | None = field(default=None, compare=False, repr=False)

    def pack(self) -> list[Any]:
        return [self.kind, self.message]

    @classmethod
    def unpack(cls, f: list[Any]) -> MessageCommitted:
        message: Message = f[1]
        return cls(message)


@dataclass(frozen=True, slots=True)
class ReadMoved:
    """A member's read marker moved forward (PUT /rooms/{id}/read), to `read_seq`, where the
    room had `text_n` text entries (see schema migration 5)."""

    kind: ClassVar[str] = "read"
    room_id: int
    user_id: int
    read_seq: int
    text_n: int

    def pack(self) -> list[Any]:
        return [self.kind, self.room_id, self.user_id, self.read_seq, self.text_n]

    @classmethod
    def unpack(cls, f: list[Any]) -> ReadMoved:
        return cls(f[1], f[2], f[3], f[4])


@dataclass(frozen=True, slots=True)
class TextErased:
    """Text entries of a room whose text was erased (a delete, or an account's erasure): they
    show `"text": ""` and `"deleted": true` from now on, and so do the edits made to them."""

    kind: ClassVar[str] = "erased"
    room_id: int
    seqs: tuple[int, ...]

    def pack(self) -> list[Any]:
        return [self.kind, self.room_id, list(self.seqs)]

    @classmethod
    def unpack(cls, f: list[Any]) -> TextErased:
        return cls(f[1], tuple(f[2]))


@dataclass(frozen=True, slots=True)
class TokenIssued:
    kind: ClassVar[str] = "token"
    digest: bytes  # sha256 of the token
    user_id: int
    expires_at: int  # epoch ms

    def pack(self) -> list[Any]:
        return [self.kind, self.digest.hex(), self.user_id, self.expires_at]

    @classmethod
    def unpack(cls, f: list[Any]) -> TokenIssued:
        return cls(bytes.fromhex(f[1]), f[2], f[3])


@dataclass(frozen=True, slots=True)
class TokensRevoked:
    """Tokens that stopped working: logout, the per-user cap, the purge of expired ones, a
    password change or reset, an ended session, or a closed account."""

    kind: ClassVar[str] = "revoked"
    digests: tuple[bytes, ...]

    def pack(self) -> list[Any]:
        return [self.kind, [d.hex() for d in self.digests]]

    @classmethod
    def unpack(cls, f: list[Any]) -> TokensRevoked:
        return cls(tuple(bytes.fromhex(d) for d in f[1]))


Change = (UserCreated | RoomCreated | MemberJoined | MemberLeft | MessageCommitted | TokenIssued
          | TokensRevoked | RoomUpdated | RoleChanged | Invited | InviteRemoved | UserUpdated
          | ReadMoved | TextErased)
Changes = tuple[Change, ...]
NO_CHANGES: Changes = ()

_KINDS: dict[str, Callable[[list[Any]], Change]] = {
    cls.kind: cls.unpack
    for cls in (UserCreated, RoomCreated, MemberJoined, MemberLeft, MessageCommitted, TokenIssued,
                TokensRevoked, RoomUpdated, RoleChanged, Invited, InviteRemoved, UserUpdated,
                ReadMoved, TextErased)
}


@dataclass(frozen=True, slots=True)
class Commit:
    """The changes of one committed transaction, in the order they were made."""

    changes: Changes


def encode(changes: Iterable[Change]) -> bytes:
    """Bytes for a socket: the websocket frame of each new message, in order, then the orjson
    list of `[kind, fields...]`. Each message is serialised once, for its frame, and that
    encoding is spliced into the list, so the receiver parses it and sends the frame as is."""
    frames: list[bytes] = []
    packed: list[Any] = []
    for change in changes:
        if isinstance(change, MessageCommitted):
            encoded = orjson.dumps(change.message)
            frames.append(message_frame_from(encoded))
            packed.append([change.kind, orjson.Fragment(encoded)])
        else:
            packed.append(change.pack())
    frames.append(orjson.dumps(packed))
    return b"".join(frames)


def decode(data: bytes | str) -> list[Change]:
    """The changes `encode` wrote (or a bare JSON list of them, e.g. a NOTIFY payload), each
    message with its frame. Raises ValueError on anything else."""
    frames: list[bytes] = []
    at = 0
    if isinstance(data, bytes):
        try:
            while data[at] != 0x5B:  # "[": the frames end where the list starts
                frame, at = split_text_frame(data, at)
                frames.append(frame)
        except (IndexError, struct.error) as exc:
            raise ValueError(f"not a commit: {exc}") from None
    items = orjson.loads(data[at:] if at else data)
    if not isinstance(items, list):
        raise ValueError("a change list must be a JSON array")
    try:
        changes = [_KINDS[item[0]](item) for item in items]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"not a change record: {exc}") from None
    if frames:
        messages = [i for i, c in enumerate(changes) if isinstance(c, MessageCommitted)]
        if len(messages) != len(frames):
            raise ValueError("a commit's message frames do not match its messages")
        for i, frame in zip(messages, frames, strict=True):
            changes[i] = MessageCommitted(changes[i].message, frame)  # type: ignore[union-attr]
    return changes
