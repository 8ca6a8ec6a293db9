"""The SQL of changing what is already in a room's timeline: edits, deletes and erasure.

Like queries.py, every function runs inside the group-commit writer's transaction and returns
(result, changes); the rules are decided here, on what is committed (a refusal raises its
APIError and the writer rolls the write back). An edit or a delete is itself a timeline entry
with the room's next seq, in the same transaction as the change it records, so a client that
resumes with `after` learns of it like of any message.

Erasing (`erase_text`: a delete, or an account's erasure) overwrites the stored text in place
and forgets it in the search index in the same transaction; the writer's connection runs with
`secure_delete`, so the old text does not linger in freed database pages.
"""

from __future__ import annotations

import sqlite3

from chat_trio.errors import APIError
from chat_trio.store import membership
from chat_trio.store.changes import Changes, MessageCommitted, TextErased
from chat_trio.store.queries import Row, message_by_txn, next_seq
from chat_trio.store.records import RANK, Message, User, change_json, entry_json, message_json
from chat_trio.store.search import SEARCH


def no_such_message() -> APIError:
    return APIError(404, "not_found", "no such message")


def not_editable() -> APIError:
    return APIError(409, "not_editable", "only text messages that are not deleted can be edited or deleted")


def _rank(conn: sqlite3.Connection, room_id: int, user_id: int) -> int:
    """The user's rank in the room as committed (records.RANK; a server admin ranks as owner);
    403 if they are not a member, 404 for a private room they may not know of."""
    return membership._authority(conn, membership._Room(conn, room_id), user_id, "member")


def _target(conn: sqlite3.Connection, room_id: int, seq: int) -> Row:
    """The text entry at `seq`, not deleted: (id, author_id, text); 404 or 409 otherwise."""
    row: Row | None = conn.execute(
        "SELECT id, author_id, text, kind, deleted FROM messages WHERE room_id = ? AND seq = ?",
        (room_id, seq),
    ).fetchone()
    if row is None:
        raise no_such_message()
    if row[3] != "text" or row[4]:
        raise not_editable()
    return row[:3]


def _append(conn: sqlite3.Connection, room_id: int, actor: User, kind: str, target_seq: int,
            new_text: str | None, txn_id: str | None, now: int) -> Message:
    """An edit or delete entry with the room's next seq; its `text` says what happened."""
    verb = "edited" if kind == "edit" else "deleted"
    summary = f"{actor['username']} {verb} message {target_seq}"
    seq = next_seq(conn, room_id, actor["id"])
    cur = conn.execute(
        "INSERT INTO messages (room_id, seq, author_id, text, txn_id, created_at, kind, target_seq, new_text)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (room_id, seq, actor["id"], summary, txn_id, now, kind, target_seq, new_text),
    )
    entry = message_json((cur.lastrowid, room_id, seq, actor["id"], summary, txn_id, now), actor)
    return change_json(entry, kind, target_seq, new_text)


def edit_message(conn: sqlite3.Connection, room_id: int, editor: User, seq: int, text: str,
                 txn_id: str | None, now: int) -> tuple[Message, Changes]:
    """Replace the text of the editor's own message `seq`; returns the edit entry. With a
    txn_id this editor already used in this room, nothing is written and that edit comes back."""
    if txn_id is not None:
        row = message_by_txn(conn, room_id, editor["id"], txn_id)
        if row is not None:
            entry = entry_json(row, {editor["id"]: editor})
            if entry["kind"] != "edit" or entry["target_seq"] != seq:
                raise APIError(422, "validation_failed", "txn_id: already used for another message",
                               extra={"field": "txn_id"})
            return entry, ()
    _rank(conn, room_id, editor["id"])
    message_id, author_id, old_text = _target(conn, room_id, seq)
    if author_id != editor["id"]:
        raise APIError(403, "forbidden", "only its author may edit a message")
    SEARCH.remove(conn, message_id, room_id, old_text)
    SEARCH.add(conn, message_id, room_id, text)
    conn.execute("UPDATE messages SET text = ?, edited_at = ? WHERE id = ?", (text, now, message_id))
    entry = _append(conn, room_id, editor, "edit", seq, text, txn_id, now)
    return entry, (MessageCommitted(entry),)


def delete_message(conn: sqlite3.Connection, room_id: int, actor: User, seq: int,
                   now: int) -> tuple[Message, Changes]:
    """Delete message `seq` (its author's own, or anyone's for a moderator, the owner or a server
    admin): its text is erased (erase_text); returns the delete entry."""
    rank = _rank(conn, room_id, actor["id"])
    message_id, author_id, old_text = _target(conn, room_id, seq)
    if author_id != actor["id"] and rank < RANK["moderator"]:
        raise APIError(403, "forbidden", "only its author or a moderator may delete a message")
    erased = erase_text(conn, room_id, [(message_id, seq, old_text)])
    entry = _append(conn, room_id, actor, "delete", seq, None, None, now)
    return entry, (erased, MessageCommitted(entry))


def erase_text(conn: sqlite3.Connection, room_id: int, targets: list[tuple[int, int, str]]) -> TextErased:
    """Erase text entries of a room, given as (id, seq, current text), none deleted yet: their
    text becomes "" and `deleted` 1, the new text of every edit made to them "" too, and the
    search index forgets them, all in the caller's transaction. The one way text is erased: a
    delete and an account's erasure both come here."""
    for message_id, seq, text in targets:
        SEARCH.remove(conn, message_id, room_id, text)
        conn.execute("UPDATE messages SET text = '', deleted = 1 WHERE id = ?", (message_id,))
        conn.execute("UPDATE messages SET new_text = '' WHERE room_id = ? AND target_seq = ?"
                     " AND kind = 'edit'", (room_id, seq))
    return TextErased(room_id, tuple(seq for _, seq, _ in targets))


def erase_author(conn: sqlite3.Connection, user_id: int) -> tuple[list[int], Changes]:
    """Erase every text entry the user wrote that is not deleted yet (an account's erasure),
    through erase_text: the rooms it wrote in, ascending, and a TextErased for each."""
    rows = conn.execute(
        "SELECT room_id, id, seq, text FROM messages WHERE author_id = ? AND kind = 'text' AND deleted = 0"
        " ORDER BY room_id, seq", (user_id,)
    ).fetchall()
    by_room: dict[int, list[tuple[int, int, str]]] = {}
    for room_id, message_id, seq, text in rows:
        by_room.setdefault(room_id, []).append((message_id, seq, text))
    return list(by_room), tuple(erase_text(conn, room_id, targets) for room_id, targets in by_room.items())


def load_deleted(conn: sqlite3.Connection) -> list[Row]:
    """(room_id, seq) of every deleted text entry, for the unread counts."""
    return conn.execute("SELECT room_id, seq FROM messages WHERE deleted = 1 AND kind = 'text'"
                        " ORDER BY room_id, seq").fetchall()

