"""Wires the parts together: store, hub and listener under one nursery, and owns shutdown."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from chat_trio.api import build_routes, operator_routes
from chat_trio.api.commands import LocalCommands
from chat_trio.api.context import Context
from chat_trio.cluster.nodes import linked_nodes
from chat_trio.config import Config
from chat_trio.http.router import Router
from chat_trio.http.server import HTTPServer, StartupError, open_listeners
from chat_trio.http.unix import listen_private
from chat_trio.logs import setup_logging
from chat_trio.metrics import Registry, Sampled
from chat_trio.rooms.hub import Hub
from chat_trio.security.passwords import Passwords
from chat_trio.store.sqlite import sqlite3
from chat_trio.store.store import Store

log = logging.getLogger("chat_trio")


class App:
    """One running server. `await nursery.start(app.run)` returns it once it listens."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.port = 0
        self.hub = Hub()
        self.server: HTTPServer | None = None
        self.store: Store | None = None

    async def run(self, *, task_status: trio.TaskStatus[App] = trio.TASK_STATUS_IGNORED) -> None:
        # The port first: a second instance started on a busy port stops here, before it has
        # touched the database the first one is using.
        listeners = await open_listeners(self.config.host, self.config.port)
        try:
            await self._run(listeners, task_status)
        finally:
            for sock in listeners:
                sock.close()

    async def _run(self, listeners: list[socket.socket], task_status: trio.TaskStatus[App]) -> None:
        async with running_store(self.config, self.hub) as context:
            self.store = store = context.store
            self.hub.state = store.state
            store.feed.subscribe(self.hub.react)
            async with linked_nodes(store, self.config.node_heartbeat, self.hub.set_online_elsewhere,
                                    self.hub.remote_typing) as nodes:
                self.hub.relay = nodes
                await self._serve(context, listeners, task_status)

    async def _serve(self, context: Context, listeners: list[socket.socket],
                     task_status: trio.TaskStatus[App]) -> None:
        self.server = http_server(context, listeners)
        # The listener drains its connections before returning; only then does the
        # writer stop, so every request that was answered has committed.
        async with trio.open_nursery() as front:
            self.port = await front.start(self.server.serve)
            task_status.started(self)

    def shutdown(self) -> None:
        """Stop accepting, close websockets (1001), let in-flight requests finish."""
        self.hub.shutdown()
        if self.server is not None:
            self.server.shutdown()


def http_server(context: Context, listeners: list[socket.socket], worker_id: int | None = None) -> HTTPServer:
    """The HTTP stack over `context` (routes, listeners, their metrics), for the single process
    and a `--workers` worker alike."""
    server = HTTPServer(context.config, Router(build_routes(context)), listeners, worker_id=worker_id,
                        barrier=context.barrier)
    register_metrics(context.metrics, server, context.store, context.hub, context.passwords)
    return server


async def open_store(config: Config) -> Store:
    """The store, or StartupError naming the database (file) and what is wrong with it."""
    try:
        return await Store.open(config)
    except (sqlite3.Error, OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if config.postgres:  # the URL is not repeated: it may hold a password
            raise StartupError(f"cannot open the PostgreSQL database: {reason}") from None
        if os.path.isdir(config.db):
            reason = "it is a directory"
        elif not os.path.isdir(os.path.dirname(os.path.abspath(config.db))):
            reason = "its directory does not exist"
        raise StartupError(f"cannot open the database {config.db}: {reason}") from None


@asynccontextmanager
async def running_store(config: Config, hub: Hub) -> AsyncIterator[Context]:
    """The store opened, its writer and the token purge running, for the single process and the
    `--workers` supervisor alike. On exit the writer stops (what was acknowledged has committed)
    and the database closes."""
    passwords = await trio.to_thread.run_sync(Passwords, config)
    store = await open_store(config)
    context = Context(config, store, hub, passwords, LocalCommands(config, store))
    try:
        async with trio.open_nursery() as background:
            await background.start(store.run)
            await background.start(context.purge_tokens)
            await background.start(serve_admin_socket, context)
            yield context
            background.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.close()


async def serve_admin_socket(context: Context, *,
                             task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """The local admin socket (`--admin-socket`): requests on it are the operator's, without a
    token (`python -m chat_trio admin`). Served where the writer is: the single process, or the
    supervisor with --workers. A path that cannot be bound is a StartupError naming it."""
    path = context.config.admin_socket_path()
    if path is None:
        task_status.started(0)
        return
    try:
        sock = await trio.to_thread.run_sync(listen_private, path)
    except OSError as exc:
        raise StartupError(f"cannot open the admin socket {path}: {exc.strerror or exc}") from None
    server = HTTPServer(context.config, Router(operator_routes(context)), [sock], operator=True)
    try:
        await server.serve(task_status=task_status)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def register_metrics(
    registry: Registry, server: HTTPServer, store: Store, hub: Hub, passwords: Passwords
) -> None:
    registry.add(server.requests)
    registry.add(server.latency)
    if not store.remote:  # a worker's store has no writer: the supervisor reports its own
        register_writer_metrics(registry, store)
    for metric in (
        Sampled("chat_trio_open_connections", "open HTTP connections (websockets included)",
                lambda: server.open_connections),
        Sampled("chat_trio_open_websockets", "authenticated websockets", lambda: hub.open_websockets),
        Sampled("chat_trio_messages_committed", "messages committed since start",
                lambda: store.messages_committed, "counter"),
        Sampled("chat_trio_ws_frames_delivered", "message frames queued to websockets",
                lambda: hub.delivered, "counter"),
        Sampled("chat_trio_thread_limiter_borrowed", "worker threads in use, by limiter", lambda: {
            (("limiter", "store_readers"),): store.readers.limiter.borrowed_tokens,
            **({} if store.remote else {(("limiter", "store_writer"),): store.writer.thread.borrowed_tokens}),
            (("limiter", "passwords"),): passwords.limiter.borrowed_tokens,
        }),
    ):
        registry.add(metric)


def register_writer_metrics(registry: Registry, store: Store) -> None:
    """The writer's metrics: the single process's, or the supervisor's in workers mode."""
    registry.add(store.writer.batch_sizes)
    registry.add(Sampled("chat_trio_store_commits", "transactions committed by the writer",
                         lambda: store.writer.commits, "counter"))
    registry.add(Sampled("chat_trio_store_queue_depth", "writes waiting for the writer",
                         lambda: store.writer.queued))
    for metric in [] if store.node is None else store.node.metrics():
        registry.add(metric)


async def main(config: Config) -> None:
    app = App(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(app.run)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("%s: shutting down", signal.Signals(signum).name)
                app.shutdown()
                break
    log.info("stopped")


def _startup_failure(exc: BaseException) -> StartupError | None:
    """The StartupError behind `exc`, which trio may have wrapped in exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, StartupError) else None


def run(config: Config) -> None:
    """Run until a signal stops it. A server that cannot start says why in one log line and
    exits with status 1, without a traceback: the cause is the setup, not the code.
    With more than one worker this process is their supervisor (cluster/supervisor.py)."""
    if config.workers > 1:
        import chat_trio.cluster.supervisor as supervisor

        setup_logging(config.log_level, config.log_format, "supervisor")
        entry = supervisor.main
    else:
        setup_logging(config.log_level, config.log_format)
        entry = main
    try:
        trio.run(entry, config)
    except BaseException as exc:
        failure = _startup_failure(exc)
        if failure is None:
            raise
        log.critical("%s", failure)
        raise SystemExit(1) from None
