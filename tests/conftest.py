"""Fixtures that start the real server on a loopback port with a real sqlite file, all through
`tests.helpers.serve` / `start_app` (the one way a test runs an in-process server)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from chat_trio.app import App
from chat_trio.config import Config
from tests.client import HTTPClient
from tests.helpers import Served, StartServer, make_config, serve, serve_workers, start_app
from tests.pg import STANDS_FOR, fresh_schema
from tests.server_process import has_workers_flag

# Every async test runs under trio.fail_after(TEST_DEADLINE) (as trio-websocket's tests do with
# their decorator), so a test that waits for something that never comes fails instead of hanging
# the suite; tests keep their own, tighter, deadlines. A test on pytest-trio's mock_clock or
# autojump_clock is left to its own fail_after (virtual time): it must allow for the time the
# test jumps over, and on autojump_clock a deadline already pending while the App opens its
# database in a thread would be jumped to at once. Synchronous tests (the subprocess fuzz and
# schemathesis runs, the browser test) are bounded by their sockets' and subprocesses' timeouts.
TEST_DEADLINE = 60.0
CLOCK_FIXTURES = {"mock_clock", "autojump_clock"}


def _bounded(test: Callable[..., Awaitable[Any]], seconds: float) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(test)
    async def run(**kwargs: Any) -> Any:
        with trio.fail_after(seconds):
            return await test(**kwargs)

    return run


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Bound the test before pytest-trio wraps it to run under trio."""
    test = getattr(item, "obj", None)
    virtual_time = CLOCK_FIXTURES & set(getattr(item, "fixturenames", ()))
    if test is not None and inspect.iscoroutinefunction(test) and not virtual_time:
        item.obj = _bounded(test, TEST_DEADLINE)  # type: ignore[attr-defined]
    yield


# The contract suites run once more against `python -m chat_trio --workers 2`: a test marked
# `@pytest.mark.workers` that takes `app` (or `client`, which takes it) runs with `app` an in-process
# App and then a subprocess with two workers (same settings, same database path). Such a test may
# use only what both offer (`Served`: the port and the settings), never the store.
# They also run against PostgreSQL (an in-process App on a fresh schema, tests/pg.py); a test that
# needs the store or the sqlite file does not take the marker.
IN_PROCESS, WORKERS_2, POSTGRES = "in-process", "workers-2", "postgres"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "workers: also run the test against a --workers 2 server")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("workers") and "app" in metafunc.fixturenames:
        metafunc.parametrize("app", [IN_PROCESS, WORKERS_2, POSTGRES], indirect=True)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def app(request: pytest.FixtureRequest, config: Config) -> AsyncIterator[Served]:
    if getattr(request, "param", IN_PROCESS) == IN_PROCESS:
        async with serve(config) as running:
            yield running
        return
    if request.param == POSTGRES:
        async with fresh_schema() as dsn, serve(dataclasses.replace(config, database=dsn)) as running:
            STANDS_FOR[config.db] = dsn
            try:
                yield running
            finally:
                del STANDS_FOR[config.db]
        return
    if not has_workers_flag():
        pytest.skip("this chat_trio has no --workers flag")
    async with serve_workers(config, 2) as server:
        yield server


@pytest.fixture
async def client(app: Served) -> AsyncIterator[HTTPClient]:
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
