"""Handing a connection to another protocol after h11 has parsed its Upgrade request.

h11 has already consumed the request head (and maybe the first bytes of the new protocol).
`replay_stream` rebuilds the head and puts it, plus those bytes, in front of the socket, so a
library that wants to do its own handshake (trio-websocket) reads exactly what the client sent.
"""

from __future__ import annotations

import trio

from chat_trio.http.messages import Request

SWITCHED = 101  # a handler returning this status has taken the connection over


class ReplayStream(trio.abc.Stream):
    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

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
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


def replay_stream(request: Request) -> ReplayStream:
    """The raw stream of an Upgrade request, replaying its head and any bytes read past it."""
    assert request.upgrade is not None
    stream, leftover = request.upgrade
    lines = [request.method.encode() + b" " + request.target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return ReplayStream(stream, head + bytes(leftover))
