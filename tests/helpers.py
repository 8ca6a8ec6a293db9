"""Shared helpers for the tests: the one way to start an in-process server (with custom settings),
clients with a chosen source address or a record of every exchange, and the account / room /
message calls the tests repeat. The chat_trio modules the tests need are imported here."""

from __future__ import annotations

import calendar
import dataclasses
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import h11
import pytest
import trio

from chat_trio.app import App
from chat_trio.config import Config
from chat_trio.http.router import Route as Route
from chat_trio.http.router import Router
from chat_trio.http.server import HTTPServer

# Re-exported for the tests of the bare HTTP layer, so a renamed module is fixed here only.
from chat_trio.http.types import Request as Request
from chat_trio.http.types import Response as Response
from chat_trio.http.types import json_response as json_response
from chat_trio.store.sqlite import sqlite3
from chat_trio.store.store import Store
from tests.client import HTTPClient, Reply
from tests.pg import STANDS_FOR, create_schema, drop_schema, fresh_schema, query
from tests.server_process import ServerProcess, has_workers_flag, workers_args

PASSWORD = "correct horse battery staple"
# RFC 3339 UTC with milliseconds, as the contract fixes it.
TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
USER_KEYS = {"id", "username", "created_at", "admin", "deactivated"}
ROOM_KEYS = {"id", "name", "topic", "created_by", "created_at", "member_count", "last_seq", "visibility",
             "kind"}  # and "my_role" for a member
MEMBER_ROOM_KEYS = ROOM_KEYS | {"my_role", "read_seq", "unread"}  # a room as one of its members sees it
MESSAGE_KEYS = {"id", "room_id", "seq", "author", "text", "created_at", "txn_id", "kind", "edited_at",
                "deleted"}  # a text entry's


def parse_time(value: str) -> float:
    """Seconds since the epoch of an API timestamp (asserting its exact format)."""
    assert TIME_RE.fullmatch(value), value
    whole, millis = value[:-1].split(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000


# -- servers ---------------------------------------------------------------------------------

# Cheap password hashing so tests run fast; everything else keeps its default.
TEST_CONFIG = dict(host="127.0.0.1", port=0, argon2_time_cost=1, argon2_memory_kib=1024,
                   argon2_parallelism=1, log_level="warning")


def make_config(tmp_path: Path, **overrides: object) -> Config:
    """The test settings (a fresh database under `tmp_path`, a free loopback port) with `overrides`."""
    return Config(**{"db": str(tmp_path / "chat.db"), **TEST_CONFIG, **overrides})  # type: ignore[arg-type]


async def start_app(nursery: trio.Nursery, config: Config) -> App:
    """An App on `config`, running in `nursery` and listening (its `port` is known) when this returns."""
    app: App = await nursery.start(App(config).run)
    return app


class StartServer(Protocol):
    """The `start_server` fixture: `await start_server(**overrides)` is an App on the test
    settings with `overrides`, running until the test ends."""

    def __call__(self, **overrides: object) -> Awaitable[App]: ...


@asynccontextmanager
async def serve(config: Config) -> AsyncIterator[App]:
    """A running App on `config`; on exit it is shut down and has fully stopped (db closed)."""
    async with trio.open_nursery() as nursery:
        app = await start_app(nursery, config)
        try:
            yield app
        finally:
            app.shutdown()


class Served(Protocol):
    """What a test of the contract needs of a running server, in-process App or subprocess."""

    port: int
    config: Config


class StartServed(Protocol):
    """The `start_served` and `shared_served` fixtures: `await start(**overrides)` is a server on
    the test settings with `overrides`, in the test's mode, running until the test ends."""

    def __call__(self, **overrides: object) -> Awaitable[Served]: ...


@dataclass
class WorkersServer:
    """`python -m chat_trio --workers N` as a `Served`."""

    port: int
    config: Config
    process: ServerProcess


def _flags(config: Config) -> list[str]:
    """`config` as command-line flags (the settings that differ from the defaults)."""
    defaults = Config()
    flags = []
    for name in (f.name for f in dataclasses.fields(config)):
        value = getattr(config, name)
        if name not in ("host", "port", "db", "log_level") and value != getattr(defaults, name):
            flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


async def wait_workers_ready(port: int, workers: int, timeout: float = 20.0,
                             status: int = 200) -> dict[bytes | None, Reply]:
    """Until every worker has answered /healthz with `status` (each answer names its worker in
    x-chat-worker; the supervisor may log "listening" before its last worker listens); those
    answers, by worker."""
    wanted = {str(n).encode() for n in range(1, workers + 1)} if workers > 1 else {None}
    seen: dict[bytes | None, Reply] = {}
    with trio.fail_after(timeout):
        while not wanted <= set(seen):
            c = HTTPClient(port)
            try:
                reply = await c.get("/healthz")
                if reply.status == status:
                    seen[reply.headers.get(b"x-chat-worker")] = reply
                else:
                    await trio.sleep(0.02)
            except (OSError, h11.ProtocolError):
                await trio.sleep(0.05)  # not listening yet
            finally:
                await c.aclose()
    return seen


# The modes a contract test runs in (tests/conftest.py, the `workers` marker): an in-process App
# on sqlite, `python -m chat_trio --workers 2` on sqlite, and PostgreSQL.
IN_PROCESS, WORKERS_2, POSTGRES = "in-process", "workers-2", "postgres"
MODES = (IN_PROCESS, WORKERS_2, POSTGRES)


def skip_without_workers() -> None:
    if not has_workers_flag():
        pytest.skip("this chat_trio has no --workers flag")


@asynccontextmanager
async def serve_in(mode: str, config: Config) -> AsyncIterator[Served]:
    """A server on `config` in `mode` (an in-process App on PostgreSQL uses a fresh schema that
    stands for `config.db`, see tests/pg.py); on exit it has stopped."""
    if mode == IN_PROCESS:
        async with serve(config) as app:
            yield app
    elif mode == POSTGRES:
        async with fresh_schema() as dsn, serve(dataclasses.replace(config, database=dsn)) as app:
            STANDS_FOR[config.db] = dsn
            try:
                yield app
            finally:
                del STANDS_FOR[config.db]
    else:
        skip_without_workers()
        async with serve_workers(config, 2) as server:
            yield server


@asynccontextmanager
async def serve_workers(config: Config, workers: int) -> AsyncIterator[WorkersServer]:
    """A subprocess server on `config` (its database, its settings) with `workers` workers; on exit
    it is stopped, and its log must show no server-side error."""
    tmp = Path(config.db).parent
    process = ServerProcess(tmp, *workers_args(workers), *_flags(config), db=Path(config.db),
                            log_name="workers.log")
    try:
        server = WorkersServer(await process.start(), config, process)
        await wait_workers_ready(server.port, workers)
        yield server
        assert not process.errors(), process.log()
    finally:
        process.stop()


# The outcome ("passed", "failed", "skipped") of a test's call, kept by conftest's makereport hook.
CALL_OUTCOME = pytest.StashKey[str]()


@dataclass
class SharedServers:
    """Subprocess servers the tests of one module share in the workers and PostgreSQL modes, one
    per (mode, settings), started by the first test that asks and stopped (their logs checked for
    server-side errors, their schemas dropped) when the module ends: a start costs seconds there
    (each process imports the server), a test of a few requests costs milliseconds. The tests
    that share one must not collide (each its own user and room names)."""

    tmp: Path
    running: dict[tuple[str, str], WorkersServer] = field(default_factory=dict)
    schemas: list[str] = field(default_factory=list)

    async def get(self, mode: str, **overrides: object) -> Served:
        key = (mode, repr(sorted(overrides.items())))
        if key not in self.running:
            home = Path(tempfile.mkdtemp(dir=self.tmp))  # its own, whether it starts or skips
            await self._start(key, mode, make_config(home, **overrides))
        return self.running[key]

    async def _start(self, key: tuple[str, str], mode: str, config: Config) -> None:
        args, workers = _flags(config), 2
        if mode == POSTGRES:
            schema, dsn = await trio.to_thread.run_sync(create_schema)  # skips without PostgreSQL
            self.schemas.append(schema)
            STANDS_FOR[config.db] = dsn
            args, workers = [*args, "--database", dsn], 1
        else:
            skip_without_workers()
        process = ServerProcess(Path(config.db).parent, *workers_args(workers), *args, db=Path(config.db))
        server = self.running[key] = WorkersServer(0, config, process)  # stopped at the end even if it fails
        server.port = await process.start()
        await wait_workers_ready(server.port, workers)

    def stop(self) -> None:
        errors = []
        for server in self.running.values():
            server.process.stop()
            errors += server.process.errors()
            STANDS_FOR.pop(server.config.db, None)
        for schema in self.schemas:
            drop_schema(schema)
        assert not errors, errors


async def start_routes(
    nursery: trio.Nursery, config: Config, routes: Sequence[Route]
) -> tuple[HTTPServer, int]:
    """The bare HTTP layer with test-only routes (no App, no database), running in `nursery`:
    the server and its port."""
    server = HTTPServer(config, Router(list(routes)))
    port: int = await nursery.start(server.serve)
    return server, port


def server_of(app: App) -> HTTPServer:
    """The HTTP server of a running App (typed: the attribute is None until it runs)."""
    assert app.server is not None
    return app.server


def store_of(app: App) -> Store:
    """The store of a running App (typed: the attribute is None until it runs)."""
    assert app.store is not None
    return app.store


# -- clients ---------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Every exchange of some clients, to check that no answer reveals a password, or a token
    other than the one a login answer issues."""

    passwords: set[str] = field(default_factory=set)
    replies: list[Reply] = field(default_factory=list)
    issued: dict[str, int] = field(default_factory=dict)  # token → index of the reply issuing it

    def record(self, sent: Any, reply: Reply) -> None:
        if isinstance(sent, dict) and isinstance(sent.get("password"), str):
            self.passwords.add(sent["password"])
        if reply.status == 200 and reply.body.startswith(b'{"token"'):
            self.issued[reply.json["token"]] = len(self.replies)
        self.replies.append(reply)

    def leaks(self) -> list[str]:
        found = []
        for index, reply in enumerate(self.replies):
            text = reply.body.decode("utf-8", "replace") + repr(reply.headers)
            found += [f"reply {index} holds a password" for p in self.passwords
                      if len(p) >= 6 and p in text]
            found += [f"reply {index} holds the token of reply {at}"
                      for token, at in self.issued.items() if at != index and token in text]
        return found

    def assert_no_leaks(self) -> None:
        assert self.replies, "nothing was recorded"
        assert not self.leaks()


class Client(HTTPClient):
    """HTTPClient that may connect from another loopback address (127.0.0.0/8 all reach the
    server, which then sees a different client address) and may record every exchange."""

    def __init__(self, port: int, token: str | None = None, *, local_address: str | None = None,
                 recorder: Recorder | None = None) -> None:
        super().__init__(port, token)
        self.local_address = local_address
        self.recorder = recorder

    async def _connect(self) -> None:
        self.stream = await trio.open_tcp_stream("127.0.0.1", self.port, local_address=self.local_address)
        self.conn = h11.Connection(h11.CLIENT)

    async def request(self, method: str, path: str, json: Any = None, **kw: Any) -> Reply:
        reply = await super().request(method, path, json, **kw)
        if self.recorder is not None:
            self.recorder.record(json, reply)
        return reply


class OperatorClient(HTTPClient):
    """HTTP over the server's local admin socket (no token: the operator)."""

    def __init__(self, path: str) -> None:
        super().__init__(0)
        self.path = path

    async def _connect(self) -> None:
        self.stream = await trio.open_unix_socket(self.path)
        self.conn = h11.Connection(h11.CLIENT)


def operator(config: Config) -> OperatorClient:
    path = config.admin_socket_path()
    assert path is not None
    return OperatorClient(path)


async def make_admin(server: Served, client: HTTPClient, name: str = "root") -> tuple[str, dict[str, Any]]:
    """An admin created over the admin socket, and its token."""
    op = operator(server.config)
    try:
        reply = await op.post("/admin/users", {"username": name, "password": PASSWORD, "admin": True})
    finally:
        await op.aclose()
    assert reply.status == 201, reply.body
    user: dict[str, Any] = reply.json["user"]
    return await login(client, name), user


# -- assertions ------------------------------------------------------------------------------


def assert_error(reply: Reply, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """`reply` is the contract's error body with this status and code; a 422 names `field`."""
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers.get(b"content-type", b"").startswith(b"application/json")
    body = reply.json
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    if field is not None:
        assert field in error["message"], error
    return dict(error)


def as_non_member(room: dict[str, Any]) -> dict[str, Any]:
    """A room object as a member saw it, as a non-member sees it (no read marker, no count)."""
    return {key: value for key, value in room.items() if key not in MEMBER_ROOM_KEYS - ROOM_KEYS}


def assert_message_shape(message: dict[str, Any]) -> None:
    assert set(message) == MESSAGE_KEYS, message
    assert set(message["author"]) == {"id", "username"}
    assert TIME_RE.fullmatch(message["created_at"])
    for key in ("id", "room_id", "seq"):
        assert isinstance(message[key], int) and message[key] >= 1


def assert_dense(messages: list[dict[str, Any]], last_seq: int) -> None:
    """Exactly seqs 1..last_seq, ascending, each once; ids unique."""
    assert [m["seq"] for m in messages] == list(range(1, last_seq + 1))
    assert len({m["id"] for m in messages}) == len(messages)


# -- calls -----------------------------------------------------------------------------------


async def register(client: HTTPClient, username: str, password: str = PASSWORD) -> dict[str, Any]:
    reply = await client.post("/register", {"username": username, "password": password})
    assert reply.status == 201, reply.body
    user: dict[str, Any] = reply.json["user"]
    return user


async def login(client: HTTPClient, username: str, password: str = PASSWORD) -> str:
    reply = await client.post("/login", {"username": username, "password": password})
    assert reply.status == 200, reply.body
    token: str = reply.json["token"]
    return token


async def register_and_login(
    client: HTTPClient, username: str, password: str = PASSWORD
) -> tuple[str, dict[str, Any]]:
    user = await register(client, username, password)
    return await login(client, username, password), user


async def make_room(client: HTTPClient, token: str, name: str, topic: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name} if topic is None else {"name": name, "topic": topic}
    reply = await client.post("/rooms", body, token=token)
    assert reply.status == 201, reply.body
    room: dict[str, Any] = reply.json["room"]
    return room


async def join(client: HTTPClient, token: str, room_id: int) -> dict[str, Any]:
    reply = await client.post(f"/rooms/{room_id}/join", token=token)
    assert reply.status == 200, reply.body
    room: dict[str, Any] = reply.json["room"]
    return room


async def get_room(client: HTTPClient, token: str, room_id: int) -> dict[str, Any]:
    reply = await client.get(f"/rooms/{room_id}", token=token)
    assert reply.status == 200, reply.body
    room: dict[str, Any] = reply.json["room"]
    return room


async def send(client: HTTPClient, token: str, room_id: int, text: str, txn_id: str | None = None) -> Reply:
    body: dict[str, Any] = {"text": text} if txn_id is None else {"text": text, "txn_id": txn_id}
    return await client.post(f"/rooms/{room_id}/messages", body, token=token)


async def history(client: HTTPClient, token: str, room_id: int, **query: Any) -> Reply:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return await client.get(f"/rooms/{room_id}/messages" + (f"?{qs}" if qs else ""), token=token)


async def all_messages(client: HTTPClient, token: str, room_id: int) -> list[dict[str, Any]]:
    """Every message of a room, paging forward with `after` (checking each page's shape)."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        reply = await history(client, token, room_id, after=after, limit=100)
        assert reply.status == 200, reply.body
        page = reply.json
        assert set(page) == {"messages", "has_more"}
        out += page["messages"]
        if not page["messages"]:
            assert page["has_more"] is False
            return out
        seqs = [m["seq"] for m in page["messages"]]
        assert seqs == sorted(seqs) and seqs[0] > after
        after = seqs[-1]


def db_rows(path: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one query on the database file directly (read-only), or on the PostgreSQL schema
    that stands for it in a test against PostgreSQL (tests/pg.py)."""
    if path in STANDS_FOR:
        return query(STANDS_FOR[path], sql.replace("?", "%s"), *args)
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, args).fetchall()


async def seed_rooms(client: HTTPClient, rooms: int, users: int) -> tuple[str, list[int], list[str]]:
    """`rooms` rooms made by an "owner", and `users` users who joined all of them: the owner's
    token, the room ids and the users' tokens."""
    owner, _ = await register_and_login(client, "owner")
    room_ids = [(await make_room(client, owner, f"room-{r}"))["id"] for r in range(rooms)]
    tokens = []
    for n in range(users):
        token, _ = await register_and_login(client, f"user{n}")
        for room_id in room_ids:
            await join(client, token, room_id)
        tokens.append(token)
    return owner, room_ids, tokens
