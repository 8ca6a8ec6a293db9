"""Schema migrations on a database an older server wrote, then the real server on top of it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from chat_trio.config import Config
from chat_trio.store.schema import MIGRATIONS
from tests.client import HTTPClient
from tests.helpers import assert_error, make_config, register_and_login, serve

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
