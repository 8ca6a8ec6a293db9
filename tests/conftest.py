"""Fixtures that start the real server on a loopback port with a real sqlite file, all through
`tests.helpers.serve` / `start_app` (the one way a test runs an in-process server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from chat_trio.app import App
from chat_trio.config import Config
from tests.client import HTTPClient
from tests.helpers import StartServer, make_config, serve, start_app


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def app(config: Config) -> AsyncIterator[App]:
    async with serve(config) as running:
        yield running


@pytest.fixture
async def client(app: App) -> AsyncIterator[HTTPClient]:
    c = HTTPClient(app.port)
    yield c
    await c.aclose()


@pytest.fixture
def start_server(nursery: trio.Nursery, tmp_path: Path) -> StartServer:
    """For tests that want a server per call with their own settings, in the test's nursery (so
    the test body needs no `async with`); the nursery's end at teardown stops them."""

    async def start(**overrides: object) -> App:
        return await start_app(nursery, make_config(tmp_path, **overrides))

    return start
