"""Fixtures that start the real server on a loopback port with a real sqlite file, all through
`tests.helpers.serve` / `start_app` (the one way a test runs an in-process server)."""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from chat_trio.app import App
from chat_trio.config import Config
from tests.client import HTTPClient
from tests.helpers import (
    CALL_OUTCOME,
    IN_PROCESS,
    MODES,
    Served,
    SharedServers,
    StartServed,
    StartServer,
    make_config,
    serve_in,
    start_app,
)

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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep the test call's outcome on the item, for fixtures whose teardown checks what a test
    that ran did (a skipped one did nothing)."""
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[CALL_OUTCOME] = report.outcome
    return report


# The contract suites run once more against `python -m chat_trio --workers 2`: a test marked
# `@pytest.mark.workers` that takes `app` (or `client`, which takes it) runs with `app` an in-process
# App and then a subprocess with two workers (same settings, same database path). Such a test may
# use only what both offer (`Served`: the port and the settings), never the store.
# They also run against PostgreSQL (an in-process App on a fresh schema, tests/pg.py); a test that
# needs the store or the sqlite file does not take the marker. A marked test that needs settings
# of its own takes `start_served` (a server per call) or `shared_served` (in the workers and
# PostgreSQL modes, one per module and settings) instead of `app`: each runs in the test's `mode`.


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "workers: also run the test against a --workers 2 server")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("workers") and "mode" in metafunc.fixturenames:
        metafunc.parametrize("mode", MODES)


@pytest.fixture
def mode() -> str:
    """The mode of the test's servers: in-process, unless the `workers` marker parametrises it."""
    return IN_PROCESS


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def app(request: pytest.FixtureRequest, mode: str, config: Config) -> AsyncIterator[Served]:
    async with serve_in(getattr(request, "param", mode), config) as running:
        yield running


@pytest.fixture
async def client(app: Served) -> AsyncIterator[HTTPClient]:
    c = HTTPClient(app.port)
    yield c
    await c.aclose()


@pytest.fixture
async def start_served(mode: str, tmp_path: Path) -> AsyncIterator[StartServed]:
    """`await start_served(**overrides)`: a new server on the test settings with `overrides` (a
    database of its own), in the test's mode, until the test ends. Each runs in a task of this
    fixture, so it stops here, where it started (trio wants a nursery closed by its own task)."""
    done = trio.Event()
    count = itertools.count()

    async def hold(config: Config, task_status: trio.TaskStatus[Served]) -> None:
        async with serve_in(mode, config) as served:
            task_status.started(served)
            await done.wait()

    async with trio.open_nursery() as nursery:
        async def start(**overrides: object) -> Served:
            home = tmp_path / f"server-{next(count)}"
            home.mkdir()
            served: Served = await nursery.start(hold, make_config(home, **overrides))
            return served

        yield start
        done.set()


@pytest.fixture(scope="module")
def shared_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServers]:
    servers = SharedServers(tmp_path_factory.mktemp("shared"))
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def shared_served(mode: str, start_served: StartServed, shared_servers: SharedServers) -> StartServed:
    """As `start_served`, but in the workers and PostgreSQL modes the server is the module's one
    with these settings, started by the first test that asked (SharedServers)."""
    if mode == IN_PROCESS:
        return start_served
    return functools.partial(shared_servers.get, mode)


@pytest.fixture
def start_server(nursery: trio.Nursery, tmp_path: Path) -> StartServer:
    """For tests that want a server per call with their own settings, in the test's nursery (so
    the test body needs no `async with`); the nursery's end at teardown stops them."""

    async def start(**overrides: object) -> App:
        return await start_app(nursery, make_config(tmp_path, **overrides))

    return start
