"""Full-text search on PostgreSQL, behind search.py's interface: the same words, the same
answers as FTS5 on sqlite.

`messages_search` holds one row per text entry that is not deleted: its id, its room, and its
words as a `tsvector` under a GIN index (and a (room, id) index: a search reads the rooms'
newest rows first, see `find`). The words are split and folded in Python (search.lexemes: case
and accents removed, as `unicode61 remove_diacritics 2` does), so no extension is needed
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
NEWEST_WALK = 2000  # rows of each room a search reads by recency before it asks the GIN index
WALK_ROOMS = 10  # searches in at most this many rooms read their newest rows first


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
        # A search in a few rooms walks their newest rows instead of every match of a common word.
        conn.execute("CREATE INDEX messages_search_by_room ON messages_search (room_id, id)")

    def add(self, conn: Connection, message_id: int, room_id: int, text: str) -> None:
        add_many(conn, [(message_id, room_id, text)])

    def remove(self, conn: Connection, message_id: int, room_id: int, text: str) -> None:
        conn.execute("DELETE FROM messages_search WHERE id = ?", (message_id,))

    def find(self, conn: Connection, query_words: list[str], room_ids: list[int],
             before: int | None, limit: int) -> list[int]:
        """In up to WALK_ROOMS rooms, first each room's newest NEWEST_WALK rows by the (room, id)
        index (`_newest`): a common word fills the page there at once, where the GIN index
        would gather every one of its matches first (PostgreSQL guesses a prefix's matches
        rare). Then, or over more rooms (where the planner walks the ids newest first for a
        common word itself), the GIN index."""
        if not query_words or not room_ids:
            return []
        below = before if before is not None else 2**63 - 1
        q = tsquery(query_words)
        if len(room_ids) <= WALK_ROOMS:
            rows = _newest(conn, q, room_ids, below, limit)
            if len(rows) == limit:
                return rows
        found = conn.execute(
            "SELECT id FROM messages_search WHERE room_id = ANY(?::bigint[]) AND id < ?"
            " AND words @@ ?::tsquery ORDER BY id DESC LIMIT ?", (room_ids, below, q, limit)).fetchall()
        return [row[0] for row in found]


def _newest(conn: Connection, q: str, room_ids: list[int], below: int, limit: int) -> list[int]:
    """The matches among each room's newest NEWEST_WALK rows below `below` that are certainly
    the newest of all: at or above the highest lowest id of a room whose walk stopped at
    NEWEST_WALK rows (a match it did not reach is older than that). Exact if `limit` of them."""
    walk = NEWEST_WALK
    if len(room_ids) == 1:  # the same, stopping at `limit` matches
        rows = conn.execute(
            "SELECT id FROM (SELECT id, words FROM messages_search WHERE room_id = ? AND id < ?"
            " ORDER BY id DESC LIMIT ?) AS newest WHERE words @@ ?::tsquery ORDER BY id DESC LIMIT ?",
            (room_ids[0], below, walk, q, limit)).fetchall()
        return [row[0] for row in rows]
    rows = conn.execute(
        "WITH w AS (SELECT n.room_id, n.id, n.words FROM unnest(?::bigint[]) AS r(room_id)"
        "  CROSS JOIN LATERAL (SELECT m.room_id, m.id, m.words FROM messages_search m"
        "   WHERE m.room_id = r.room_id AND m.id < ? ORDER BY m.id DESC LIMIT ?) AS n),"
        " cut AS (SELECT min(id) AS lo FROM w GROUP BY room_id HAVING count(*) = ?)"
        " SELECT id FROM w WHERE id >= (SELECT COALESCE(max(lo), 0) FROM cut)"
        " AND words @@ ?::tsquery ORDER BY id DESC LIMIT ?",
        (room_ids, below, walk, walk, q, limit)).fetchall()
    return [row[0] for row in rows]


PG_INDEX = PgTextIndex()
