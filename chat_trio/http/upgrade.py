"""Handing a connection to another protocol after h11 has parsed its Upgrade request.

h11 has already consumed the request head (and maybe the first bytes of the new protocol).
`replay_stream` rebuilds the head and puts it, plus those bytes, in front of the socket, so a
library that wants to do its own handshake (trio-websocket) reads exactly what the client sent.

The stream can also write without waiting (`write_now`), for fan-out: a frame goes straight to
the socket when nothing is queued ahead of it; what does not fit is kept and goes out first on
the next `send_all`, so bytes never interleave.
"""

from __future__ import annotations

import socket

import trio

from chat_trio.http.messages import Request

SWITCHED = 101  # a handler returning this status has taken the connection over


class ReplayStream(trio.abc.Stream):
    def __init__(self, stream: trio.abc.Stream, sock: socket.socket, prefix: bytes) -> None:
        self._stream = stream
        self._sock = sock
        self._prefix = prefix
        self.unsent = b""  # the tail of a `write_now` that did not fit in the socket buffer

    def write_now(self, data: bytes) -> None:
        """Write what the socket takes now; keep the rest for the next `send_all`. The caller
        makes sure no `send_all` is in progress."""
        if self.unsent:
            self.unsent += data
            return
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # the next send_all reports the broken connection
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
        if self.unsent:
            data, self.unsent = self.unsent + bytes(data), b""
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


def replay_stream(request: Request) -> ReplayStream:
    """The raw stream of an Upgrade request, replaying its head and any bytes read past it."""
    assert request.upgrade is not None
    stream, sock, leftover = request.upgrade
    lines = [request.method.encode() + b" " + request.target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return ReplayStream(stream, sock, head + bytes(leftover))
