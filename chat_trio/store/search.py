"""Full-text search over the current text of text entries, behind one small interface.

`SEARCH` is the index the store uses. The sqlite one is an FTS5 external-content table over
`messages.text` (`unicode61 remove_diacritics 2`: words match ignoring case and accents), written
by the same statements, in the same transaction, as the message it indexes: a committed message
is searchable at once, and a crash never leaves the index out of step with the table. On
PostgreSQL, store/pgsearch.py implements the same calls with its own text search; `SEARCH`
picks the index by the connection it is given.

A query is never passed through as a query language: `words` splits it into words (letters and
digits) and each becomes one quoted prefix term, so `"`, `*`, `NEAR(`, `OR`, `-` or `text:` are
plain text (or nothing). Highlights are computed here too, so every backend answers the same.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Protocol

import orjson

from chat_trio.store.db import Connection
from chat_trio.store.sqlite import sqlite3

_WORD = re.compile(r"[^\W_]+")  # letters and digits: what unicode61 keeps as token characters


def words(query: str) -> list[str]:
    """The words a search query asks for, in order (none for a query of punctuation alone).
    A word that another one starts with (ignoring case and accents), or that repeats, adds
    nothing: every text with a word starting with `hello` also has one starting with `hel`. So
    it is left out, and `hello hello hello` costs the index one lookup, not three."""
    found = _WORD.findall(unicodedata.normalize("NFC", query))
    folded = [fold(w) for w in found]
    return [w for i, w in enumerate(found)
            if not any(other.startswith(folded[i]) and (other != folded[i] or j < i)
                       for j, other in enumerate(folded) if j != i)]


def fold(word: str) -> str:
    """A word as the index compares it: case and accents removed (remove_diacritics 2)."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def lexemes(text: str) -> list[str]:
    """The distinct words of `text` as an index that is not FTS5 stores them (store/pgsearch.py):
    split and folded here, exactly as `words` and `highlights` see them, and cut to LEXEME_MAX
    characters (a longer word is still found by its prefix)."""
    return list(dict.fromkeys(w for w in (fold(m)[:LEXEME_MAX] for m in _WORD.findall(text)) if w))


LEXEME_MAX = 500  # characters (2,000 bytes at most): PostgreSQL mangles a lexeme of 2 KB or more


def highlights(text: str, query_words: list[str]) -> list[list[int]]:
    """[start, end) code-point offsets of each word of `text` that one of `query_words` is a
    prefix of, ignoring case and accents, in order."""
    prefixes = tuple(fold(w) for w in query_words)
    return [[m.start(), m.end()] for m in _WORD.finditer(text) if fold(m.group()).startswith(prefixes)]


class SearchIndex(Protocol):
    """What the store needs of a text index. Writes run inside the writer's transaction."""

    def create(self, conn: Connection) -> None:
        """Schema migration: create the index and index every text entry already stored (and
        not deleted)."""

    def add(self, conn: Connection, message_id: int, room_id: int, text: str) -> None: ...

    def remove(self, conn: Connection, message_id: int, room_id: int, text: str) -> None:
        """Forget a message; `text` is what `add` indexed."""

    def find(self, conn: Connection, query_words: list[str], room_ids: list[int],
             before: int | None, limit: int) -> list[int]:
        """The ids of up to `limit` messages in `room_ids` whose text has every word of
        `query_words` as a word prefix, with id < `before`, newest (highest id) first."""
        ...


ROOM_TERMS_MAX = 200  # rooms searched through their index terms; beyond, by the join alone


class Fts5Index:
    """The sqlite index: FTS5 with external content (the text is stored once, in `messages`),
    read through a view that adds each message's room as a second indexed column. A search in
    some rooms then intersects the words' doclists with those rooms' in the index, instead of
    walking every match of a common word in other rooms. Prefix indexes for one and two
    characters keep short words from merging thousands of terms' doclists."""

    def create(self, conn: Connection) -> None:
        conn.execute("CREATE VIEW messages_fts_content AS SELECT id, text, room_id AS room FROM messages"
                     " WHERE kind = 'text' AND deleted = 0")
        conn.execute("CREATE VIRTUAL TABLE messages_fts USING fts5(text, room,"
                     " content='messages_fts_content', content_rowid='id',"
                     " tokenize='unicode61 remove_diacritics 2', prefix='1 2')")
        conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")

    def forget_deleted(self, conn: Connection) -> None:
        """Schema migration 6: FTS5's secure-delete (sqlite 3.42+, a setting stored in the index)
        takes a removed message's words out of the index's pages at once. Without it, a removal
        only adds a tombstone and the words stay in older segments until those are merged; so
        merge every segment once, which drops what was removed before. The pages this frees are
        zeroed (secure_delete)."""
        conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('secure-delete', 1)")
        conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('optimize')")

    def add(self, conn: Connection, message_id: int, room_id: int, text: str) -> None:
        conn.execute("INSERT INTO messages_fts (rowid, text, room) VALUES (?, ?, ?)",
                     (message_id, text, room_id))

    def remove(self, conn: Connection, message_id: int, room_id: int, text: str) -> None:
        conn.execute("INSERT INTO messages_fts (messages_fts, rowid, text, room) VALUES ('delete', ?, ?, ?)",
                     (message_id, text, room_id))

    def find(self, conn: Connection, query_words: list[str], room_ids: list[int],
             before: int | None, limit: int) -> list[int]:
        # Each word one string ("" escapes a quote inside one) with `*` after it (a prefix),
        # in the text column only; the rooms (integers: plain tokens) in the room column.
        match = " AND ".join('text : "' + w.replace('"', '""') + '"*' for w in query_words)
        if len(room_ids) <= ROOM_TERMS_MAX:
            match += " AND (" + " OR ".join(f'room : "{int(r)}"' for r in room_ids) + ")"
        # CROSS JOIN keeps the index as the outer loop: it yields rowids newest first, so the
        # LIMIT stops the walk as soon as enough rows are found. The join's room check is the
        # authority on which rooms the caller may see; the room terms only make it fast.
        rows = conn.execute(
            "SELECT m.id FROM messages_fts CROSS JOIN messages m ON m.id = messages_fts.rowid"
            " WHERE messages_fts MATCH ? AND messages_fts.rowid < ?"
            " AND m.room_id IN (SELECT value FROM json_each(?))"
            " ORDER BY messages_fts.rowid DESC LIMIT ?",
            (match, before if before is not None else 2**63 - 1, orjson.dumps(room_ids).decode(), limit),
        ).fetchall()
        return [row[0] for row in rows]


class _ByEngine:
    """The index of the engine a connection belongs to: FTS5 for sqlite, PostgreSQL's text
    search otherwise (imported only then, as the PostgreSQL backend is)."""

    def _index(self, conn: Connection) -> SearchIndex:
        if isinstance(conn, sqlite3.Connection):
            return FTS5
        from chat_trio.store.pgsearch import PG_INDEX
        return PG_INDEX

    def create(self, conn: Connection) -> None:
        self._index(conn).create(conn)

    def add(self, conn: Connection, message_id: int, room_id: int, text: str) -> None:
        self._index(conn).add(conn, message_id, room_id, text)

    def remove(self, conn: Connection, message_id: int, room_id: int, text: str) -> None:
        self._index(conn).remove(conn, message_id, room_id, text)

    def find(self, conn: Connection, query_words: list[str], room_ids: list[int],
             before: int | None, limit: int) -> list[int]:
        return self._index(conn).find(conn, query_words, room_ids, before, limit)


FTS5 = Fts5Index()  # the sqlite index, for what only sqlite has (schema.py's migration 6)
SEARCH: SearchIndex = _ByEngine()
