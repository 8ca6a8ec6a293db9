"""Numbered schema migrations; the server applies the missing ones at start."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from chat_trio.store.ddl import (
    ACCOUNTS_ROOMS_MESSAGES,
    ROOMS_ROLES_MODERATION,
    SESSION_COLUMNS,
    SESSION_INDEXES,
    SQLITE,
    TIMELINE_COLUMNS,
    render,
    run,
)
from chat_trio.store.queries import name_key
from chat_trio.store.search import FTS5, SEARCH
from chat_trio.store.sqlite import sqlite3


def _nfkc_room_name_keys(conn: sqlite3.Connection) -> None:
    """2: room names are unique by NFKC casefold (`queries.name_key`) instead of casefold alone.

    Two existing rooms whose names collide under the new rule both stay, with their names, ids,
    members and messages: the older keeps the plain key, the newer gets the key followed by NUL
    and its id, which no name can produce (names refuse control characters). No new room can
    take either name."""
    rows = conn.execute("SELECT id, name FROM rooms ORDER BY id").fetchall()
    # Out of the way first, so no row collides with a key not yet recomputed.
    conn.execute("UPDATE rooms SET name_key = char(1) || id")
    taken: set[str] = set()
    for room_id, name in rows:
        key = name_key(name)
        if key in taken:
            key = f"{key}\x00{room_id}"
        taken.add(key)
        conn.execute("UPDATE rooms SET name_key = ? WHERE id = ?", (key, room_id))


def _accounts_over_time(conn: sqlite3.Connection) -> None:
    """4: server operators and deactivated accounts (`users.admin`, `users.deactivated`, both 0/1,
    and `users.last_seen_at`), and sessions: each token gets a short public id (what
    `GET /me/sessions` shows and `DELETE /me/sessions/{id}` takes, never the hash), the client
    that signed in (its User-Agent, capped) and when it was last used (epoch ms, written at most
    about once a minute per token). Existing tokens get fresh public ids."""
    run(conn, render(SESSION_COLUMNS, SQLITE))
    for (digest,) in conn.execute("SELECT hash FROM tokens").fetchall():
        conn.execute("UPDATE tokens SET public_id = ?, last_seen_at = created_at WHERE hash = ?",
                     (secrets.token_urlsafe(9), digest))
    run(conn, render(SESSION_INDEXES, SQLITE))


def _timeline(conn: sqlite3.Connection) -> None:
    """5: read markers, unread counters, edits and deletes, and the search index.

    `rooms.text_count` counts the room's text entries ever committed and `messages.text_n` is a
    text entry's place among them (null for other kinds), both set at commit; a member's marker
    keeps the `text_n` it stands at. So a room's unread count is a subtraction (less the deleted
    entries past the marker), never a count over its history. Edit and delete entries name their
    target by `target_seq`; an edit's new text is `new_text`. Existing members have read
    everything; existing text entries get numbered and indexed for search."""
    run(conn, render(TIMELINE_COLUMNS, SQLITE))
    counts: dict[int, int] = {}
    numbered = []
    for message_id, room_id in conn.execute(
            "SELECT id, room_id FROM messages WHERE kind = 'text' ORDER BY room_id, seq"):
        counts[room_id] = counts.get(room_id, 0) + 1
        numbered.append((counts[room_id], message_id))
    conn.executemany("UPDATE messages SET text_n = ? WHERE id = ?", numbered)
    conn.executemany("UPDATE rooms SET text_count = ? WHERE id = ?", [(n, r) for r, n in counts.items()])
    conn.execute("UPDATE members SET (read_seq, read_text_n) ="
                 " (SELECT last_seq, text_count FROM rooms WHERE rooms.id = members.room_id)")
    SEARCH.create(conn)


# Each a script of SQL statements, or a function for what SQL cannot do; the tables and indexes
# are ddl.py's, shared with PostgreSQL, whose migrations (pgschema.py) are numbered as these.
MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    render(ACCOUNTS_ROOMS_MESSAGES, SQLITE),  # 1: accounts, rooms, memberships and messages
    _nfkc_room_name_keys,
    render(ROOMS_ROLES_MODERATION, SQLITE),  # 3: private and direct rooms, roles, moderation
    _accounts_over_time,
    _timeline,
    # 6: a deleted message's words leave the search index's pages at its commit (the database
    # had been written by a sqlite without FTS5 secure-delete); merging the index once takes
    # out the words of messages deleted before.
    FTS5.forget_deleted,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the database's `schema_version`; return the version."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    version = row[0] if row else 0
    if row is None:
        conn.execute("INSERT INTO schema_version VALUES (0)")
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
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
    return version
