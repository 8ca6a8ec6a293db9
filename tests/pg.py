"""The PostgreSQL the tests use: `CHAT_TRIO_TEST_DATABASE` (a URL; `.ci/run` starts a throwaway
cluster and sets it, see scripts/pg-cluster.sh), one fresh schema per test. Without it the
PostgreSQL tests skip, unless `CHAT_TRIO_REQUIRE_PG=1` (CI), which makes them fail instead."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import pytest
import trio

DSN = os.environ.get("CHAT_TRIO_TEST_DATABASE", "")
REQUIRED = os.environ.get("CHAT_TRIO_REQUIRE_PG") == "1"


def require_pg() -> str:
    """The test database's URL, or skip (fail under CHAT_TRIO_REQUIRE_PG=1) without one."""
    if not DSN:
        message = "no PostgreSQL: set CHAT_TRIO_TEST_DATABASE (see README, Running several nodes)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return DSN


def _run(sql: str) -> None:
    import psycopg

    with psycopg.connect(require_pg(), autocommit=True) as conn:
        conn.execute(sql)


def in_schema(schema: str) -> str:
    """The test database's URL with `schema` as its search_path."""
    joiner = "&" if "?" in DSN else "?"
    return f"{DSN}{joiner}options={quote(f'-csearch_path={schema}')}"


def create_schema() -> tuple[str, str]:
    """A new, empty schema: its name, and a URL whose search_path it is."""
    require_pg()
    schema = "t_" + secrets.token_hex(6)
    _run(f"CREATE SCHEMA {schema}")
    return schema, in_schema(schema)


def drop_schema(schema: str) -> None:
    _run(f"DROP SCHEMA {schema} CASCADE")


@asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A URL whose search_path is a new, empty schema, dropped afterwards."""
    schema, dsn = await trio.to_thread.run_sync(create_schema)
    try:
        yield dsn
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(drop_schema, schema)


# The sqlite path of a test's settings → the PostgreSQL schema its server uses instead, so a check
# that reads "the database" (helpers.db_rows) reads the one the server wrote.
STANDS_FOR: dict[str, str] = {}


def query(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the database directly; its rows (none for a statement without)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, args)
        return cur.fetchall() if cur.description else []
