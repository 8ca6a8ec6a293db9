"""Numbered schema migrations; the server applies the missing ones at start."""

from __future__ import annotations

import secrets
from collections.abc import Callable

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
    for statement in (
        "ALTER TABLE users ADD COLUMN admin INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE users ADD COLUMN deactivated INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE users ADD COLUMN last_seen_at INTEGER",
        "ALTER TABLE tokens ADD COLUMN public_id TEXT",
        "ALTER TABLE tokens ADD COLUMN client TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE tokens ADD COLUMN last_seen_at INTEGER",
    ):
        conn.execute(statement)
    for (digest,) in conn.execute("SELECT hash FROM tokens").fetchall():
        conn.execute("UPDATE tokens SET public_id = ?, last_seen_at = created_at WHERE hash = ?",
                     (secrets.token_urlsafe(9), digest))
    conn.execute("CREATE UNIQUE INDEX tokens_by_public_id ON tokens(public_id)")
    # A user's messages in id order: export pages through them, erasure finds them.
    conn.execute("CREATE INDEX messages_by_author ON messages(author_id, id)")
def _timeline(conn: sqlite3.Connection) -> None:
    """5: read markers, unread counters, edits and deletes, and the search index.

    `rooms.text_count` counts the room's text entries ever committed and `messages.text_n` is a
    text entry's place among them (null for other kinds), both set at commit; a member's marker
    keeps the `text_n` it stands at. So a room's unread count is a subtraction (less the deleted
    entries past the marker), never a count over its history. Edit and delete entries name their
    target by `target_seq`; an edit's new text is `new_text`. Existing members have read
    everything; existing text entries get numbered and indexed for search."""
    for statement in (
        "ALTER TABLE rooms ADD COLUMN text_count INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE messages ADD COLUMN text_n INTEGER",
        "ALTER TABLE messages ADD COLUMN target_seq INTEGER",
        "ALTER TABLE messages ADD COLUMN new_text TEXT",
        "ALTER TABLE members ADD COLUMN read_seq INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE members ADD COLUMN read_text_n INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX messages_by_target ON messages(room_id, target_seq) WHERE target_seq IS NOT NULL",
        "CREATE INDEX messages_deleted ON messages(room_id, seq) WHERE deleted = 1",
    ):
        conn.execute(statement)
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


# Each a script of SQL statements, or a function for what SQL cannot do.
MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    # 1: accounts, rooms, memberships and messages
    """
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        hash       BLOB PRIMARY KEY,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tokens_by_user ON tokens(user_id);
    CREATE TABLE rooms (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        name       TEXT NOT NULL,
        name_key   TEXT NOT NULL UNIQUE,
        topic      TEXT NOT NULL DEFAULT '',
        created_by INTEGER NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL,
        last_seq   INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE members (
        room_id   INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        joined_at INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX members_by_user ON members(user_id);
    CREATE TABLE messages (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        room_id    INTEGER NOT NULL REFERENCES rooms(id),
        seq        INTEGER NOT NULL,
        author_id  INTEGER NOT NULL REFERENCES users(id),
        text       TEXT NOT NULL,
        txn_id     TEXT,
        created_at INTEGER NOT NULL,
        UNIQUE (room_id, seq)
    );
    CREATE UNIQUE INDEX messages_by_txn ON messages(room_id, author_id, txn_id)
        WHERE txn_id IS NOT NULL;
    """,
    _nfkc_room_name_keys,
    # 3: private and direct rooms, roles, invites, bans, and room events in the timeline. Every
    # existing room stays public; its creator, if still a member, becomes its owner, else its
    # longest-standing member does. A direct room is one per (lower id, higher id) pair of users.
    """
    ALTER TABLE rooms ADD COLUMN visibility TEXT NOT NULL DEFAULT 'public';
    ALTER TABLE rooms ADD COLUMN direct_a INTEGER REFERENCES users(id);
    ALTER TABLE rooms ADD COLUMN direct_b INTEGER REFERENCES users(id);
    CREATE UNIQUE INDEX rooms_by_direct_pair ON rooms(direct_a, direct_b);
    ALTER TABLE members ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
    UPDATE members SET role = 'owner' WHERE user_id = (
        SELECT COALESCE(
            (SELECT m.user_id FROM members m JOIN rooms r ON r.id = m.room_id
             WHERE m.room_id = members.room_id AND m.user_id = r.created_by),
            (SELECT m.user_id FROM members m WHERE m.room_id = members.room_id
             ORDER BY m.joined_at, m.user_id LIMIT 1)));
    ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'text';
    ALTER TABLE messages ADD COLUMN subject_id INTEGER REFERENCES users(id);
    ALTER TABLE messages ADD COLUMN changes TEXT;
    ALTER TABLE messages ADD COLUMN edited_at INTEGER;
    ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE invites (
        room_id    INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        invited_by INTEGER NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id)
    );
    CREATE INDEX invites_by_user ON invites(user_id);
    CREATE TABLE bans (
        room_id    INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        banned_by  INTEGER NOT NULL REFERENCES users(id),
        reason     TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id)
    );
    """,
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
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute("UPDATE schema_version SET version = ?", (number,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = number
    return version
