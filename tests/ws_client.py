"""Websocket helpers for the /ws tests: a thin wrapper around trio-websocket (header or frame auth,
JSON frames with deadlines, collecting messages up to a seq) and a raw-TCP client that does the
handshake by hand, for peers that must not behave (never read, never answer pings)."""

from __future__ import annotations

import base64
import os
import socket
import struct
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url, wrap_client_stream

DEADLINE = 5.0  # seconds any single expected frame may take


# Frames a server sends besides a room's timeline and the answers to a client's frames (v2): most
# tests are about neither and pass over them (`WS.recv`); the tests of these frames ask for them.
SIDE_FRAMES = frozenset({"presence", "room", "invite"})


class WS:
    """One client websocket speaking the contract's JSON frames."""

    def __init__(self, conn: WebSocketConnection, side: bool = False) -> None:
        self.conn = conn
        self.hello: dict[str, Any] = {}
        self.side = side  # see every frame, the side frames too

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        data = orjson.dumps(frame).decode() if isinstance(frame, dict) else frame
        await self.conn.send_message(data)

    async def recv(self, timeout: float = DEADLINE, keep: str | None = None) -> dict[str, Any]:
        """The next frame (a JSON object sent as text), passing over the side frames about
        rooms, invites and presence (SIDE_FRAMES) other than `keep`'s kind, unless `self.side`
        says to see them all."""
        with trio.fail_after(timeout):
            while True:
                raw = await self.conn.get_message()
                assert isinstance(raw, str), f"binary frame from server: {raw!r}"
                frame = orjson.loads(raw)
                assert isinstance(frame, dict) and isinstance(frame.get("type"), str), frame
                if self.side or frame["type"] not in SIDE_FRAMES or frame["type"] == keep:
                    return frame

    async def expect(self, kind: str, timeout: float = DEADLINE) -> dict[str, Any]:
        frame = await self.recv(timeout, keep=kind)
        assert frame["type"] == kind, f"expected {kind}, got {frame}"
        return frame

    async def request(self, frame: dict[str, Any], kind: str) -> dict[str, Any]:
        await self.send(frame)
        return await self.expect(kind)

    async def barrier(self) -> None:
        """ping → pong: the server answers in order, so every frame it had queued before (e.g. a
        message published by a REST call that already returned) would come first."""
        await self.request({"type": "ping"}, "pong")

    async def subscribe(self, room_id: int, after: int | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "subscribe", "room_id": room_id}
        if after is not None:
            frame["after"] = after
        subscribed = await self.request(frame, "subscribed")
        assert subscribed["room_id"] == room_id
        return subscribed

    async def messages_until(self, seq: int, timeout: float = DEADLINE) -> list[dict[str, Any]]:
        """Message objects of `message` frames up to (and including) the one with `seq`; any
        other frame on the way fails."""
        out: list[dict[str, Any]] = []
        with trio.fail_after(timeout):
            while not out or out[-1]["seq"] < seq:
                frame = await self.expect("message")
                out.append(frame["message"])
        return out

    async def closed(self, timeout: float = DEADLINE) -> tuple[int, list[dict[str, Any]]]:
        """Read until the server closes; return the close code and the frames read before it."""
        frames: list[dict[str, Any]] = []
        with trio.fail_after(timeout):
            while True:
                try:
                    raw = await self.conn.get_message()
                except ConnectionClosed as exc:
                    assert exc.reason is not None
                    return int(exc.reason.code), frames
                frame = orjson.loads(raw)
                if self.side or frame.get("type") not in SIDE_FRAMES:
                    frames.append(frame)


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


@asynccontextmanager
async def connect(
    port: int,
    token: str | None = None,
    *,
    auth: str = "header",
    hello: bool = True,
    headers: list[tuple[bytes, bytes]] | None = None,
    **kw: Any,
) -> AsyncIterator[WS]:
    """A websocket to /ws. auth="header" sends the token in Authorization, "frame" as the first
    frame, "none" not at all. With hello=True the hello frame is read (and kept in ws.hello)."""
    extra = list(headers or [])
    if token is not None and auth == "header":
        extra.append((b"authorization", b"Bearer " + token.encode()))
    async with open_websocket_url(ws_url(port), extra_headers=extra, connect_timeout=DEADLINE,
                                  disconnect_timeout=DEADLINE, **kw) as conn:
        ws = WS(conn)
        if token is not None and auth == "frame":
            await ws.send({"type": "auth", "token": token})
        if hello:
            ws.hello = await ws.expect("hello")
        yield ws

async def small_window_stream(port: int, rcvbuf: int = 4096) -> trio.SocketStream:
    """A TCP connection whose receive buffer is small (set before connect, so the window stays
    small): a peer that stops reading blocks the server's writes quickly."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def open_slow(nursery: trio.Nursery, port: int, token: str) -> WS:
    """A trio-websocket client over a small-window socket that buffers one message only: as
    long as nobody calls recv(), it soon stops reading from TCP."""
    stream = await small_window_stream(port)
    conn = await wrap_client_stream(
        nursery, stream, f"127.0.0.1:{port}", "/ws", message_queue_size=1,
        extra_headers=[(b"authorization", b"Bearer " + token.encode())],
    )
    return WS(conn)


# -- raw websocket over TCP ----------------------------------------------------------------------


def upgrade_request(
    port: int,
    *,
    path: str = "/ws",
    version: str = "1.1",
    drop: Collection[str] = (),
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The bytes of a websocket upgrade request (a fresh key), without the standard headers named
    in `drop`, plus `headers`: the one builder for every hand-made handshake, good or broken."""
    key = base64.b64encode(os.urandom(16)).decode()
    standard = [("Host", f"127.0.0.1:{port}"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    lines = [f"GET {path} HTTP/{version}"]
    lines += [f"{name}: {value}" for name, value in standard if name not in drop]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def split_handshake_reply(data: bytes) -> tuple[int, bytes, bytes]:
    """(status, response head, bytes after it) of what a server answered an upgrade request;
    status 0 when it is not an HTTP/1.1 response."""
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, head, rest


async def raw_handshake(
    port: int, *, headers: list[tuple[str, str]] | None = None, timeout: float = DEADLINE
) -> tuple[trio.SocketStream, int, bytes, bytes]:
    """Send an Upgrade request by hand; return (stream, status, response head, bytes after it)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    data = b""
    with trio.fail_after(timeout):
        await stream.send_all(upgrade_request(port, headers=headers or ()))
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    return stream, *split_handshake_reply(data)


def raw_handshake_sync(
    sock: socket.socket, port: int, *, headers: list[tuple[str, str]] | None = None
) -> tuple[int, bytes, bytes]:
    """`raw_handshake` on a connected blocking socket (for the synchronous fuzz tests; the
    socket's own timeout bounds each read): (status, response head, bytes after it)."""
    sock.sendall(upgrade_request(port, headers=headers or ()))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return split_handshake_reply(data)


def client_frame(payload: bytes, opcode: int = 0x1, *, fin: bool = True, rsv: int = 0) -> bytes:
    """One masked client frame: final and without RSV bits unless told (the fuzz sends any)."""
    mask = os.urandom(4)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Parse unmasked server frames: ([(opcode, payload), ...], unparsed rest)."""
    frames: list[tuple[int, bytes]] = []
    while len(data) >= 2:
        opcode, n = data[0] & 0x0F, data[1] & 0x7F
        at = 2
        if n == 126:
            if len(data) < 4:
                break
            n, at = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            if len(data) < 10:
                break
            n, at = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < at + n:
            break
        frames.append((opcode, data[at : at + n]))
        data = data[at + n :]
    return frames, data
