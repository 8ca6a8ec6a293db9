"""Raw HTTP for the tests, the one module for it: send bytes on a plain socket, see exactly what
came back and whether the server closed the connection, and split a byte stream into responses."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from tests.client import Reply


@dataclass
class RawResponse(Reply):
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def parse_head(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]], int] | None:
    """The status line and headers at the start of `raw`: (status, [(lowercased name, value)],
    offset of the body); None when `raw` does not start with a complete response head."""
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0 or not raw.startswith(b"HTTP/1.1 "):
        return None
    lines = raw[:head_end].split(b"\r\n")
    raw_headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        raw_headers.append((name.strip().lower(), value.strip()))
    return int(lines[0].split()[1]), raw_headers, head_end + 4


def parse_one(raw: bytes, *, head_only: bool = False) -> tuple[RawResponse | None, bytes]:
    """The first complete response in `raw` (framed by Content-Length, as this server does) and the
    bytes after it; (None, raw) when no complete response is there yet."""
    parsed = parse_head(raw)
    if parsed is None:
        return None, raw
    status, raw_headers, start = parsed
    headers = dict(raw_headers)
    length = 0 if head_only or status in (204, 304) else int(headers.get(b"content-length", b"0"))
    if len(raw) < start + length:
        return None, raw
    return RawResponse(status, headers, raw[start:start + length], raw_headers), raw[start + length:]


def statuses(raw: bytes) -> list[int]:
    """Status codes of every response in a raw byte stream, in order. Responses are framed by
    their Content-Length, so a body not ending in CRLF does not hide the next status line; a
    last body cut short still counts its status."""
    out: list[int] = []
    while (parsed := parse_head(raw)) is not None:
        status, raw_headers, start = parsed
        out.append(status)
        raw = raw[start + int(dict(raw_headers).get(b"content-length", b"0")):]
    return out


def parse_responses(raw: bytes, *, head_only: bool = False) -> tuple[list[RawResponse], bytes]:
    """Every complete response in a byte stream, in order, and the bytes left over."""
    out: list[RawResponse] = []
    while True:
        response, raw = parse_one(raw, head_only=head_only)
        if response is None:
            return out, raw
        out.append(response)


class RawConn:
    """One raw TCP connection to the server."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.closed = False

    @classmethod
    async def open(cls, port: int) -> RawConn:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        try:
            chunk = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    async def read_response(self, timeout: float = 5.0, *, head_only: bool = False) -> RawResponse:
        """Read exactly one response (fails the test if none arrives within `timeout`)."""
        with trio.fail_after(timeout):
            while True:
                response, self.buffer = parse_one(self.buffer, head_only=head_only)
                if response is not None:
                    return response
                if not await self._fill():
                    raise AssertionError(f"server closed before a full response: {self.buffer!r}")

    async def read_until_closed(self, timeout: float = 5.0) -> bytes:
        """Everything the server still sends before it closes; fails if it does not close in time."""
        with trio.fail_after(timeout):
            while await self._fill():
                pass
        data, self.buffer = self.buffer, b""
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


async def read_until_closed(stream: trio.abc.ReceiveStream, into: list[bytes]) -> None:
    """Append what the server sends to `into` until it closes (or resets) the connection (for a
    stream that is not a RawConn, e.g. after a websocket handshake)."""
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return
        if not chunk:
            return
        into.append(bytes(chunk))


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send raw bytes and read until the server closes or `timeout` passes.
    Returns (everything received, whether the server closed the connection)."""
    conn = await RawConn.open(port)
    try:
        await conn.send(data)
        with trio.move_on_after(timeout):
            while await conn._fill():
                pass
        return conn.buffer, conn.closed
    finally:
        await conn.aclose()


def get(path: str = "/healthz", *extra: str, version: str = "1.1", method: str = "GET") -> bytes:
    head = f"{method} {path} HTTP/{version}\r\nHost: test\r\n" + "".join(h + "\r\n" for h in extra)
    return head.encode() + b"\r\n"


def assert_error_body(response: RawResponse, code: str | None = None) -> None:
    """The API's error format: {"error": {"code": str, "message": str}}, as JSON."""
    assert response.headers[b"content-type"] == b"application/json"
    body = response.json
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


def only_error(raw: bytes, status: int, code: str | None = None) -> RawResponse:
    """`raw` holds exactly one response, an error with `status` (and `code`) in the API's format."""
    responses, _ = parse_responses(raw)
    assert [r.status for r in responses] == [status]
    assert_error_body(responses[0], code)
    return responses[0]
