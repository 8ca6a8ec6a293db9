"""Wires the parts together: store, hub and listener under one nursery, and owns shutdown."""

from __future__ import annotations

import logging
import signal
from typing import Any

import trio

from chat_trio.api import build_routes
from chat_trio.api.services import Services
from chat_trio.config import Config
from chat_trio.http.router import Router
from chat_trio.http.server import HTTPServer
from chat_trio.logs import setup_logging
from chat_trio.metrics import Registry, Sampled
from chat_trio.rooms.hub import Hub
from chat_trio.security.passwords import Passwords
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

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        passwords = await trio.to_thread.run_sync(Passwords, self.config)
        self.store = store = await Store.open(self.config)
        store.listeners.append(self.hub.publish)
        services = Services(self.config, store, self.hub, passwords)
        self.server = HTTPServer(self.config, Router(build_routes(services)))
        register_metrics(services.metrics, self.server, store, self.hub, passwords)
        try:
            async with trio.open_nursery() as background:
                await background.start(store.writer.run)
                await background.start(services.purge_tokens)
                # The listener drains its connections before returning; only then does the
                # writer stop, so every request that was answered has committed.
                async with trio.open_nursery() as front:
                    self.port = await front.start(self.server.serve)
                    task_status.started(self)
                background.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await store.close()

    def shutdown(self) -> None:
        """Stop accepting, close websockets (1001), let in-flight requests finish."""
        self.hub.shutdown()
        if self.server is not None:
            self.server.shutdown()


def register_metrics(
    registry: Registry, server: HTTPServer, store: Store, hub: Hub, passwords: Passwords
) -> None:
    registry.add(server.requests)
    registry.add(server.latency)
    registry.add(store.writer.batch_sizes)
    for metric in (
        Sampled("chat_trio_open_connections", "open HTTP connections (websockets included)",
                lambda: server.open_connections),
        Sampled("chat_trio_open_websockets", "authenticated websockets", lambda: hub.open_websockets),
        Sampled("chat_trio_messages_committed", "messages committed since start",
                lambda: store.messages_committed, "counter"),
        Sampled("chat_trio_ws_frames_delivered", "message frames queued to websockets",
                lambda: hub.delivered, "counter"),
        Sampled("chat_trio_store_commits", "transactions committed by the writer",
                lambda: store.writer.commits, "counter"),
        Sampled("chat_trio_store_queue_depth", "writes waiting for the writer",
                lambda: store.writer.queued),
        Sampled("chat_trio_thread_limiter_borrowed", "worker threads in use, by limiter", lambda: {
            (("limiter", "store_readers"),): store.readers.limiter.borrowed_tokens,
            (("limiter", "store_writer"),): store.writer.thread.borrowed_tokens,
            (("limiter", "passwords"),): passwords.limiter.borrowed_tokens,
        }),
    ):
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


def run(config: Config) -> None:
    setup_logging(config.log_level, config.log_format)
    trio.run(main, config)
