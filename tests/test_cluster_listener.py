"""The listener options workers need: one port shared by SO_REUSEPORT, reserved by a bound but
not listening socket, and every answer naming the worker that gave it."""

from __future__ import annotations

from pathlib import Path

import trio

from chat_trio.http.router import Route, Router
from chat_trio.http.server import HTTPServer, open_listeners
from chat_trio.http.types import Request, Response, json_response
from tests.helpers import make_config
from tests.rawhttp import RawConn, get


async def _healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def test_workers_share_a_reserved_port_and_name_themselves(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    reserved = await open_listeners("127.0.0.1", 0, reuse_port=True, listen=False)
    port = reserved[0].getsockname()[1]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            servers = []
            for worker_id in (1, 2):
                listeners = await open_listeners("127.0.0.1", port, reuse_port=True)
                server = HTTPServer(config, Router([Route("GET", "/healthz", _healthz)]), listeners,
                                    worker_id=worker_id)
                assert await nursery.start(server.serve) == port
                servers.append(server)
            seen = set()
            for _ in range(40):
                conn = await RawConn.open(port)
                await conn.send(get("/healthz"))
                reply = await conn.read_response()
                await conn.aclose()
                assert reply.status == 200
                seen.add(reply.headers[b"x-chat-worker"])
                if seen == {b"1", b"2"}:
                    break
            assert seen == {b"1", b"2"}
            for server in servers:
                server.shutdown()
    for sock in reserved:
        sock.close()


async def test_a_single_process_answer_names_no_worker(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = HTTPServer(make_config(tmp_path), Router([Route("GET", "/healthz", _healthz)]))
            port = await nursery.start(server.serve)
            conn = await RawConn.open(port)
            await conn.send(get("/healthz"))
            reply = await conn.read_response()
            await conn.aclose()
            assert reply.status == 200 and b"x-chat-worker" not in reply.headers
            server.shutdown()
