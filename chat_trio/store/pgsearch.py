"""Full-text search on PostgreSQL, behind search.py's interface: the same words, the same
answers as FTS5 on sqlite.

`messages_search` holds one row per text entry that is not deleted: its id, its room, and its
words as a `tsvector` under a GIN index. The words are split and folded in Python (search.lexemes:
case and accents removed, as `unicode61 remove_diacritics 2` does), so no extension is needed
(`unaccent` would need one), and the query, the index and the highlights see one tokenisation.
The rows are written by the statements, in the transaction, that write the message (and by
pgwriter.py's bulk append): a committed message is searchable at once. A delete removes the row
in the delete's transaction; what PostgreSQL keeps of it until VACUUM is in docs/API.md.

A query is never PostgreSQL's query syntax: each word becomes one quoted lexeme with `:*` (a
prefix), joined by `&`, and is cast as a tsquery literal (not re-parsed by `to_tsquery`, which
could split a word differently from the index).
"""

from __future__ import annotations

from chat_trio.store.db import Connection
from chat_trio.store.search import LEXEME_MAX, fold, lexemes

BACKFILL_CHUNK = 5000  # messages indexed per statement when the index is first created


def tsquery(query_words: list[str]) -> str:
    """Every word as a quoted prefix lexeme, all required: `'caf':* & 'ol':*`."""
    quoted = ("'" + fold(w)[:LEXEME_MAX].replace("\\", "\\\\").replace("'", "''") + "':*"
              for w in query_words)
    return " & ".join(quoted)


def add_many(conn: Connection, entries: list[tuple[int, int, str]]) -> None:
    """Index text entries, given as (id, room_id, text), in one statement. A text without words
    has no row (no search finds it)."""
    rows = [(message_id, room_id, " ".join(words)) for message_id, room_id, text in entries
            if (words := lexemes(text))]
    if not rows:
        return
    ids, rooms, joined = zip(*rows, strict=True)
    conn.execute(
        "INSERT INTO messages_search (id, room_id, words)"
        " SELECT id, room_id, array_to_tsvector(string_to_array(w, ' '))"
        " FROM unnest(?::bigint[], ?::bigint[], ?::text[]) AS v(id, room_id, w)",
        (list(ids), list(rooms), list(joined)))


class PgTextIndex:
    def create(self, conn: Connection) -> None:
        conn.execute("CREATE TABLE messages_search ("
                     " id BIGINT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,"
                     " room_id BIGINT NOT NULL, words TSVECTOR NOT NULL)")
        after = 0
        while True:
            rows = conn.execute(
                "SELECT id, room_id, text FROM messages WHERE kind = 'text' AND deleted = 0 AND id > ?"
                " ORDER BY id LIMIT ?", (after, BACKFILL_CHUNK)).fetchall()
            if not rows:
                break
            add_many(conn, [(row[0], row[1], row[2]) for row in rows])
            after = rows[-1][0]
        conn.execute("CREATE INDEX messages_search_words ON messages_search USING GIN (words)")

    def prepare(self, conn: Connection) -> None:
        """Nothing to set: a deleted row's index entries go at VACUUM (docs/API.md)."""

    def add(self, conn: Connection, message_id: int, room_id: int, text: str) -> None:
        add_many(conn, [(message_id, room_id, text)])

    def remove(self, conn: Connection, message_id: int, room_id: int, text: str) -> None:
        conn.execute("DELETE FROM messages_search WHERE id = ?", (message_id,))

    def find(self, conn: Connection, query_words: list[str], room_ids: list[int],
             before: int | None, limit: int) -> list[int]:
        if not query_words or not room_ids:
            return []
        rows = conn.execute(
            "SELECT id FROM messages_search WHERE words @@ ?::tsquery AND room_id = ANY(?::bigint[])"
            " AND id < ? ORDER BY id DESC LIMIT ?",
            (tsquery(query_words), room_ids, before if before is not None else 2**63 - 1, limit),
        ).fetchall()
        return [row[0] for row in rows]


PG_INDEX = PgTextIndex()
