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
