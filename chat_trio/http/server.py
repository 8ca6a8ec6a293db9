"""The listener: bind, accept in bursts, cap open connections, drain at shutdown.

Trio's stock `serve_tcp` accepts one connection per scheduler pass, so under load new clients
wait behind busy ones. Here each time the listening socket is readable the whole accept queue is
drained before yielding. Running out of file descriptors pauses accepting briefly instead of
crashing (the same policy as trio's `serve_listeners`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from email.utils import formatdate
from typing import Any

import trio

from chat_trio.config import Config
from chat_trio.http.connection import HTTPConnection
from chat_trio.http.messages import HTTPError, Request, Response, error_response
from chat_trio.http.router import Router
from chat_trio.metrics import LATENCY_BUCKETS, Counter, Histogram

log = logging.getLogger("chat_trio.http")
access_log = logging.getLogger("chat_trio.access")

_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_BACKLOG = 4096


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class HTTPServer:
    def __init__(self, config: Config, router: Router) -> None:
        self.config = config
        self.router = router
        self.open_connections = 0
        self.trusted_proxies = config.proxies()
        self.draining = False
        self.idle: set[trio.CancelScope] = set()
        self._accept_scope = trio.CancelScope()
        self._date = (0, b"")
        self.requests = Counter("chat_trio_http_requests", "HTTP requests answered",
                                ("route", "method", "status"))
        self.latency = Histogram("chat_trio_http_request_duration_seconds",
                                 "time from a request's head to its answer", LATENCY_BUCKETS, ("route",))

    # -- per request -------------------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        """Route and run one request. A handler's exception becomes a 500, never a crash."""
        try:
            match = self.router.match(request.method, request.path)
            request.params, request.route = match.params, match.route
            return await match.handler(request)
        except HTTPError as exc:
            return exc.response()
        except Exception:
            log.exception("handler failed: %s %s", request.method, request.path[:200])
            return error_response(500, "internal", "internal server error")

    def finished(self, request: Request, status: int, seconds: float) -> None:
        """One answered request: count it, time it, and write its access-log line."""
        route = request.route or "unmatched"
        self.requests.inc(route, request.method, str(status))
        self.latency.observe(seconds, route)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d %.1fms", request.method, request.path, status, seconds * 1000,
                extra={"method": request.method, "path": request.path, "status": status,
                       "ms": round(seconds * 1000, 2), "client": request.client},
            )

    def refused(self, status: int, client: str) -> None:
        """A request refused before it could be parsed or routed (4xx from the HTTP layer)."""
        self.requests.inc("unparsed", "-", str(status))
        access_log.info("- - %d (refused by the HTTP layer)", status,
                        extra={"status": status, "client": client})

    def date_header(self) -> bytes:
        now = int(time.time())
        if now != self._date[0]:
            self._date = (now, formatdate(now, usegmt=True).encode())
        return self._date[1]

    # -- listener ----------------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen; report the bound port through `task_status`; return after `shutdown()` once
        the last connection has finished (or the grace period has cancelled it)."""
        sock = _bind(self.config.host, self.config.port)
        port = sock.getsockname()[1]
        log.info("listening on http://%s:%d", self.config.host, port)
        try:
            async with trio.open_nursery() as connections:
                with self._accept_scope:
                    task_status.started(port)
                    await self._accept_loop(sock, connections)
                sock.close()
                connections.cancel_scope.deadline = trio.current_time() + self.config.shutdown_grace
        finally:
            sock.close()

    def shutdown(self) -> None:
        """Stop accepting now; idle keep-alive connections close, busy ones finish."""
        self.draining = True
        self._accept_scope.cancel()
        for scope in list(self.idle):
            scope.cancel()

    async def _accept_loop(self, sock: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            while True:
                try:
                    conn, address = sock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in _RESOURCE_ERRORS:
                        log.error("accept failed (%s); pausing accepts for 100 ms", exc.strerror)
                        await trio.sleep(0.1)
                        break
                    if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                        continue
                    raise
                nursery.start_soon(self._handle, conn, address)

    async def _handle(self, conn: socket.socket, address: Any) -> None:
        conn.setblocking(False)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
        client = address[0] if isinstance(address, tuple) else str(address)
        if self.open_connections >= self.config.max_connections:
            await self._refuse(stream)
            return
        self.open_connections += 1
        try:
            await HTTPConnection(conn, stream, self, client).serve()
        except Exception:
            # A bug in one connection's handling must never take the listener down with it.
            log.exception("connection from %s failed", client)
        finally:
            self.open_connections -= 1

    async def _refuse(self, stream: trio.SocketStream) -> None:
        body = b'{"error":{"code":"unavailable","message":"too many connections"}}'
        head = (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"connection: close\r\nretry-after: 1\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        with trio.move_on_after(1):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(head + body)
        with trio.CancelScope(shield=True):
            await stream.aclose()
