"""Websocket text frames encoded once, sent to many.

A server's frames are not masked (RFC 6455 §5.1), so the bytes of a frame are the same for
every subscriber: the hub encodes a message frame once and each socket writes those bytes.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

_TEXT_FIN = 0x81


def text_frame(payload: bytes) -> bytes:
    """One complete, unfragmented text frame carrying `payload` (UTF-8)."""
    size = len(payload)
    if size < 126:
        return bytes((_TEXT_FIN, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", _TEXT_FIN, 126, size) + payload
    return struct.pack("!BBQ", _TEXT_FIN, 127, size) + payload


def json_frame(value: Any) -> bytes:
    return text_frame(orjson.dumps(value))


def message_frame_from(encoded_message: bytes) -> bytes:
    """The `{"type": "message", "message": ...}` frame around an already encoded message: the
    same bytes as `json_frame` of that object, without building or walking it again."""
    return text_frame(b'{"type":"message","message":' + encoded_message + b"}")


def message_frame(message: Any) -> bytes:
    return message_frame_from(orjson.dumps(message))


def split_text_frame(data: bytes, at: int) -> tuple[bytes, int]:
    """The complete text frame that starts at `data[at]` and where the next one starts.
    ValueError if there is none."""
    if data[at] != _TEXT_FIN:
        raise ValueError("not a text frame")
    size = data[at + 1]
    head = 2
    if size == 126:
        (size,), head = struct.unpack_from("!H", data, at + 2), 4
    elif size == 127:
        (size,), head = struct.unpack_from("!Q", data, at + 2), 10
    end = at + head + size
    if end > len(data):
        raise ValueError("a text frame cut short")
    return data[at:end], end
