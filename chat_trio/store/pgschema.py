"""The PostgreSQL schema: the tables and indexes sqlite has (ddl.py) in PostgreSQL's spellings,
numbered as schema.py numbers them, applied at start under an advisory lock so nodes starting
together migrate once."""

from __future__ import annotations

from collections.abc import Callable

from chat_trio.store.ddl import (
    ACCOUNTS_ROOMS_MESSAGES,
    POSTGRES,
    ROOMS_ROLES_MODERATION,
    SESSION_COLUMNS,
    SESSION_INDEXES,
    TIMELINE_COLUMNS,
    render,
    run,
)
from chat_trio.store.pg import PgConnection, schema_key
from chat_trio.store.pgsearch import PG_INDEX

# 5, after ddl.TIMELINE_COLUMNS: each room's texts numbered in seq order, and every member has
# read everything (schema._timeline does the same in Python)
NUMBER_TEXTS = """
    UPDATE messages SET text_n = n.n FROM (
        SELECT id, row_number() OVER (PARTITION BY room_id ORDER BY seq) AS n FROM messages
        WHERE kind = 'text') AS n
        WHERE messages.id = n.id;
    UPDATE rooms SET text_count = (SELECT count(*) FROM messages WHERE room_id = rooms.id AND kind = 'text');
    UPDATE members SET read_seq = r.last_seq, read_text_n = r.text_count
        FROM rooms r WHERE r.id = members.room_id
"""


def _timeline(conn: PgConnection) -> None:
    """5 (schema._timeline): read markers, unread counters, edits and deletes, and the search
    index (store/pgsearch.py); existing members have read everything."""
    run(conn, render(TIMELINE_COLUMNS, POSTGRES))
    run(conn, NUMBER_TEXTS)
    PG_INDEX.create(conn)


# Numbered as schema.MIGRATIONS: version N here holds what version N holds there, so a number
# means one schema on both engines; a migration with nothing to do on PostgreSQL is "".
MIGRATIONS: list[str | Callable[[PgConnection], None]] = [
    # 1: accounts, rooms, memberships and messages. Usernames are unique regardless of case, as
    # sqlite's COLLATE NOCASE makes them (they are ASCII: api/shapes.py).
    """
    CREATE COLLATION IF NOT EXISTS nocase (provider = icu, locale = 'und-u-ks-level2',
                                           deterministic = false);
    """ + render(ACCOUNTS_ROOMS_MESSAGES, POSTGRES),
    # 2: room names unique by NFKC casefold. A PostgreSQL database was never keyed otherwise.
    "",
    # 3: private and direct rooms, roles, invites, bans, and room events in the timeline
    render(ROOMS_ROLES_MODERATION, POSTGRES),
    # 4: operators, deactivated accounts and sessions (schema._accounts_over_time); existing
    # tokens get random public ids
    render(SESSION_COLUMNS, POSTGRES) + """
    UPDATE tokens SET public_id = substr(md5(random()::text || encode(hash, 'hex')), 1, 12),
                      last_seen_at = created_at;
    """ + render(SESSION_INDEXES, POSTGRES),
    _timeline,
    # 6: sqlite's search index forgets deleted words at commit. PostgreSQL's always removed a
    # deleted message's row in the delete's transaction (pgsearch.py): nothing to do.
    "",
]

# Tables only PostgreSQL has: what the nodes share beyond the sqlite schema (queries.py's shared
# limits, presence). Created with the first migration and kept current with `CREATE … IF NOT
# EXISTS`, so they need no number of their own and never collide with the sqlite numbering.
NODE_TABLES = """
    CREATE TABLE IF NOT EXISTS limits (
        key    TEXT PRIMARY KEY,
        tokens DOUBLE PRECISION NOT NULL,
        at     BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS limit_events (
        key TEXT NOT NULL,
        at  BIGINT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS limit_events_by_key ON limit_events(key, at);
    CREATE TABLE IF NOT EXISTS login_addresses (  -- the last 8 an account signed in from, kept
        username TEXT NOT NULL,
        address  TEXT NOT NULL,
        at       BIGINT NOT NULL,
        PRIMARY KEY (username, address)
    );
    CREATE TABLE IF NOT EXISTS nodes (
        node    TEXT PRIMARY KEY,
        seen_at BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS presence (
        node    TEXT NOT NULL REFERENCES nodes(node) ON DELETE CASCADE,
        user_id BIGINT NOT NULL,
        PRIMARY KEY (node, user_id)
    )
"""


def migrate(conn: PgConnection) -> int:
    """Apply every migration newer than the schema's version, each in its own transaction, while
    holding the schema's advisory lock: a second node starting at once waits, then finds the
    work done. Returns the version."""
    _, key = schema_key(conn)
    conn.execute("SELECT pg_advisory_lock(?)", (key,))
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version: int = row[0] if row else 0
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (0)")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute("BEGIN")
            try:
                if callable(script):
                    script(conn)
                else:
                    run(conn, script)
                conn.execute("UPDATE schema_version SET version = ?", (number,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            version = number
        run(conn, NODE_TABLES)
        return version
    finally:
        conn.execute("SELECT pg_advisory_unlock(?)", (key,))
