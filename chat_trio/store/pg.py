"""PostgreSQL connections that run the same query functions (queries.py) as sqlite.

`PgConnection` offers the part of `sqlite3.Connection` the queries use (store/db.py): `?`
placeholders become `%s` (translated once per statement), and a violated constraint is raised as
`sqlite3.IntegrityError`, so queries.py holds one copy of the SQL and catches one error type.
Connections are in autocommit mode, like the sqlite ones: the writer and the snapshot reads say
BEGIN and COMMIT themselves. psycopg is imported only when PostgreSQL is configured.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
import psycopg.errors
import trio
from psycopg_pool import ConnectionPool

from chat_trio.store.sqlite import sqlite3
from chat_trio.store.writer import StoreClosed

T = TypeVar("T")
CONNECT_TIMEOUT = 5  # seconds to reach the server before a start (or a reconnect) gives up


@lru_cache(maxsize=512)
def _translate(sql: str) -> str:
    """sqlite's SQL as psycopg takes it: `%s` placeholders, and LIKE matched bytewise (usernames
    are unique ignoring case through a nondeterministic collation, as sqlite's NOCASE makes
    them, and PostgreSQL cannot LIKE under one; the patterns are lower-cased already)."""
    return sql.replace("%", "%%").replace("?", "%s").replace(" LIKE ", ' COLLATE "C" LIKE ')


class PgCursor:
    __slots__ = ("_cur",)

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()


class PgConnection:
    """One psycopg connection with sqlite3's calling convention (store/db.py)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    @classmethod
    def connect(cls, dsn: str) -> PgConnection:
        return cls(psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT))

    @property
    def backend_pid(self) -> int:
        return self.raw.info.backend_pid

    @property
    def broken(self) -> bool:
        return self.raw.closed or self.raw.broken

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> PgCursor:
        try:
            return PgCursor(self.raw.execute(_translate(sql), parameters, prepare=True))
        except psycopg.errors.IntegrityError as exc:
            raise sqlite3.IntegrityError(str(exc)) from exc

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> PgCursor:
        cur = self.raw.cursor()
        try:
            cur.executemany(_translate(sql), parameters)
        except psycopg.errors.IntegrityError as exc:
            raise sqlite3.IntegrityError(str(exc)) from exc
        return PgCursor(cur)

    def close(self) -> None:
        self.raw.close()


def schema_key(conn: PgConnection) -> tuple[str, int]:
    """The schema this deployment lives in (`search_path`, e.g. `options=-csearch_path=chat` in
    the URL) and a 32-bit key derived from it: the NOTIFY channel and the advisory lock are per
    schema, so several deployments (or test runs) can share one database."""
    schema: str = conn.execute("SELECT current_schema()").fetchone()[0]
    return schema, zlib.crc32(schema.encode()) & 0x7FFFFFFF


def unreachable() -> StoreClosed:
    """503 `unavailable`: PostgreSQL cannot be reached (a read failed, or the node's listening
    connection is down)."""
    return StoreClosed("the database is unreachable; retry later")


class PgReaderPool:
    """The PostgreSQL counterpart of store/readers.py's ReaderPool: a psycopg-pool of `size`
    connections (it replaces broken ones), each used by one thread at a time. An unreachable
    server is StoreClosed (503), as it is for a write."""

    def __init__(self, dsn: str, size: int) -> None:
        self._pool = ConnectionPool(dsn, min_size=size, max_size=size, timeout=CONNECT_TIMEOUT,
                                    kwargs={"autocommit": True}, name="chat_trio-readers", open=True)
        self.limiter = trio.CapacityLimiter(size)

    def _run(self, query: Callable[[PgConnection], T]) -> T:
        with self._pool.connection() as conn:
            return query(PgConnection(conn))

    async def read(self, query: Callable[[Any], T]) -> T:
        """Run `query` on a pooled connection. A connection the server dropped (a restart) is
        found by its failure, not by a check before each use: the pool discards it and the
        query runs once more on another."""
        async with self.limiter:
            for attempt in (1, 2):
                try:
                    return await trio.to_thread.run_sync(self._run, query)
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise unreachable() from None
            raise AssertionError("unreachable")

    def close(self) -> None:
        self._pool.close()
