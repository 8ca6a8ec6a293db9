"""GET /search over real HTTP: words match by prefix ignoring case and accents, all must match,
newest first with a `before` id cursor, only in rooms the caller is a member of, highlights as
code-point offsets, and the query is only ever words: FTS5 syntax in it is plain text."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

from chat_trio.store import search as search_index
from chat_trio.store.schema import MIGRATIONS
from chat_trio.store.sqlite import sqlite3
from tests.client import HTTPClient, Reply
from tests.helpers import (
    assert_error,
    assert_message_shape,
    join,
    make_config,
    make_room,
    register_and_login,
    send,
    serve,
)


async def search(client: HTTPClient, token: str, q: str, **query: Any) -> Reply:
    qs = "&".join([f"q={quote(q, safe='')}", *(f"{k}={v}" for k, v in query.items())])
    return await client.get(f"/search?{qs}", token=token)


async def found(client: HTTPClient, token: str, q: str, **query: Any) -> list[str]:
    """The texts found, newest first (checking the answer's shape)."""
    reply = await search(client, token, q, **query)
    assert reply.status == 200, reply.body
    assert set(reply.json) == {"results", "has_more"}
    texts = []
    for result in reply.json["results"]:
        assert set(result) == {"message", "highlights"}
        assert_message_shape(result["message"])
        texts.append(result["message"]["text"])
    return texts


async def posted(client: HTTPClient, token: str, room_id: int, *texts: str) -> list[dict[str, Any]]:
    out = []
    for text in texts:
        reply = await send(client, token, room_id, text)
        assert reply.status == 201, reply.body
        out.append(reply.json["message"])
    return out


@pytest.mark.workers
async def test_words_match_by_prefix_ignoring_case_and_accents(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    room = await make_room(client, alice, "kitchen")
    await posted(client, alice, room["id"], "Crème brûlée at the CAFÉ", "cafeteria opens at noon",
                 "nothing to see", "Straße und Ärger")
    # Searchable as soon as the send answered: the index is written in the message's transaction.
    assert await found(client, alice, "creme") == ["Crème brûlée at the CAFÉ"]
    assert await found(client, alice, "BRUL") == ["Crème brûlée at the CAFÉ"]
    assert await found(client, alice, "caf") == ["cafeteria opens at noon", "Crème brûlée at the CAFÉ"]
    assert await found(client, alice, "café") == ["cafeteria opens at noon", "Crème brûlée at the CAFÉ"]
    assert await found(client, alice, "at caf") == ["cafeteria opens at noon", "Crème brûlée at the CAFÉ"]
    assert await found(client, alice, "caf noon") == ["cafeteria opens at noon"]  # every word must match
    assert await found(client, alice, "arger") == ["Straße und Ärger"]
    assert await found(client, alice, "eria") == []  # a prefix of a word, not any substring
    assert await found(client, alice, "zebra") == []


@pytest.mark.workers
async def test_highlights_are_code_point_offsets_of_the_matching_words(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    room = await make_room(client, alice, "kitchen")
    text = "😀 Café, cafés and CAFETERIA; not a decaf"
    await posted(client, alice, room["id"], text)
    reply = await search(client, alice, "cafe")
    [result] = reply.json["results"]
    spans = result["highlights"]
    assert [text[a:b] for a, b in spans] == ["Café", "cafés", "CAFETERIA"]
    assert spans[0] == [2, 6]  # code points: the emoji is one (two in UTF-16, four in UTF-8)


@pytest.mark.workers
async def test_results_are_newest_first_and_page_with_before(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    one = await make_room(client, alice, "one")
    two = await make_room(client, alice, "two")
    sent = []
    for n in range(7):
        sent += await posted(client, alice, (one, two)[n % 2]["id"], f"report number {n}")
        await posted(client, alice, one["id"], f"noise {n}")
    ids = [m["id"] for m in reversed(sent)]
    pages: list[int] = []
    before = None
    while True:
        query: dict[str, Any] = {"limit": 3} if before is None else {"limit": 3, "before": before}
        reply = await search(client, alice, "report", **query)
        assert reply.status == 200
        page = [r["message"]["id"] for r in reply.json["results"]]
        pages += page
        if not reply.json["has_more"]:
            break
        assert len(page) == 3
        before = page[-1]
    assert pages == ids
    assert [r["message"]["id"] for r in (await search(client, alice, "report")).json["results"]] == ids
    in_two = (await search(client, alice, "report", room_id=two["id"])).json["results"]
    only_two = [r["message"]["id"] for r in in_two]
    assert only_two == [m["id"] for m in reversed(sent) if m["room_id"] == two["id"]]


@pytest.mark.workers
async def test_only_rooms_the_caller_is_a_member_of(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    bob, _ = await register_and_login(client, "bob")
    secret = await make_room(client, alice, "alice-only")
    shared = await make_room(client, alice, "shared")
    await join(client, bob, shared["id"])
    await posted(client, alice, secret["id"], "the password is swordfish")
    await posted(client, alice, shared["id"], "swordfish for dinner")
    assert await found(client, bob, "swordfish") == ["swordfish for dinner"]
    assert await found(client, alice, "swordfish") == ["swordfish for dinner", "the password is swordfish"]
    assert_error(await search(client, bob, "swordfish", room_id=secret["id"]), 403, "forbidden")
    assert_error(await search(client, bob, "swordfish", room_id=shared["id"] + 100), 404, "not_found")
    # A room's id is indexed beside the text (to search few rooms fast) but is never a word.
    assert await found(client, alice, str(shared["id"])) == []
    await posted(client, alice, shared["id"], f"meet in room {shared['id']}")
    assert await found(client, alice, str(shared["id"])) == [f"meet in room {shared['id']}"]
    assert (await client.post(f"/rooms/{shared['id']}/leave", token=bob)).status == 204
    assert await found(client, bob, "swordfish") == []
    assert_error(await client.get("/search?q=swordfish"), 401, "unauthorized")
    # A private room never leaks: its messages are not found, and naming it is 404, not 403.
    made = await client.post("/rooms", {"name": "vault", "visibility": "private"}, token=alice)
    vault = made.json["room"]
    await posted(client, alice, vault["id"], "swordfish in the vault")
    assert await found(client, bob, "swordfish") == []
    assert_error(await search(client, bob, "swordfish", room_id=vault["id"]), 404, "not_found")
    assert (await found(client, alice, "vault")) == ["swordfish in the vault"]


async def test_a_member_of_many_rooms_sees_only_theirs(client: HTTPClient,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond ROOM_TERMS_MAX rooms the index is searched without room terms: the join with the
    caller's rooms alone keeps other rooms out."""
    monkeypatch.setattr(search_index, "ROOM_TERMS_MAX", 1)
    alice, _ = await register_and_login(client, "alice")
    bob, _ = await register_and_login(client, "bob")
    rooms = [await make_room(client, alice, f"r{n}") for n in range(3)]
    for room in rooms[:2]:
        await join(client, bob, room["id"])
    for room in rooms:
        await posted(client, alice, room["id"], f"minutes of {room['name']}")
    assert await found(client, bob, "minutes") == ["minutes of r1", "minutes of r0"]
    assert await found(client, alice, "minutes") == ["minutes of r2", "minutes of r1", "minutes of r0"]


HOSTILE = ['"', '""', '"swordfish', "*", "sword*", "NEAR(sword fish)", "NEAR(", "sword OR fish",
           "OR", "AND", "NOT", "-sword", "sword -fish", "text:sword", "{text}: sword", "^sword",
           "sword + fish", "(sword", ")", "sword AND NOT fish", "'", "\\", "%", "_", "sword:*",
           "rank:sword", "messages_fts", "* OR *", '"sword" OR "fish"', "\x00", "sword\x00fish",
           "!" * 200, "-" * 200, '"' * 200, "*(" * 100]


@pytest.mark.workers
async def test_hostile_queries_are_plain_words(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    room = await make_room(client, alice, "armoury")
    await posted(client, alice, room["id"], "sword and shield", "fish and chips", "text of the swordfish",
                 "or else", "near the end")
    for q in HOSTILE:
        reply = await search(client, alice, q)
        assert reply.status == 200, (q, reply.body)
    # Operators are words like any other: every word must prefix-match a word of the text.
    assert await found(client, alice, "sword OR fish") == []
    assert await found(client, alice, "OR") == ["or else"]
    assert await found(client, alice, "NEAR(") == ["near the end"]
    assert await found(client, alice, "-sword") == ["text of the swordfish", "sword and shield"]
    assert await found(client, alice, "text:sword") == ["text of the swordfish"]
    assert await found(client, alice, "sword*") == ["text of the swordfish", "sword and shield"]
    assert await found(client, alice, '"sword" OR "fish"') == []
    assert await found(client, alice, "!" * 200) == []
    assert await found(client, alice, "and") == ["fish and chips", "sword and shield"]


async def test_query_parameters_are_validated(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    assert_error(await client.get("/search", token=alice), 422, "validation_failed", "q")
    assert_error(await client.get("/search?q=", token=alice), 422, "validation_failed", "q")
    assert_error(await search(client, alice, "x" * 201), 422, "validation_failed", "q")
    assert (await search(client, alice, "é" * 200)).status == 200  # characters, not bytes
    for bad in ({"limit": 0}, {"limit": 51}, {"before": 0}, {"before": "x"}, {"room_id": 0}):
        name = next(iter(bad))
        assert_error(await search(client, alice, "x", **bad), 422, "validation_failed", name)
    assert_error(await search(client, alice, "x", sort="asc"), 422, "validation_failed", "sort")
    reply = await search(client, alice, "anything")
    assert reply.json == {"results": [], "has_more": False}  # in no room at all
    many = " ".join(f"{chr(97 + n)}word" for n in range(17))
    assert_error(await search(client, alice, many), 422, "validation_failed", "q")
    # Repeated words, or words another one starts with, count once: each costs an index lookup.
    assert (await search(client, alice, " ".join(["hello", "hel", "HELLO", "héllo"] * 9))).status == 200


def version_2_database(path: Path) -> None:
    """A database as schema 2 left it, with two rooms, a member and messages."""
    conn = sqlite3.connect(path)
    script = MIGRATIONS[0]
    assert isinstance(script, str)
    conn.executescript(script)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (2)")
    conn.execute("INSERT INTO users (username, password_hash, created_at) VALUES ('old', 'x', 0)")
    for room_id, name in ((1, "first"), (2, "second")):
        conn.execute("INSERT INTO rooms (name, name_key, created_by, created_at, last_seq)"
                     " VALUES (?, ?, 1, 0, 3)", (name, name))
        conn.execute("INSERT INTO members VALUES (?, 1, 0)", (room_id,))
        for seq, text in enumerate(("Grüße aus Köln", "an old message", "archived report"), start=1):
            conn.execute("INSERT INTO messages (room_id, seq, author_id, text, created_at)"
                         " VALUES (?, ?, 1, ?, 0)", (room_id, seq, f"{text} {room_id}"))
    conn.commit()
    conn.close()


async def test_an_existing_database_gets_markers_and_its_index_built(tmp_path: Path) -> None:
    """Migration 5 on a v1 database: old members have read everything, old messages are
    searchable, and new ones are counted and indexed as usual."""
    config = make_config(tmp_path)
    version_2_database(Path(config.db))
    with trio.fail_after(30):
        async with serve(config) as app:
            client = HTTPClient(app.port)
            try:
                # The old user's password hash is not argon2: give it a fresh account instead.
                new, _ = await register_and_login(client, "newcomer")
                await join(client, new, 1)
                assert await found(client, new, "koln") == ["Grüße aus Köln 1"]
                assert await found(client, new, "report") == ["archived report 1"]
                await posted(client, new, 1, "a new report")
                assert await found(client, new, "report") == ["a new report", "archived report 1"]
                rooms = (await client.get("/rooms?joined=true", token=new)).json["rooms"]
                assert [(r["read_seq"], r["unread"]) for r in rooms] == [(5, 0)]  # 4: the join
            finally:
                await client.aclose()
    conn = sqlite3.connect(config.db)
    try:
        reads = conn.execute("SELECT room_id, user_id, read_seq, read_text_n FROM members"
                             " WHERE user_id = 1 ORDER BY room_id").fetchall()
        counts = conn.execute("SELECT id, text_count FROM rooms ORDER BY id").fetchall()
    finally:
        conn.close()
    assert reads == [(1, 1, 3, 3), (2, 1, 3, 3)]
    assert counts == [(1, 4), (2, 3)]
