"""Wires the parts together: store, hub and listener under one nursery, and owns shutdown."""

from __future__ import annotations

import logging
import signal
from typing import Any

import trio

from chat_trio.api import build_routes
from chat_trio.config import Config
from chat_trio.http.router import Router
from chat_trio.http.server import HTTPServer
from chat_trio.logs import setup_logging

log = logging.getLogger("chat_trio")


class App:
    """One running server. `await nursery.start(app.run)` returns once it listens."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.port = 0
        self.server: HTTPServer | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        router = Router(build_routes(self.config))
        self.server = HTTPServer(self.config, router)
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(self.server.serve)
            task_status.started(self)

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.shutdown()


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
