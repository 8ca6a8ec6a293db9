"""Frames between the supervisor and its workers, over one Unix stream socket per worker.

A frame is a 4-byte big-endian length (of what follows), one kind byte and a payload:
`C` a commit (`store.changes.encode(...)`, encoded once and sent to every worker as is),
`J` one orjson object (calls, replies, presence, typing, metrics). A frame larger than
`MAX_FRAME` or cut short breaks the connection: `FrameError`, never a partial message.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncGenerator
from typing import Any

import orjson
import trio

COMMIT = b"C"
JSON = b"J"
MAX_FRAME = 16 * 1024 * 1024
_HEAD = struct.Struct(">I")
_READ = 64 * 1024
_WRITE = 256 * 1024  # bytes of queued frames joined into one write


class FrameError(Exception):
    """The peer sent something that is not a frame: the connection cannot be trusted further."""


def frame(kind: bytes, payload: bytes) -> bytes:
    size = len(payload) + 1
    if size > MAX_FRAME:
        raise FrameError(f"a frame of {size} bytes is over the {MAX_FRAME} byte limit")
    return _HEAD.pack(size) + kind + payload


def commit_frame(encoded: bytes) -> bytes:
    return frame(COMMIT, encoded)


def json_frame(obj: Any) -> bytes:
    return frame(JSON, orjson.dumps(obj))


async def send_commit(stream: trio.abc.SendStream, encoded: bytes) -> None:
    await stream.send_all(commit_frame(encoded))


async def send_json(stream: trio.abc.SendStream, obj: Any) -> None:
    await stream.send_all(json_frame(obj))


def drain(first: bytes, queue: trio.MemoryReceiveChannel[bytes], limit: int = _WRITE) -> bytes:
    """`first` and the frames queued behind it (up to about `limit` bytes) as one write: one
    syscall and one wake-up of the peer for a burst of frames instead of one each."""
    parts = [first]
    size = len(first)
    while size < limit:
        try:
            data = queue.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        parts.append(data)
        size += len(data)
    return first if len(parts) == 1 else b"".join(parts)


async def read_frames(stream: trio.abc.ReceiveStream) -> AsyncGenerator[tuple[bytes, bytes]]:
    """Yield (kind, payload) until the peer closes cleanly between frames. FrameError for an
    oversize frame, an unknown kind, or a close in the middle of one."""
    buffer = bytearray()
    while True:
        while len(buffer) >= _HEAD.size:
            (size,) = _HEAD.unpack_from(buffer)
            if size == 0 or size > MAX_FRAME:
                raise FrameError(f"a frame of {size} bytes (the limit is {MAX_FRAME})")
            if len(buffer) < _HEAD.size + size:
                break
            kind = bytes(buffer[4:5])
            if kind not in (COMMIT, JSON):
                raise FrameError(f"unknown frame kind {kind!r}")
            payload = bytes(buffer[5 : _HEAD.size + size])
            del buffer[: _HEAD.size + size]
            yield kind, payload
        data = await stream.receive_some(max(_READ, _HEAD.size + _wanted(buffer) - len(buffer)))
        if not data:
            if buffer:
                raise FrameError(f"the connection closed in the middle of a frame ({len(buffer)} bytes)")
            return
        buffer += data


def _wanted(buffer: bytearray) -> int:
    return _HEAD.unpack_from(buffer)[0] if len(buffer) >= _HEAD.size else 0


def decode_json(payload: bytes) -> dict[str, Any]:
    """A J frame's object; FrameError if it is not a JSON object."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"a J frame that is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FrameError("a J frame must hold a JSON object")
    return obj
