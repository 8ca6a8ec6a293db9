"""Handing a connection to another protocol after h11 has parsed its Upgrade request.

h11 has already consumed the request head (and maybe the first bytes of the new protocol).
`replay_stream` takes the connection from the request (`Request.take_stream`), rebuilds the head
and puts it, plus those bytes, in front of the socket, so a library that wants to do its own
handshake (trio-websocket) reads exactly what the client sent. The handshake is checked here
first (`websocket_refusal`), so every refusal is the server's own answer in the API's format.

The stream owns the one lock every write goes through: the library's own writes (its handshake,
pongs, close) call `send_all`, which takes it; fan-out writes without waiting (`write_now`) only
while it is free. A frame goes straight to the socket when nothing is queued ahead of it; what
does not fit is kept and goes out first on the next `send_all`, so bytes never interleave.
"""

from __future__ import annotations

import base64
import binascii

import trio

from chat_trio.errors import APIError
from chat_trio.http.types import Request, Upgrade

SWITCHED = 101  # the status logged for a request whose handler took the connection over
_KEY_BYTES = 16  # RFC 6455 §4.2.1: the key is a random 16-byte value, base64-encoded
_VERSION = (b"sec-websocket-version", b"13")  # the only websocket version this server speaks


class ReplayStream(trio.abc.Stream):
    def __init__(self, upgrade: Upgrade, prefix: bytes) -> None:
        self._stream = upgrade.stream
        self._sock = upgrade.sock
        self._prefix = prefix
        self.answer_headers = upgrade.answer_headers  # for the 101 the new protocol writes
        self.lock = trio.StrictFIFOLock()  # held by every send_all; write_now needs it free
        self.unsent = b""  # the tail of a `write_now` that did not fit in the socket buffer

    def write_now(self, data: bytes) -> None:
        """Write what the socket takes now; keep the rest for the next `send_all`. The caller
        makes sure the lock is free (no `send_all` in progress)."""
        if self.unsent:
            self.unsent += data
            return
        try:
            sent = self._sock.send(data)
        except OSError:  # BlockingIOError included; the next send_all reports a broken connection
            sent = 0
        if sent < len(data):
            self.unsent = data[sent:]

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            if max_bytes is None or max_bytes >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self.lock:
            if self.unsent:
                data, self.unsent = self.unsent + bytes(data), b""
            await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


def replay_stream(request: Request) -> ReplayStream:
    """Take the raw stream of an Upgrade request, replaying its head and any bytes read past it."""
    upgrade = request.take_stream()
    lines = [request.method.encode() + b" " + request.target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return ReplayStream(upgrade, head + upgrade.leftover)


def _values(request: Request, name: bytes) -> list[bytes]:
    return [value for key, value in request.headers if key == name]


def _tokens(request: Request, name: bytes) -> set[bytes]:
    """The comma-separated tokens of every `name` header, lower-cased."""
    return {t.strip().lower() for v in _values(request, name) for t in v.split(b",") if t.strip()}


def websocket_refusal(request: Request) -> APIError | None:
    """Why this request is not a valid websocket opening handshake (RFC 6455 §4.2.1), or None.
    Every refusal closes the connection: what follows the head may be websocket frames."""
    close = [(b"connection", b"close")]
    if request.upgrade is None or b"websocket" not in _tokens(request, b"upgrade") \
            or b"upgrade" not in _tokens(request, b"connection"):
        return APIError(400, "bad_request", "this endpoint needs a websocket upgrade "
                         "(Upgrade: websocket, Connection: Upgrade)", close)
    if request.upgrade.http_version != b"1.1":
        return APIError(400, "bad_request", "a websocket upgrade needs HTTP/1.1", close)
    keys = _values(request, b"sec-websocket-key")
    if len(keys) != 1 or not _is_key(keys[0]):
        return APIError(400, "bad_request",
                         "Sec-WebSocket-Key must be one base64-encoded 16-byte value", close)
    versions = _values(request, b"sec-websocket-version")
    if not versions:
        return APIError(400, "bad_request", "Sec-WebSocket-Version is missing; this server speaks 13",
                         [_VERSION, *close])
    if versions != [b"13"]:
        # A version it does not speak (RFC 6455 §4.2.2, §4.4): 426 naming the one it does, and,
        # as every 426 must (RFC 9110 §15.5.22), the protocol to upgrade to.
        return APIError(426, "upgrade_required", "unsupported websocket version; this server speaks 13",
                         [_VERSION, (b"upgrade", b"websocket"), (b"connection", b"upgrade, close")])
    return None


def _is_key(value: bytes) -> bool:
    try:
        return len(base64.b64decode(value.strip(), validate=True)) == _KEY_BYTES
    except (binascii.Error, ValueError):
        return False
