"""A small keep-alive HTTP/1.1 JSON client (h11 over trio) with a bounded connection pool.

Used only for setup (register, login, rooms, joins), so it favours simplicity: a pool of at most
`size` connections, one request at a time on each, reconnecting whenever the server closes one.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import h11
import orjson
import trio


class RestError(Exception):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path} → {status}: {body}")
        self.status = status
        self.body = body


class _Conn:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)


class RestClient:
    def __init__(self, host: str, port: int, size: int = 16) -> None:
        self.host = host
        self.port = port
        self._idle: list[_Conn] = []
        self._slots = trio.Semaphore(size)

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for conn in self._idle:
                await conn.stream.aclose()
        self._idle.clear()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> Any:
        """One request; returns the decoded JSON body, raises RestError on a status not in `ok`."""
        async with self._slots:
            for attempt in range(2):  # a reused keep-alive connection may have been closed by the server
                reused = bool(self._idle)
                conn = self._idle.pop() if reused else _Conn(await trio.open_tcp_stream(self.host, self.port))
                try:
                    status, data = await self._exchange(conn, method, path, body, token)
                except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
                    await conn.stream.aclose()
                    if reused and attempt == 0:
                        continue
                    raise
                if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
                    conn.h11.start_next_cycle()
                    self._idle.append(conn)
                else:
                    await conn.stream.aclose()
                parsed = orjson.loads(data) if data else None
                if status not in ok:
                    raise RestError(method, path, status, parsed)
                return parsed
        raise AssertionError("unreachable")

    async def _exchange(
        self, conn: _Conn, method: str, path: str, body: Any, token: str | None
    ) -> tuple[int, bytes]:
        payload = orjson.dumps(body) if body is not None else b""
        headers = [("Host", f"{self.host}:{self.port}"), ("Content-Length", str(len(payload)))]
        if body is not None:
            headers.append(("Content-Type", "application/json"))
        if token is not None:
            headers.append(("Authorization", f"Bearer {token}"))
        out = conn.h11.send(h11.Request(method=method, target=path, headers=headers))
        out = (out or b"") + (conn.h11.send(h11.Data(data=payload)) or b"") if payload else out
        out = (out or b"") + (conn.h11.send(h11.EndOfMessage()) or b"")
        await conn.stream.send_all(out)
        status = 0
        chunks: list[bytes] = []
        while True:
            event = conn.h11.next_event()
            if event is h11.NEED_DATA:
                data = await conn.stream.receive_some(65536)
                conn.h11.receive_data(data)
                if not data and conn.h11.their_state is not h11.DONE:
                    raise trio.BrokenResourceError("server closed the connection")
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError("server closed the connection")
