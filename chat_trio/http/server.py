"""The listener: bind, accept in bursts, cap open connections (in all and per client address),
drain at shutdown.

Trio's stock `serve_tcp` accepts one connection per scheduler pass, so under load new clients
wait behind busy ones. Here each time the listening socket is readable the whole accept queue is
drained before yielding. Running out of file descriptors pauses accepting briefly instead of
crashing (the same policy as trio's `serve_listeners`).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from email.utils import formatdate
from typing import Any

import trio

from chat_trio.config import Config
from chat_trio.errors import APIError
from chat_trio.http.connection import TOO_MANY_FROM_ADDRESS, HTTPConnection
from chat_trio.http.router import Router
from chat_trio.http.types import Request, Response, error_answer, error_response, reason
from chat_trio.metrics import LATENCY_BUCKETS, Counter, Histogram, method_label
from chat_trio.security.ratelimit import client_network
from chat_trio.store.barrier import ReadBarrier

log = logging.getLogger("chat_trio.http")
access_log = logging.getLogger("chat_trio.access")

_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_BACKLOG = 4096


def _status_label(status: int) -> str:
    """A status as a metric label: the ones this server names as they are, any other by its class."""
    return str(status) if reason(status) else f"{status // 100}xx"


class StartupError(Exception):
    """The server cannot start. The message names what (an address, a file) and why, in one line."""


def _bind(family: int, kind: int, proto: int, address: Any, *, reuse_port: bool = False,
          listen: bool = True) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # --workers: each worker its own listener on one port, the kernel balancing
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:  # as trio: "::" means IPv6 only; IPv4 gets its own socket
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if listen:
            sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _where(family: int, address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


async def open_listeners(host: str, port: int, *, reuse_port: bool = False,
                         listen: bool = True) -> list[socket.socket]:
    """Listening sockets on every address `host` resolves to, as trio's `open_tcp_listeners`
    (resolved in a worker thread, never on the event loop). With port 0 the first socket picks
    a free port and the others take the same one. StartupError names the address that failed.
    `reuse_port` lets other processes bind the same port (SO_REUSEPORT); with `listen` False
    the sockets are only bound, which reserves the port for them (the supervisor's)."""
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            if listeners and port == 0:
                address = (address[0], listeners[0].getsockname()[1], *address[2:])
            try:
                listeners.append(_bind(family, kind, proto, address, reuse_port=reuse_port, listen=listen))
            except OSError as exc:
                raise StartupError(f"cannot listen on {_where(family, address)}: "
                                   f"{exc.strerror or exc}") from None
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


class HTTPServer:
    def __init__(self, config: Config, router: Router, listeners: list[socket.socket] | None = None,
                 *, worker_id: int | None = None, operator: bool = False,
                 barrier: ReadBarrier | None = None) -> None:
        self.config = config
        self.barrier = barrier  # --workers: each request first catches up (store/barrier.py)
        # The local admin socket's server: its requests are the operator's (Request.operator).
        self.operator = operator
        # In workers mode every answer names the worker that gave it (x-chat-worker).
        self.answer_headers = [] if worker_id is None else [(b"x-chat-worker", b"%d" % worker_id)]
        self.reuse_port = worker_id is not None
        self.router = router
        self.listeners = listeners or []  # bound by the caller (the App binds before it opens the db)
        self.open_connections = 0
        self.per_address: dict[str, int] = {}  # open connections by client_network(address)
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
            barrier = self.barrier
            if barrier is not None and not barrier.current():
                await barrier.wait()
            return await match.handler(request)
        except APIError as exc:
            return error_answer(exc)
        except Exception:
            log.exception("handler failed: %s %s", request.method, request.path[:200])
            return error_response(500, "internal", "internal server error")

    def finished(self, request: Request, status: int, seconds: float) -> None:
        """One answered request: count it, time it, and write its access-log line."""
        route = request.route or "unmatched"
        self.requests.inc(route, method_label(request.method), _status_label(status))
        self.latency.observe(seconds, route)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d %.1fms", request.method, request.path, status, seconds * 1000,
                extra={"method": request.method, "path": request.path, "status": status,
                       "ms": round(seconds * 1000, 2), "client": request.client},
            )

    def refused(self, status: int, client: str) -> None:
        """A request refused before it could be parsed or routed (4xx/5xx from the HTTP layer)."""
        self.requests.inc("unparsed", "-", _status_label(status))
        access_log.info("- - %d (refused by the HTTP layer)", status,
                        extra={"status": status, "client": client})

    def date_header(self) -> bytes:
        now = int(time.time())
        if now != self._date[0]:
            self._date = (now, formatdate(now, usegmt=True).encode())
        return self._date[1]

    def claim(self, address: str | None) -> bool:
        """Take one of `address`'s connection slots (a `client_network`; None: not limited, a
        trusted proxy's own). False when it holds all of them."""
        if address is None:
            return True
        held = self.per_address.get(address, 0)
        if held >= self.config.max_connections_per_address:
            return False
        self.per_address[address] = held + 1
        return True

    def release(self, address: str | None) -> None:
        if address is None:
            return
        held = self.per_address[address] - 1
        if held:
            self.per_address[address] = held
        else:
            del self.per_address[address]

    # -- listener ----------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen; report the bound port through `task_status`; return after `shutdown()` once
        the last connection has finished (or the grace period has cancelled it)."""
        if not self.listeners:
            self.listeners = await open_listeners(self.config.host, self.config.port,
                                                  reuse_port=self.reuse_port)
        local = self.listeners[0].family == socket.AF_UNIX  # the admin socket: no port
        port = 0 if local else self.listeners[0].getsockname()[1]
        for sock in self.listeners:
            if local:
                log.info("admin socket at %s", self.config.admin_socket_path())
            else:
                log.info("listening on http://%s", _where(sock.family, sock.getsockname()))
        try:
            async with trio.open_nursery() as connections:
                with self._accept_scope:
                    task_status.started(port)
                    async with trio.open_nursery() as accepting:
                        for sock in self.listeners:
                            accepting.start_soon(self._accept_loop, sock, connections)
                self._close_listeners()
                connections.cancel_scope.deadline = trio.current_time() + self.config.shutdown_grace
        finally:
            self._close_listeners()

    def _close_listeners(self) -> None:
        for sock in self.listeners:
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
        connection = HTTPConnection(conn, stream, self, client)
        if self.open_connections >= self.config.max_connections:
            await connection.refuse(error_response(503, "unavailable", "too many connections",
                                                   [(b"retry-after", b"1")]))
            return
        # Counted by the peer's address; a trusted proxy's connections are counted by the client
        # its requests name, from the first request on (HTTPConnection.hold).
        held = None if connection.behind_proxy else client_network(client)
        if not self.claim(held):
            await connection.refuse(TOO_MANY_FROM_ADDRESS)
            return
        connection.address = held
        self.open_connections += 1
        try:
            await connection.serve()
        except Exception:
            # A bug in one connection's handling must never take the listener down with it.
            log.exception("connection from %s failed", client)
        finally:
            self.open_connections -= 1
            self.release(connection.address)
