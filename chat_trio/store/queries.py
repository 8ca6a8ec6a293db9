"""Every SQL statement of the server. Plain functions on a connection; they run in threads.

Write functions run inside the group-commit writer's transaction (see writer.py) and must not
BEGIN or COMMIT themselves. Those that change what the caches hold return (result, changes):
the change records (changes.py) of what they actually changed, none when they changed nothing.
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from typing import Any

from chat_trio.errors import APIError
from chat_trio.store.changes import (
    NO_CHANGES,
    Changes,
    InviteRemoved,
    MemberJoined,
    MessageCommitted,
    ReadMoved,
    RoomCreated,
    TokenIssued,
    TokensRevoked,
    UserCreated,
    UserUpdated,
)
from chat_trio.store.db import Connection
from chat_trio.store.records import Author, Message, User, entry_json, message_json
from chat_trio.store.search import SEARCH
from chat_trio.store.sqlite import sqlite3

Row = tuple[Any, ...]
# A timeline entry's columns (records.entry_json): a text message's first, then what other
# kinds add.
MESSAGE_COLUMNS = ("id, room_id, seq, author_id, text, txn_id, created_at,"
                   " kind, subject_id, changes, edited_at, deleted, target_seq, new_text")
TEXT_COLUMNS = "id, room_id, seq, author_id, text, txn_id, created_at"
Bucket = tuple[str, float, int]  # a token bucket kept in the database: (key, rate per second, burst)
# The rows of `limits` a write locks, declared so that PostgreSQL locks them first in key order
# (pgwriter.py): (key, the tokens a new row starts with).
Limits = tuple[tuple[str, float], ...]
ALL_ROWS = 2**62  # a LIMIT that takes every row (sqlite's LIMIT -1 is not portable)


class Conflict(Exception):
    """A rule refused the write; the message is the API's code: a taken username or room name,
    `last_admin` (no admin would be left), `deactivated` (the account is closed),
    `password_changed` (a login raced a password change)."""


class NothingWritten(Exception):
    """A write refused before it changed anything: its transaction stays good (PostgreSQL's
    writer goes on with the batch instead of rolling it back)."""


class NotMember(NothingWritten):
    """The user is not (or no longer) a member of the room the write is about."""


def name_key(name: str) -> str:
    """What room names are unique by (`rooms.name_key`): NFKC casefold, so a name in fullwidth
    letters, `General` and `general` collide."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def room_key(name: str, visibility: str) -> str:
    """A room's `name_key`: public rooms' names are unique (`name_key`); a private room's name
    takes nothing (so creating one reveals no private room's name): its key starts with U+0001,
    which no name holds, and is random."""
    if visibility == "public":
        return name_key(name)
    return "\x01private:" + secrets.token_hex(12)


# -- loading the in-memory state at start ---------------------------------------------------

def load_users(conn: Connection) -> list[Row]:
    return conn.execute("SELECT id, username, created_at, admin, deactivated FROM users").fetchall()


def load_rooms(conn: Connection) -> list[Row]:
    return conn.execute(
        "SELECT id, name, topic, created_by, created_at, last_seq, visibility, direct_a, direct_b"
        " FROM rooms ORDER BY id"
    ).fetchall()


def load_members(conn: Connection) -> list[Row]:
    return conn.execute("SELECT room_id, user_id, joined_at, role FROM members").fetchall()


def load_invites(conn: Connection) -> list[Row]:
    return conn.execute("SELECT room_id, user_id, invited_by, created_at FROM invites").fetchall()


def load_text_counts(conn: Connection) -> list[Row]:
    return conn.execute("SELECT id, text_count FROM rooms").fetchall()


def load_reads(conn: Connection) -> list[Row]:
    return conn.execute("SELECT room_id, user_id, read_seq, read_text_n FROM members").fetchall()


def delete_expired_tokens(conn: Connection, now: int) -> None:
    conn.execute("DELETE FROM tokens WHERE expires_at <= ?", (now,))


# -- accounts --------------------------------------------------------------------------------

def insert_user(conn: Connection, username: str, password_hash: str, now: int,
                admin: bool = False) -> tuple[int, Changes]:
    try:
        user_id: int = conn.execute(
            "INSERT INTO users (username, password_hash, created_at, admin) VALUES (?, ?, ?, ?) RETURNING id",
            (username, password_hash, now, int(admin)),
        ).fetchone()[0]
    except sqlite3.IntegrityError:
        raise Conflict("username_taken") from None
    created = UserCreated(user_id, username, now)
    return user_id, (created, UserUpdated(user_id, True, False)) if admin else (created,)


def password_hash(conn: Connection, username: str) -> Row | None:
    row: Row | None = conn.execute(
        "SELECT id, password_hash FROM users WHERE username = ?", (username,)
    ).fetchone()
    return row


def update_password_hash(conn: Connection, user_id: int, new_hash: str) -> None:
    conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (new_hash, user_id))


def insert_token(
    conn: Connection, digest: bytes, user_id: int, now: int, expires: int, keep: int,
    client: str = "", verified: str | None = None,
) -> tuple[None, Changes]:
    """Store a token; with `keep` > 0 also revoke the user's oldest live tokens beyond the newest
    `keep` (this one always stays). Refused (Conflict) for a closed account, and, given the
    password hash the login `verified`, when the password changed meanwhile: a login racing a
    password change or a deactivation must not outlive the revocation."""
    row = conn.execute("SELECT password_hash, deactivated FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None or row[1]:
        raise Conflict("deactivated")
    if verified is not None and row[0] != verified:
        raise Conflict("password_changed")
    conn.execute(
        "INSERT INTO tokens (hash, user_id, created_at, expires_at, public_id, client, last_seen_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (digest, user_id, now, expires, secrets.token_urlsafe(9), client, now),
    )
    conn.execute("UPDATE users SET last_seen_at = ? WHERE id = ?", (now, user_id))
    issued = TokenIssued(digest, user_id, expires)
    if keep <= 0:
        return None, (issued,)
    rows = conn.execute(
        "DELETE FROM tokens WHERE hash IN (SELECT hash FROM tokens WHERE user_id = ? AND expires_at > ?"
        " ORDER BY hash = ? DESC, created_at DESC LIMIT ? OFFSET ?) RETURNING hash",
        (user_id, now, digest, ALL_ROWS, keep),
    ).fetchall()
    if not rows:
        return None, (issued,)
    return None, (issued, TokensRevoked(tuple(row[0] for row in rows)))


def expired_tokens(conn: Connection, now: int, limit: int) -> list[bytes]:
    """Up to `limit` hashes of tokens expired by `now` (read-only: the scan runs on a reader)."""
    rows = conn.execute("SELECT hash FROM tokens WHERE expires_at <= ? LIMIT ?", (now, limit)).fetchall()
    return [row[0] for row in rows]


def delete_expired_tokens_by_hash(
    conn: Connection, digests: list[bytes], now: int
) -> tuple[None, Changes]:
    conn.executemany("DELETE FROM tokens WHERE hash = ? AND expires_at <= ?", [(d, now) for d in digests])
    return None, (TokensRevoked(tuple(digests)),) if digests else NO_CHANGES


def delete_token(conn: Connection, digest: bytes) -> tuple[None, Changes]:
    cur = conn.execute("DELETE FROM tokens WHERE hash = ?", (digest,))
    return None, (TokensRevoked((digest,)),) if cur.rowcount else NO_CHANGES


def token_owner(conn: Connection, digest: bytes) -> Row | None:
    row: Row | None = conn.execute(
        "SELECT user_id, expires_at FROM tokens WHERE hash = ?", (digest,)
    ).fetchone()
    return row


def revoke_user_tokens(conn: Connection, user_id: int, keep: bytes = b"") -> Changes:
    """Delete every token of the user but `keep`'s; the revocation of what was deleted."""
    rows = conn.execute("DELETE FROM tokens WHERE user_id = ? AND hash <> ? RETURNING hash",
                        (user_id, keep)).fetchall()
    return (TokensRevoked(tuple(row[0] for row in rows)),) if rows else NO_CHANGES


def set_password(conn: Connection, user_id: int, new_hash: str, keep: bytes) -> tuple[None, Changes]:
    """A new password: every token of the user but `keep` (the caller's own, or none) stops working."""
    if conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (new_hash, user_id)).rowcount == 0:
        raise Conflict("not_found")
    return None, revoke_user_tokens(conn, user_id, keep)


def delete_session(conn: Connection, user_id: int, public_id: str) -> tuple[bool, Changes]:
    rows = conn.execute("DELETE FROM tokens WHERE user_id = ? AND public_id = ? RETURNING hash",
                        (user_id, public_id)).fetchall()
    return bool(rows), (TokensRevoked(tuple(row[0] for row in rows)),) if rows else NO_CHANGES


def sessions(conn: Connection, user_id: int, now: int) -> list[Row]:
    """(public id, created_at, last_seen_at, client, hash) of the user's live tokens, oldest first."""
    return conn.execute(
        "SELECT public_id, created_at, last_seen_at, client, hash FROM tokens"
        " WHERE user_id = ? AND expires_at > ? ORDER BY created_at, public_id",
        (user_id, now),
    ).fetchall()


def touch_token(conn: Connection, digest: bytes, now: int) -> None:
    """Record that a token was used (its session's and its user's last_seen_at); callers do it
    at most about once a minute per token."""
    conn.execute("UPDATE tokens SET last_seen_at = ? WHERE hash = ?", (now, digest))
    conn.execute("UPDATE users SET last_seen_at = ? WHERE id = (SELECT user_id FROM tokens WHERE hash = ?)",
                 (now, digest))


def _other_admins(conn: Connection, user_id: int) -> int:
    row = conn.execute("SELECT COUNT(*) FROM users WHERE admin = 1 AND deactivated = 0 AND id <> ?",
                       (user_id,)).fetchone()
    return int(row[0])


def _flags(conn: Connection, user_id: int) -> tuple[bool, bool]:
    row = conn.execute("SELECT admin, deactivated FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        raise Conflict("not_found")
    return bool(row[0]), bool(row[1])


def set_admin(conn: Connection, user_id: int, admin: bool) -> tuple[None, Changes]:
    """Promote or demote; at least one active admin always remains, and a closed account cannot
    become one."""
    was_admin, deactivated = _flags(conn, user_id)
    if admin == was_admin:
        return None, NO_CHANGES
    if deactivated:
        raise Conflict("deactivated")
    if not admin and _other_admins(conn, user_id) == 0:
        raise Conflict("last_admin")
    conn.execute("UPDATE users SET admin = ? WHERE id = ?", (int(admin), user_id))
    return None, (UserUpdated(user_id, admin, False),)


def deactivate_user(conn: Connection, user_id: int) -> tuple[list[int], Changes]:
    """Close an account: no admin any more (the last active admin cannot go), every token
    revoked, every pending invite voided. The row stays, so its username stays taken and its
    messages keep their author. Returns the rooms it is still a member of (the caller removes it,
    with their timeline entries); closing a closed account changes nothing."""
    was_admin, deactivated = _flags(conn, user_id)
    if deactivated:
        return [], NO_CHANGES
    if was_admin and _other_admins(conn, user_id) == 0:
        raise Conflict("last_admin")
    conn.execute("UPDATE users SET deactivated = 1, admin = 0 WHERE id = ?", (user_id,))
    invites = conn.execute("DELETE FROM invites WHERE user_id = ? RETURNING room_id", (user_id,)).fetchall()
    rooms = conn.execute("SELECT room_id FROM members WHERE user_id = ? ORDER BY room_id",
                         (user_id,)).fetchall()
    return [room_id for (room_id,) in rooms], (
        UserUpdated(user_id, False, True), *revoke_user_tokens(conn, user_id),
        *(InviteRemoved(room_id, user_id) for (room_id,) in sorted(invites)))


def account_rooms(conn: Connection, user_id: int, erase: bool) -> list[int]:
    """The rooms closing the account changes: those it is a member of (it leaves them) and, with
    `erase`, those holding its texts (each gets an `erase` entry), as timeline.erase_author finds
    them."""
    written = (" UNION SELECT DISTINCT room_id FROM messages"
               " WHERE author_id = ? AND kind = 'text' AND deleted = 0") if erase else ""
    rows = conn.execute(f"SELECT room_id FROM members WHERE user_id = ?{written}",
                        (user_id, user_id) if erase else (user_id,)).fetchall()
    return [room_id for (room_id,) in rows]


def users_page(conn: Connection, prefix: str, after: int, limit: int) -> list[Row]:
    """(id, last_seen_at) of up to `limit` users with id > `after` whose username starts with
    `prefix` (ignoring case), in id order."""
    pattern = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return conn.execute(
        "SELECT id, last_seen_at FROM users WHERE id > ? AND LOWER(username) LIKE ? ESCAPE '\\'"
        " ORDER BY id LIMIT ?",
        (after, pattern, limit),
    ).fetchall()


def messages_by_author(conn: Connection, user_id: int, after_id: int, limit: int) -> list[Row]:
    """A page of the messages (text entries, not room events) the user wrote, in id order, after
    message id `after_id`."""
    return conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE author_id = ? AND id > ? AND kind = 'text'"
        " ORDER BY id LIMIT ?",
        (user_id, after_id, limit),
    ).fetchall()


# -- rooms -----------------------------------------------------------------------------------

def insert_room(
    conn: Connection, name: str, topic: str, user_id: int, now: int, visibility: str = "public"
) -> tuple[int, Changes]:
    """Create a room; its creator is its first member and its owner. No timeline entry: its
    first member is a member from seq 0."""
    try:
        room_id: int = conn.execute(
            "INSERT INTO rooms (name, name_key, topic, created_by, created_at, visibility)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (name, room_key(name, visibility), topic, user_id, now, visibility),
        ).fetchone()[0]
    except sqlite3.IntegrityError:
        raise Conflict("room_name_taken") from None
    conn.execute("INSERT INTO members (room_id, user_id, joined_at, role) VALUES (?, ?, ?, 'owner')",
                 (room_id, user_id, now))
    return room_id, (RoomCreated(room_id, name, topic, user_id, now, visibility),
                     MemberJoined(room_id, user_id, now, "owner"))


# -- messages --------------------------------------------------------------------------------

def insert_message(
    conn: Connection, room_id: int, author: User | Author, text: str, txn_id: str | None, now: int,
    bucket: Bucket | None = None,
) -> tuple[tuple[Message, bool], Changes]:
    """Append a message with the room's next seq; returns (message, created). With a txn_id
    already used by this author in this room, nothing is written and the original comes back
    (created=False). With a `bucket` (a limit shared between nodes), a new message takes a token
    from it first (Limited when empty); a retry takes none."""
    author_id = author["id"]
    if txn_id is not None:
        row = message_by_txn(conn, room_id, author_id, txn_id)
        if row is not None:
            return (entry_json(row, {author_id: author}), False), NO_CHANGES
    if bucket is not None:
        take_token(conn, *bucket, now)
    # The seq only while the author is a member, in the same statement: a send checked against
    # the state before a kick or ban that commits first in the same batch must not land after it.
    found = conn.execute(
        "UPDATE rooms SET last_seq = last_seq + 1, text_count = text_count + 1 WHERE id = ?"
        " AND EXISTS (SELECT 1 FROM members WHERE room_id = ? AND user_id = ?)"
        " RETURNING last_seq, text_count",
        (room_id, room_id, author_id),
    ).fetchone()
    if found is None:
        raise outsider(conn, room_id, author_id)
    seq, text_n = found
    message_id = conn.execute(
        "INSERT INTO messages (room_id, seq, author_id, text, txn_id, created_at, text_n)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (room_id, seq, author_id, text, txn_id, now, text_n),
    ).fetchone()[0]
    SEARCH.add(conn, message_id, room_id, text)
    move_own_marker(conn, room_id, author_id, seq, text_n)
    message = message_json((message_id, room_id, seq, author_id, text, txn_id, now), author)
    return (message, True), (MessageCommitted(message),)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to append (`insert_message`'s arguments), handed to the writer as data too, so
    PostgreSQL's writer can append a batch's messages in bulk (pgwriter.py)."""

    room_id: int
    author: User | Author
    text: str
    txn_id: str | None
    now: int
    bucket: Bucket | None = None

    def insert(self, conn: Connection) -> tuple[tuple[Message, bool], Changes]:
        return insert_message(conn, self.room_id, self.author, self.text, self.txn_id, self.now, self.bucket)


def invited(conn: Connection, room_id: int, user_id: int) -> bool:
    return conn.execute("SELECT 1 FROM invites WHERE room_id = ? AND user_id = ?",
                        (room_id, user_id)).fetchone() is not None


def outsider(conn: Connection, room_id: int, user_id: int,
             why: str = "you are not a member of this room") -> APIError:
    """The refusal for someone who is not a member: a room that does not exist, or a private
    room they hold no invite to, does not exist for them (404, never 403); any other refuses
    them (403)."""
    row = conn.execute("SELECT visibility FROM rooms WHERE id = ?", (room_id,)).fetchone()
    if row is None or (row[0] == "private" and not invited(conn, room_id, user_id)):
        return APIError(404, "not_found", "no such room")
    return APIError(403, "forbidden", why)


def next_seq(conn: Connection, room_id: int, author_id: int | None = None) -> int:
    """Take the room's next seq for a new timeline entry (message or room event); the marker of
    its author (who acted), if given, moves to it."""
    seq: int
    seq, text_n = conn.execute(
        "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq, text_count", (room_id,)
    ).fetchone()
    if author_id is not None:
        move_own_marker(conn, room_id, author_id, seq, text_n)
    return seq


def move_own_marker(conn: Connection, room_id: int, user_id: int, seq: int, text_n: int) -> None:
    """A member's own entry (a message, an edit, a join...) moves their read marker to it
    (State._add_message does the same); nothing for a user who is not a member."""
    conn.execute("UPDATE members SET read_seq = ?, read_text_n = ? WHERE room_id = ? AND user_id = ?",
                 (seq, text_n, room_id, user_id))


def message_by_txn(conn: Connection, room_id: int, author_id: int, txn_id: str) -> Row | None:
    """The author's message with this txn_id in this room, if any."""
    row: Row | None = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ? AND author_id = ? AND txn_id = ?",
        (room_id, author_id, txn_id),
    ).fetchone()
    return row


def messages_between(conn: Connection, room_id: int, first: int, last: int) -> list[Row]:
    """Messages with first <= seq <= last, ascending."""
    return conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ? AND seq BETWEEN ? AND ?"
        " ORDER BY seq",
        (room_id, first, last),
    ).fetchall()


def messages_by_id(conn: Connection, ids: list[int]) -> list[Row]:
    """The messages with these ids, in the order given (missing ones left out)."""
    if not ids:
        return []
    rows = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN ({', '.join('?' * len(ids))})", ids
    ).fetchall()
    by_id = {row[0]: row for row in rows}
    return [by_id[i] for i in ids if i in by_id]


# -- read markers and search -----------------------------------------------------------------

def move_read_marker(conn: Connection, room_id: int, user_id: int, seq: int) -> tuple[int, Changes]:
    """Move a member's marker forward to `seq` (clamped to the room's last seq; a lower one
    changes nothing). Returns the marker after the call; None if `user_id` is not a member."""
    last_seq = conn.execute("SELECT last_seq FROM rooms WHERE id = ?", (room_id,)).fetchone()[0]
    current = conn.execute("SELECT read_seq FROM members WHERE room_id = ? AND user_id = ?",
                           (room_id, user_id)).fetchone()
    if current is None:
        raise NotMember()
    target = min(seq, last_seq)
    if target <= current[0]:
        return current[0], NO_CHANGES
    row = conn.execute(
        "SELECT text_n FROM messages WHERE room_id = ? AND seq <= ? AND text_n IS NOT NULL"
        " ORDER BY seq DESC LIMIT 1", (room_id, target)
    ).fetchone()
    text_n = 0 if row is None else row[0]
    conn.execute("UPDATE members SET read_seq = ?, read_text_n = ? WHERE room_id = ? AND user_id = ?",
                 (target, text_n, room_id, user_id))
    return target, (ReadMoved(room_id, user_id, target, text_n),)


def search(conn: Connection, query_words: list[str], room_ids: list[int], before: int | None,
           limit: int) -> list[Row]:
    """Message rows matching every word (by prefix) in these rooms, newest first."""
    return messages_by_id(conn, SEARCH.find(conn, query_words, room_ids, before, limit))


# -- limits shared between nodes (PostgreSQL; one sqlite process keeps them in memory) ---------

class Limited(NothingWritten):
    """Over a limit kept in the database: `wait` seconds until the next is allowed. The write
    changed nothing (its transaction stays good for the batch's other writes)."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"limited for {wait:.3f} s")
        self.wait = wait


def _locked_limit(conn: Connection, key: str, tokens: float, now: int) -> Row:
    """The key's row of `limits` (created with `tokens` if new), locked until COMMIT: nodes
    deciding the same key take turns."""
    row: Row = conn.execute(
        "INSERT INTO limits (key, tokens, at) VALUES (?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET at = limits.at RETURNING tokens, at",
        (key, tokens, now),
    ).fetchone()
    return row


def locked_bucket(conn: Connection, key: str, burst: int, now: int) -> Row:
    """(tokens, at) of `key`'s bucket, locked until COMMIT (a new bucket is full)."""
    return _locked_limit(conn, key, float(burst), now)


def bucket_limits(bucket: Bucket | None) -> Limits:
    """The limit row taking a token from `bucket` locks (a new bucket is full)."""
    return () if bucket is None else ((bucket[0], float(bucket[2])),)


def refill(tokens: float, at: int, now: int, rate: float, burst: int) -> float:
    """The tokens at `now` of a bucket that held `tokens` at `at` (`rate` per second, up to
    `burst`), as security.ratelimit.TokenBucket refills in memory."""
    return min(float(burst), tokens + max(0, now - at) * rate / 1000)


def save_bucket(conn: Connection, key: str, tokens: float, now: int) -> None:
    conn.execute("UPDATE limits SET tokens = ?, at = ? WHERE key = ?", (tokens, now, key))


def take_token(conn: Connection, key: str, rate: float, burst: int, now: int) -> None:
    """Take one token from `key`'s bucket in the database; Limited when there is none."""
    tokens, at = locked_bucket(conn, key, burst, now)
    tokens = refill(tokens, at, now, rate, burst)
    if tokens < 1.0:
        raise Limited((1.0 - tokens) / rate)
    save_bucket(conn, key, tokens - 1.0, now)


def count_event(conn: Connection, key: str, limit: int, window_ms: int, now: int) -> None:
    """Count one event for `key` if fewer than `limit` happened within the window, as
    security.ratelimit.WindowLimit does in memory; Limited otherwise."""
    _locked_limit(conn, key, 0.0, now)
    conn.execute("DELETE FROM limit_events WHERE key = ? AND at <= ?", (key, now - window_ms))
    count, oldest = conn.execute(
        "SELECT count(*), min(at) FROM limit_events WHERE key = ?", (key,)).fetchone()
    if count >= limit:
        raise Limited((oldest + window_ms - now) / 1000)
    conn.execute("INSERT INTO limit_events (key, at) VALUES (?, ?)", (key, now))


def purge_limits(conn: Connection, before: int) -> None:
    """Forget limit rows untouched since `before` (a full bucket or an empty window by then)."""
    conn.execute("DELETE FROM limits WHERE at < ?", (before,))
    conn.execute("DELETE FROM limit_events WHERE at < ?", (before,))
