"""Schema migrations on a database an older server wrote, then the real server on top of it."""

from __future__ import annotations

from pathlib import Path

import argon2
import trio

from chat_trio.config import Config
from chat_trio.security.tokens import digest
from chat_trio.store.queries import name_key
from chat_trio.store.schema import MIGRATIONS
from chat_trio.store.sqlite import sqlite3
from tests.client import HTTPClient
from tests.helpers import PASSWORD, assert_error, join, login, make_config, register_and_login, send, serve

FULLWIDTH = "\uff47\uff45\uff4e\uff45\uff52\uff41\uff4c"  # "general" in fullwidth letters


def version_1_database(path: Path, names: list[str]) -> None:
    """A database as schema 1 left it: room names unique by `casefold()` alone."""
    script = MIGRATIONS[0]
    assert isinstance(script, str)
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute("INSERT INTO users (username, password_hash, created_at) VALUES ('old', 'x', 0)")
    for name in names:
        conn.execute("INSERT INTO rooms (name, name_key, topic, created_by, created_at) "
                     "VALUES (?, ?, '', 1, 0)",
                     (name, name.casefold()))
    conn.commit()
    conn.close()


async def test_room_name_keys_become_nfkc_casefold_and_old_collisions_keep_both_rooms(tmp_path: Path) -> None:
    """Migration 2 recomputes every room's name key. Two old rooms that collide under the new rule
    both survive with their names; the older keeps the key; no new room can take either name."""
    config: Config = make_config(tmp_path)
    version_1_database(Path(config.db), ["general", FULLWIDTH, "Stra\u00dfe", "\ufb01le"])
    with trio.fail_after(20):
        async with serve(config) as app:
            client = HTTPClient(app.port)
            try:
                token, _ = await register_and_login(client, "alice")
                rooms = (await client.get("/rooms", token=token)).json["rooms"]
                assert [r["name"] for r in rooms] == ["general", FULLWIDTH, "Stra\u00dfe", "\ufb01le"]
                for taken in ("General", "\uff27eneral", "STRASSE", "file", "FILE"):
                    reply = await client.post("/rooms", {"name": taken}, token=token)
                    assert_error(reply, 409, "room_name_taken")
                assert (await client.post("/rooms", {"name": "generals"}, token=token)).status == 201
            finally:
                await client.aclose()
    conn = sqlite3.connect(config.db)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (len(MIGRATIONS),)
        keys = conn.execute("SELECT id, name_key FROM rooms ORDER BY id").fetchall()
    finally:
        conn.close()
    assert keys == [(1, "general"), (2, "general\x002"), (3, "strasse"), (4, "file"), (5, "generals")]


def version_2_database(path: Path) -> None:
    """A database as the server before private rooms and roles (schema 2) left it: three users
    (password PASSWORD), a room of alice's with bob in it and two messages, a room whose creator
    (bob) left it, and a room with no members at all."""
    conn = sqlite3.connect(path)
    first, second = MIGRATIONS[0], MIGRATIONS[1]
    assert isinstance(first, str) and callable(second)
    conn.executescript(first)
    second(conn)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (2)")
    hashed = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    conn.executemany("INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, 0)",
                     [("alice", hashed), ("bob", hashed), ("carol", hashed)])
    conn.executemany("INSERT INTO rooms (name, name_key, topic, created_by, created_at, last_seq)"
                     " VALUES (?, ?, '', ?, 0, ?)",
                     [("general", name_key("general"), 1, 2), ("left", name_key("left"), 2, 0),
                      ("empty", name_key("empty"), 3, 0)])
    conn.executemany("INSERT INTO members (room_id, user_id, joined_at) VALUES (?, ?, ?)",
                     [(1, 1, 1), (1, 2, 2), (2, 3, 5), (2, 1, 7)])
    conn.executemany("INSERT INTO messages (room_id, seq, author_id, text, txn_id, created_at)"
                     " VALUES (1, ?, ?, ?, ?, 10)", [(1, 1, "hi", "t1"), (2, 2, "yo", None)])
    conn.commit()
    conn.close()


async def test_a_database_of_the_previous_version_upgrades_in_place(tmp_path: Path) -> None:
    """Migration 3: every room stays public, its creator is its owner (if they left, its
    longest-standing member; a room with no members gets one when someone joins), messages are
    `text` entries, and the rooms, direct rooms and moderation calls work on it."""
    config: Config = make_config(tmp_path)
    version_2_database(Path(config.db))
    with trio.fail_after(20):
        async with serve(config) as app:
            client = HTTPClient(app.port)
            try:
                alice, bob = await login(client, "alice"), await login(client, "bob")
                rooms = (await client.get("/rooms", token=alice)).json["rooms"]
                assert [(r["name"], r["visibility"], r["kind"], r.get("my_role")) for r in rooms] == [
                    ("general", "public", "room", "owner"), ("left", "public", "room", "member"),
                    ("empty", "public", "room", None)]
                roles = {}
                for rid in (1, 2):
                    members = (await client.get(f"/rooms/{rid}/members", token=alice)).json["members"]
                    roles[rid] = {m["user"]["username"]: m["role"] for m in members}
                assert roles == {1: {"alice": "owner", "bob": "member"},
                                 2: {"carol": "owner", "alice": "member"}}
                old = (await client.get("/rooms/1/messages", token=bob)).json["messages"]
                assert [(m["seq"], m["kind"], m["text"], m["txn_id"], m["edited_at"], m["deleted"])
                        for m in old] == [(1, "text", "hi", "t1", None, False),
                                          (2, "text", "yo", None, None, False)]
                again = await send(client, alice, 1, "hi", "t1")
                assert again.json["message"] == old[0]  # still idempotent
                assert (await send(client, bob, 1, "new")).json["message"]["seq"] == 3
                assert_error(await client.request("PATCH", "/rooms/1", {"topic": "x"}, token=bob), 403,
                             "forbidden")
                kicked = await client.post("/rooms/1/kick", {"user_id": 2}, token=alice)
                assert kicked.status == 204
                assert (await join(client, bob, 3))["my_role"] == "owner"  # the first in an empty room
                assert (await client.post("/direct", {"user_id": 3}, token=alice)).status == 201
            finally:
                await client.aclose()
    conn = sqlite3.connect(config.db)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (len(MIGRATIONS),) == (6,)
    finally:
        conn.close()


async def test_accounts_and_tokens_of_the_previous_version_carry_on(tmp_path: Path) -> None:
    """Migration 4: existing users are neither admins nor deactivated, and an existing token
    keeps working and shows as a session with a fresh public id (never its hash)."""
    config: Config = make_config(tmp_path)
    version_2_database(Path(config.db))
    token = "an-old-token-from-before-sessions-existed"
    conn = sqlite3.connect(config.db)
    conn.execute("INSERT INTO tokens (hash, user_id, created_at, expires_at) VALUES (?, 1, 5, ?)",
                 (digest(token), 2**62))
    conn.commit()
    conn.close()
    with trio.fail_after(20):
        async with serve(config) as app:
            client = HTTPClient(app.port)
            try:
                me = (await client.get("/me", token=token)).json["user"]
                assert (me["username"], me["admin"], me["deactivated"]) == ("alice", False, False)
                sessions = (await client.get("/me/sessions", token=token)).json["sessions"]
                assert [(s["current"], s["client"], len(s["id"])) for s in sessions] == [(True, "", 12)]
                assert sessions[0]["id"] not in (token, digest(token).hex())
            finally:
                await client.aclose()
