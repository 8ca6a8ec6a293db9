"""Fixtures that start the real server on a loopback port with a real sqlite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from chat_trio.app import App
from chat_trio.config import Config
from tests.client import HTTPClient

# Cheap password hashing so tests run fast; everything else keeps its default.
TEST_CONFIG = dict(host="127.0.0.1", port=0, argon2_time_cost=1, argon2_memory_kib=1024,
                   argon2_parallelism=1, log_level="warning")


def make_config(tmp_path: Path, **overrides: object) -> Config:
    return Config(**{"db": str(tmp_path / "chat.db"), **TEST_CONFIG, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def app(nursery: trio.Nursery, config: Config) -> AsyncIterator[App]:
    running: App = await nursery.start(App(config).run)
    yield running
    running.shutdown()


@pytest.fixture
async def client(app: App) -> AsyncIterator[HTTPClient]:
    c = HTTPClient(app.port)
    yield c
    await c.aclose()
