"""What the query functions (queries.py) need of a connection: the part of `sqlite3.Connection`
they use, which the PostgreSQL adapter (store/pg.py) also offers, so one copy of the SQL serves
both engines. Errors are sqlite3's: the adapter raises `sqlite3.IntegrityError` for a violated
constraint, so a query catches one type whichever engine ran it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import trio

T = TypeVar("T")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


class Readers(Protocol):
    """A pool of read connections (store/readers.py for sqlite, store/pg.py for PostgreSQL)."""

    limiter: trio.CapacityLimiter

    async def read(self, query: Callable[[Any], T]) -> T: ...

    def close(self) -> None: ...
