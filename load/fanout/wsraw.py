"""A lean websocket client for receivers: raw trio socket, hand-written handshake and frame parser.

trio-websocket (wsproto underneath) costs ~20-30 µs of Python per received message, which at tens
of thousands of deliveries a second would make the load generator, not the server, the thing being
measured. This client reads with `receive_some(65536)`, splits every frame in the buffer with a few
byte operations (server frames are unmasked), answers pings with a masked pong, and leaves message
payloads as bytes so the caller can pick out only the fields it needs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import select
import socket
import struct
from collections.abc import Callable

import trio

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
READ_SIZE = 65536

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


class HandshakeError(Exception):
    pass


class ProtocolError(Exception):
    pass


def encode_client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 §5.3: clients must mask)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", n)
    if n:
        key = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    else:
        masked = b""
    return head + mask + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class RawWebSocket:
    """One client websocket on a plain non-blocking socket.

    Frames are handed to `on_text(buf, start, end)` for each complete text message in what has
    arrived (the payload is `buf[start:end]`; the callback must not keep `buf`); control frames
    are handled here (ping → masked pong, close → close reply). Two ways to read:

    - `await read_frames(on_text)`: one trio `receive_some(65536)`; used while connecting.
    - `feed(on_text)`: one non-blocking `recv(65536)` when a `Poller` says the socket is readable;
      used for the measured traffic, so there is no per-socket trio wait (epoll_ctl) per frame.

    Both return False once the connection is over, with `close_code` set (1006 when the peer
    vanished without a close frame).
    """

    __slots__ = (
        "_buf", "_frag", "_frag_op", "close_code", "close_reason", "closed", "pings", "sock", "stream"
    )

    def __init__(self, sock: socket.socket, stream: trio.SocketStream, leftover: bytes) -> None:
        self.sock = sock  # the same socket as stream.socket, for direct non-blocking recv/send
        self.stream = stream
        self._buf = leftover
        self._frag: list[bytes] = []
        self._frag_op = 0
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.pings = 0  # pings answered

    @classmethod
    async def connect(cls, host: str, port: int, path: str, headers: list[tuple[str, str]]) -> RawWebSocket:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tsock = trio.socket.from_stdlib_socket(sock)
        stream = trio.SocketStream(tsock)
        try:
            await tsock.connect((host, port))
            key = base64.b64encode(os.urandom(16))
            lines = [
                f"GET {path} HTTP/1.1",
                f"Host: {host}:{port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key.decode()}",
                "Sec-WebSocket-Version: 13",
            ] + [f"{name}: {value}" for name, value in headers]
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(READ_SIZE)
                if not chunk:
                    raise HandshakeError("connection closed during the handshake")
                data += chunk
                if len(data) > 65536:
                    raise HandshakeError("handshake response head too large")
            head, _, leftover = data.partition(b"\r\n\r\n")
            status_line, *header_lines = head.split(b"\r\n")
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or parts[1] != b"101":
                raise HandshakeError(f"expected 101, got {status_line.decode('latin-1')!r}")
            got = {}
            for line in header_lines:
                name, _, value = line.partition(b":")
                got[name.strip().lower()] = value.strip()
            expect = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            if got.get(b"sec-websocket-accept") != expect:
                raise HandshakeError("bad Sec-WebSocket-Accept")
            return cls(sock, stream, leftover)
        except BaseException:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(encode_client_frame(OP_TEXT, text.encode()))

    async def read_frames(self, on_text: Callable[[bytes, int, int], None]) -> bool:
        """Read once through trio and dispatch every complete frame; False when it is over."""
        if self.closed:
            return False
        try:
            chunk = await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            chunk = b""
        replies = self._process(chunk, on_text)
        if replies:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stream.send_all(replies)
        return not self.closed

    def feed(self, on_text: Callable[[bytes, int, int], None]) -> bool:
        """One non-blocking recv (the socket is readable) and dispatch; False when it is over."""
        if self.closed:
            return False
        try:
            chunk = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            chunk = b""
        replies = self._process(chunk, on_text)
        if replies:
            # control replies are tiny; a full send buffer here means the peer is not reading
            with contextlib.suppress(OSError):
                self.sock.send(replies)
        return not self.closed

    def _process(self, chunk: bytes, on_text: Callable[[bytes, int, int], None]) -> bytes:
        """Split `chunk` (plus any partial frame kept from before) into frames; returns replies."""
        if not chunk:
            self.closed = True
            if self.close_code is None:
                self.close_code = 1006
            return b""
        buf = self._buf + chunk if self._buf else chunk
        pos = 0
        end = len(buf)
        replies = b""
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b1 & 0x80:
                raise ProtocolError("server frames must not be masked")
            n = b1 & 0x7F
            if n < 126:
                start = pos + 2
            elif n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            else:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            stop = start + n
            if stop > end:
                break
            pos = stop
            opcode = b0 & 0x0F
            if b0 & 0x80 and opcode == OP_TEXT:  # the hot path: one unfragmented text message
                on_text(buf, start, stop)
            elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                self._fragment(b0, opcode, buf[start:stop], on_text)
            elif opcode == OP_PING:
                replies += encode_client_frame(OP_PONG, buf[start:stop])
                self.pings += 1
            elif opcode == OP_CLOSE:
                payload = buf[start:stop]
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode("utf-8", "replace")
                self.closed = True
                replies += encode_client_frame(OP_CLOSE, payload[:2])
                break
            # OP_PONG: nothing to do
        self._buf = buf[pos:] if pos < end and not self.closed else b""
        return replies

    def _fragment(
        self, b0: int, opcode: int, payload: bytes, on_text: Callable[[bytes, int, int], None]
    ) -> None:
        if opcode != OP_CONT:
            self._frag_op = opcode
            self._frag = []
        self._frag.append(payload)
        if b0 & 0x80:
            whole = b"".join(self._frag)
            self._frag = []
            if self._frag_op == OP_TEXT:
                on_text(whole, 0, len(whole))

    async def aclose(self, code: int = 1000) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            if not self.closed:
                self.closed = True
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.stream.send_all(encode_client_frame(OP_CLOSE, close_payload(code)))
            await self.stream.aclose()


class Poller:
    """Reads many RawWebSockets from one trio task through a private level-triggered epoll set.

    The task waits for the epoll fd itself to become readable, then `recv`s every ready socket
    directly: per delivered frame that is one recv and a share of one epoll_wait, instead of
    trio's per-socket wait (epoll_ctl register/unregister and a task switch).
    """

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._conns: dict[int, tuple[RawWebSocket, Callable[[bytes, int, int], None]]] = {}
        self.wakeups = 0
        self.reads = 0

    def add(self, ws: RawWebSocket, on_text: Callable[[bytes, int, int], None]) -> None:
        fd = ws.fileno()
        self._conns[fd] = (ws, on_text)
        self._ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP)  # a partial frame stays in ws._buf

    def __len__(self) -> int:
        return len(self._conns)

    async def run(self) -> None:
        ep = self._ep
        conns = self._conns
        while True:
            await trio.lowlevel.wait_readable(ep.fileno())
            self.wakeups += 1
            for fd, _ in ep.poll(0, 4096):
                entry = conns.get(fd)
                if entry is None:
                    continue
                self.reads += 1
                if not entry[0].feed(entry[1]):
                    ep.unregister(fd)
                    del conns[fd]
            await trio.lowlevel.checkpoint()

    def close(self) -> None:
        self._conns.clear()
        self._ep.close()
