"""A small HTTP/1.1 client for tests: h11 over a real trio socket, keep-alive. Raw bytes on a
socket (no h11 on our side) are tests/rawhttp.py's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h11
import orjson
import trio


@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error_code(self) -> str:
        return str(self.json["error"]["code"])


class HTTPClient:
    """One keep-alive connection to the server; reconnects when the server closed it."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token
        self.stream: trio.SocketStream | None = None
        self.conn: h11.Connection | None = None

    async def _connect(self) -> None:
        self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        self.conn = h11.Connection(h11.CLIENT)

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        body: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
        token: str | None = None,
    ) -> Reply:
        if self.conn is None or self.conn.our_state is not h11.IDLE:
            await self.aclose()
            await self._connect()
        assert self.stream is not None and self.conn is not None
        hdrs = [("host", f"127.0.0.1:{self.port}"), *(headers or [])]
        token = token if token is not None else self.token
        if token:
            hdrs.append(("authorization", f"Bearer {token}"))
        if json is not None:
            body = orjson.dumps(json)
            hdrs.append(("content-type", "application/json"))
        if body is not None:
            hdrs.append(("content-length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=path, headers=hdrs))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        status = 0
        rheaders: dict[bytes, bytes] = {}
        chunks: list[bytes] = []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                rheaders = dict(event.headers)
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("server closed the connection")
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        else:
            await self.aclose()
        return Reply(status, rheaders, b"".join(chunks))

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.request("POST", path, json, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.request("PUT", path, json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.request("PATCH", path, json, **kw)

    async def delete(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.request("DELETE", path, json, **kw)

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
        self.stream = None
        self.conn = None

