"""The SQL of who is in a room and with what rights: joins, leaves, kicks, bans, invites, roles,
room changes and direct rooms, each with the room event it adds to the timeline.

Like queries.py, every function runs inside the group-commit writer's transaction and returns
(result, changes). The rules are decided here, on what is committed, not on a cache that may lag
(a worker's, or a request's view from before a racing change): a refusal raises its APIError and
the writer rolls the write back. A room event takes the room's next seq in the same transaction as
the change it records, so the timeline and the membership never disagree. A change that changes
nothing (a repeated join, leave, ban or invite) writes nothing and adds no entry.
"""

from __future__ import annotations

import orjson

from chat_trio.errors import APIError
from chat_trio.store.changes import (
    NO_CHANGES,
    Change,
    Changes,
    Invited,
    InviteRemoved,
    MemberJoined,
    MemberLeft,
    MessageCommitted,
    RoleChanged,
    RoomCreated,
    RoomUpdated,
)
from chat_trio.store.db import Connection
from chat_trio.store.queries import Conflict, name_key, next_seq, outsider, room_key
from chat_trio.store.queries import invited as _invited
from chat_trio.store.records import RANK, RoomChanges, User, event_json
from chat_trio.store.sqlite import sqlite3

# -- refusals --------------------------------------------------------------------------------


def not_found(what: str = "no such room") -> APIError:
    return APIError(404, "not_found", what)


def forbidden(why: str) -> APIError:
    return APIError(403, "forbidden", why)


def already_member() -> APIError:
    return APIError(409, "already_member", "that user is a member of this room already")


def banned(message: str = "you are banned from this room") -> APIError:
    return APIError(403, "banned", message)


class _Room:
    """The committed row of a room, as the rules need it."""

    __slots__ = ("direct", "id", "name", "private", "topic")

    def __init__(self, conn: Connection, room_id: int) -> None:
        row = conn.execute("SELECT name, topic, visibility, direct_a FROM rooms WHERE id = ?",
                           (room_id,)).fetchone()
        if row is None:
            raise not_found()
        self.id = room_id
        self.name, self.topic = row[0], row[1]
        self.private = row[2] == "private"
        self.direct = row[3] is not None


def _role(conn: Connection, room_id: int, user_id: int) -> str | None:
    row = conn.execute("SELECT role FROM members WHERE room_id = ? AND user_id = ?",
                       (room_id, user_id)).fetchone()
    return None if row is None else str(row[0])


def _banned(conn: Connection, room_id: int, user_id: int) -> bool:
    return conn.execute("SELECT 1 FROM bans WHERE room_id = ? AND user_id = ?",
                        (room_id, user_id)).fetchone() is not None


def _outsider(conn: Connection, room: _Room, user_id: int, why: str) -> APIError:
    """The refusal for someone who is not a member (queries.outsider)."""
    return outsider(conn, room.id, user_id, why)


def _admin(conn: Connection, user_id: int) -> bool:
    """A server admin (an active account): it acts as owner in any room, member or not."""
    return conn.execute("SELECT 1 FROM users WHERE id = ? AND admin = 1 AND deactivated = 0",
                        (user_id,)).fetchone() is not None


def _authority(conn: Connection, room: _Room, actor_id: int, need: str) -> int:
    """The actor's rank, if at least `need`'s; else the refusal. A server admin ranks as owner."""
    if _admin(conn, actor_id):
        return RANK["owner"]
    role = _role(conn, room.id, actor_id)
    if role is None:
        raise _outsider(conn, room, actor_id, "you are not a member of this room")
    if RANK[role] < RANK[need]:
        raise forbidden(f"only a room's {need}{'s' if need != 'owner' else ''} may do that")
    return RANK[role]


def _over(conn: Connection, room: _Room, actor_id: int, target_id: int) -> str | None:
    """A moderator or owner acting on someone of a lower role (a non-member has none): the
    target's role. Acting on an equal or higher role, oneself included, is 403."""
    rank = _authority(conn, room, actor_id, "moderator")
    if room.direct:
        raise forbidden("a direct room has no kicks, bans or role changes")
    target = _role(conn, room.id, target_id)
    if target is not None and RANK[target] >= rank:
        raise forbidden("you may only act on members of a lower role than yours")
    return target


# -- the timeline ----------------------------------------------------------------------------


def append_event(conn: Connection, room_id: int, kind: str, actor: User, subject: User | None,
                 text: str, now: int, changes: RoomChanges | None = None) -> MessageCommitted:
    """Add a room event with the room's next seq; `text` is its human-readable summary."""
    seq = next_seq(conn, room_id, actor["id"])
    entry_id = conn.execute(
        "INSERT INTO messages (room_id, seq, author_id, text, created_at, kind, subject_id, changes)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (room_id, seq, actor["id"], text, now, kind, None if subject is None else subject["id"],
         None if changes is None else orjson.dumps(changes).decode()),
    ).fetchone()[0]
    row = (entry_id, room_id, seq, actor["id"], text, None, now)
    return MessageCommitted(event_json(row, actor, kind, subject, changes))


def _with_reason(text: str, reason: str | None) -> str:
    return f"{text}: {reason}" if reason else text


def _summary(actor: User, changes: RoomChanges) -> str:
    parts = []
    if "name" in changes:
        parts.append(f"renamed the room to \u201c{changes['name']}\u201d")
    if "topic" in changes:
        parts.append(f"changed the topic to \u201c{changes['topic']}\u201d" if changes["topic"]
                     else "cleared the topic")
    if "visibility" in changes:
        parts.append(f"made the room {changes['visibility']}")
    return f"{actor['username']} " + " and ".join(parts)


# -- joining and leaving ---------------------------------------------------------------------


def _add_member(conn: Connection, room_id: int, user: User, now: int, role: str) -> list[Change]:
    conn.execute("INSERT INTO members (room_id, user_id, joined_at, role) VALUES (?, ?, ?, ?)",
                 (room_id, user["id"], now, role))
    return [MemberJoined(room_id, user["id"], now, role),
            append_event(conn, room_id, "join", user, user, f"{user['username']} joined", now)]


def join(conn: Connection, room_id: int, user: User, now: int) -> tuple[None, Changes]:
    """Join a public room, or a private one with an invite (consumed). Whoever joins a room that
    has no members becomes its owner, so a room with members always has one."""
    room = _Room(conn, room_id)
    user_id = user["id"]
    if _role(conn, room_id, user_id) is not None:
        return None, NO_CHANGES
    invited = _invited(conn, room_id, user_id)
    if room.direct or (room.private and not invited and not _admin(conn, user_id)):
        raise not_found()
    if _banned(conn, room_id, user_id):
        raise banned()
    made: list[Change] = []
    if invited:
        conn.execute("DELETE FROM invites WHERE room_id = ? AND user_id = ?", (room_id, user_id))
        made.append(InviteRemoved(room_id, user_id))
    empty = conn.execute("SELECT 1 FROM members WHERE room_id = ? LIMIT 1", (room_id,)).fetchone() is None
    made += _add_member(conn, room_id, user, now, "owner" if empty and not room.direct else "member")
    return None, tuple(made)


def leave(conn: Connection, room_id: int, user: User, now: int) -> tuple[None, Changes]:
    """Leave (idempotent). An owner who leaves hands the room to its longest-standing moderator,
    or else its longest-standing member."""
    _Room(conn, room_id)
    return None, tuple(_remove(conn, room_id, user, now, "leave", f"{user['username']} left", user))


def _remove(conn: Connection, room_id: int, subject: User, now: int, kind: str, text: str,
            actor: User) -> list[Change]:
    """End a membership with a `kind` entry (nothing if not a member)."""
    role = _role(conn, room_id, subject["id"])
    if role is None:
        return []
    made: list[Change] = [append_event(conn, room_id, kind, actor, subject, text, now)]
    conn.execute("DELETE FROM members WHERE room_id = ? AND user_id = ?", (room_id, subject["id"]))
    reason = {"leave": "left", "kick": "kicked", "ban": "banned"}[kind]
    made.append(MemberLeft(room_id, subject["id"], reason))
    if role == "owner":
        heir = conn.execute(
            "SELECT user_id FROM members WHERE room_id = ?"
            " ORDER BY CASE role WHEN 'moderator' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1",
            (room_id,)).fetchone()
        if heir is not None:
            conn.execute("UPDATE members SET role = 'owner' WHERE room_id = ? AND user_id = ?",
                         (room_id, heir[0]))
            made.append(RoleChanged(room_id, heir[0], "owner"))
    return made


# -- moderation ------------------------------------------------------------------------------


def kick(conn: Connection, room_id: int, actor: User, target: User, reason: str | None,
         now: int) -> tuple[None, Changes]:
    room = _Room(conn, room_id)
    if _over(conn, room, actor["id"], target["id"]) is None:
        raise not_found("that user is not a member of this room")
    text = _with_reason(f"{actor['username']} kicked {target['username']}", reason)
    return None, tuple(_remove(conn, room_id, target, now, "kick", text, actor))


def ban(conn: Connection, room_id: int, actor: User, target: User, reason: str | None,
        now: int) -> tuple[None, Changes]:
    """Ban a member (who is removed) or anyone else; a pending invite of theirs is withdrawn.
    Banning someone banned already changes nothing."""
    room = _Room(conn, room_id)
    was = _over(conn, room, actor["id"], target["id"])
    if _banned(conn, room_id, target["id"]):
        return None, NO_CHANGES
    conn.execute("INSERT INTO bans (room_id, user_id, banned_by, reason, created_at) VALUES (?, ?, ?, ?, ?)",
                 (room_id, target["id"], actor["id"], reason, now))
    made: list[Change] = []
    withdrawn = conn.execute("DELETE FROM invites WHERE room_id = ? AND user_id = ?", (room_id, target["id"]))
    if withdrawn.rowcount:
        made.append(InviteRemoved(room_id, target["id"]))
    text = _with_reason(f"{actor['username']} banned {target['username']}", reason)
    if was is None:
        made.append(append_event(conn, room_id, "ban", actor, target, text, now))
    else:
        made += _remove(conn, room_id, target, now, "ban", text, actor)
    return None, tuple(made)


def unban(conn: Connection, room_id: int, actor_id: int, target_id: int) -> tuple[None, Changes]:
    room = _Room(conn, room_id)
    _authority(conn, room, actor_id, "moderator")
    conn.execute("DELETE FROM bans WHERE room_id = ? AND user_id = ?", (room_id, target_id))
    return None, NO_CHANGES  # nothing cached: bans are read from the database


def bans(conn: Connection, room_id: int) -> list[tuple[int, int, str | None, int]]:
    """(user id, banned_by, reason, created_at) of a room's bans, oldest first (read-only)."""
    return conn.execute("SELECT user_id, banned_by, reason, created_at FROM bans WHERE room_id = ?"
                        " ORDER BY created_at, user_id", (room_id,)).fetchall()


def invite(conn: Connection, room_id: int, actor_id: int, target_id: int,
           now: int) -> tuple[None, Changes]:
    """Invite (idempotent: a pending invite stays as it is)."""
    room = _Room(conn, room_id)
    _authority(conn, room, actor_id, "moderator")
    if room.direct:
        raise forbidden("nobody can be invited into a direct room")
    if _role(conn, room_id, target_id) is not None:
        raise already_member()
    if _banned(conn, room_id, target_id):
        raise banned("that user is banned from this room")
    if _invited(conn, room_id, target_id):
        return None, NO_CHANGES
    conn.execute("INSERT INTO invites (room_id, user_id, invited_by, created_at) VALUES (?, ?, ?, ?)",
                 (room_id, target_id, actor_id, now))
    return None, (Invited(room_id, target_id, actor_id, now),)


def uninvite(conn: Connection, room_id: int, actor_id: int, target_id: int) -> tuple[None, Changes]:
    """Withdraw an invite (a moderator or the owner), or decline it (the invitee)."""
    room = _Room(conn, room_id)
    if actor_id != target_id:
        _authority(conn, room, actor_id, "moderator")
    elif room.private and not _invited(conn, room_id, actor_id) and _role(conn, room_id, actor_id) is None:
        raise not_found()
    cur = conn.execute("DELETE FROM invites WHERE room_id = ? AND user_id = ?", (room_id, target_id))
    return None, (InviteRemoved(room_id, target_id),) if cur.rowcount else NO_CHANGES


def set_role(conn: Connection, room_id: int, actor_id: int, target_id: int,
             role: str) -> tuple[None, Changes]:
    """The owner sets a member's role; making someone else owner makes the old owner a moderator."""
    room = _Room(conn, room_id)
    _authority(conn, room, actor_id, "owner")
    if room.direct:
        raise forbidden("a direct room has no kicks, bans or role changes")
    if target_id == actor_id:
        raise forbidden("you may only act on members of a lower role than yours")
    current = _role(conn, room_id, target_id)
    if current is None:
        raise not_found("that user is not a member of this room")
    if current == role:
        return None, NO_CHANGES
    if current == "owner":  # only an admin acting for the owner gets here
        raise forbidden("a room always has an owner: make another member owner instead")
    made: list[Change] = []
    update = "UPDATE members SET role = ? WHERE room_id = ? AND user_id = ?"
    if role == "owner":  # the owner (the actor, unless an admin acts for it) steps down
        owner = conn.execute("SELECT user_id FROM members WHERE room_id = ? AND role = 'owner'",
                             (room_id,)).fetchone()
        if owner is not None:
            conn.execute(update, ("moderator", room_id, owner[0]))
            made.append(RoleChanged(room_id, owner[0], "moderator"))
    conn.execute(update, (role, room_id, target_id))
    made.append(RoleChanged(room_id, target_id, role))
    return None, tuple(made)


def update_room(conn: Connection, room_id: int, actor: User, name: str | None, topic: str | None,
                visibility: str | None, now: int) -> tuple[None, Changes]:
    """Change a room's name, topic or visibility (a moderator or the owner). Only the fields that
    really change count; with none, nothing is written. A public room's name must be free."""
    room = _Room(conn, room_id)
    _authority(conn, room, actor["id"], "moderator")
    if room.direct:
        raise forbidden("a direct room cannot be renamed or made public")
    changes: RoomChanges = {}
    if name is not None and name != room.name:
        changes["name"] = name
    if topic is not None and topic != room.topic:
        changes["topic"] = topic
    old_visibility = "private" if room.private else "public"
    if visibility is not None and visibility != old_visibility:
        changes["visibility"] = visibility
    if not changes:
        return None, NO_CHANGES
    new_name, new_visibility = changes.get("name", room.name), changes.get("visibility", old_visibility)
    new_topic = changes.get("topic", room.topic)
    key_changes = new_visibility == "public" and ("visibility" in changes or
                                                 name_key(new_name) != name_key(room.name))
    try:
        if key_changes or "visibility" in changes:
            conn.execute("UPDATE rooms SET name_key = ? WHERE id = ?",
                         (room_key(new_name, new_visibility), room_id))
        conn.execute("UPDATE rooms SET name = ?, topic = ?, visibility = ? WHERE id = ?",
                     (new_name, new_topic, new_visibility, room_id))
    except sqlite3.IntegrityError:
        raise Conflict("room_name_taken") from None
    entry = append_event(conn, room_id, "room_updated", actor, None, _summary(actor, changes), now, changes)
    return None, (RoomUpdated(room_id, new_name, new_topic, new_visibility), entry)


# -- direct rooms ----------------------------------------------------------------------------


def direct_room(conn: Connection, a: int, b: int) -> list[int]:
    """The direct room of users `a` and `b` (either order), as a list of none or one: the room
    `open_direct` changes, if it exists."""
    low, high = sorted((a, b))
    return [room_id for (room_id,) in conn.execute(
        "SELECT id FROM rooms WHERE direct_a = ? AND direct_b = ?", (low, high)).fetchall()]


def open_direct(conn: Connection, user: User, other: User, now: int) -> tuple[bool, Changes]:
    """The pair's one direct room, created (True) or brought back: whichever of the two left it
    joins it again (a `join` entry each). A new one has no entries: both are members from seq 0."""
    a, b = sorted((user["id"], other["id"]))
    found = direct_room(conn, a, b)
    if not found:
        cur = conn.execute(
            "INSERT INTO rooms (name, name_key, topic, created_by, created_at, visibility, direct_a,"
            " direct_b) VALUES ('', ?, '', ?, ?, 'private', ?, ?) ON CONFLICT DO NOTHING RETURNING id",
            (f"\x01direct:{a}:{b}", user["id"], now, a, b))
        row = cur.fetchone()
        if row is not None:
            room_id = row[0]
            conn.executemany("INSERT INTO members (room_id, user_id, joined_at) VALUES (?, ?, ?)",
                             [(room_id, a, now), (room_id, b, now)])
            return True, (RoomCreated(room_id, "", "", user["id"], now, "private", (a, b)),
                          MemberJoined(room_id, a, now), MemberJoined(room_id, b, now))
        found = direct_room(conn, a, b)
    room_id = found[0]
    made: list[Change] = []
    for who in (user, other):
        if _role(conn, room_id, who["id"]) is None:
            made += _add_member(conn, room_id, who, now, "member")
    return False, tuple(made)
