"""Edits and deletes over real HTTP and websockets: each is a timeline entry with its own seq
(so resume and history deliver it), history and live frames show a text entry's current state,
only text entries that are not deleted can change (409 not_editable), edits are idempotent by
txn_id and count as sends, and deleting erases the text from the database file and the WAL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from chat_trio.app import App
from chat_trio.store.schema import MIGRATIONS
from chat_trio.store.sqlite import sqlite3
from chat_trio.store.timeline import erase_text
from tests.client import HTTPClient, Reply
from tests.helpers import (
    MESSAGE_KEYS,
    PASSWORD,
    Served,
    StartServer,
    all_messages,
    assert_error,
    get_room,
    join,
    make_admin,
    make_config,
    make_room,
    parse_time,
    register_and_login,
    send,
    serve,
)
from tests.test_search import found
from tests.ws_client import connect

ENTRY_KEYS = MESSAGE_KEYS - {"edited_at", "deleted"} | {"target_seq"}


async def edit(client: HTTPClient, token: str, room_id: int, seq: int, text: str,
               txn_id: str | None = None) -> Reply:
    body: dict[str, Any] = {"text": text} if txn_id is None else {"text": text, "txn_id": txn_id}
    return await client.patch(f"/rooms/{room_id}/messages/{seq}", body, token=token)


async def delete(client: HTTPClient, token: str, room_id: int, seq: int) -> Reply:
    return await client.delete(f"/rooms/{room_id}/messages/{seq}", token=token)


async def sent(client: HTTPClient, token: str, room_id: int, text: str) -> dict[str, Any]:
    reply = await send(client, token, room_id, text)
    assert reply.status == 201, reply.body
    message: dict[str, Any] = reply.json["message"]
    return message


@pytest.mark.workers
async def test_an_edit_is_an_entry_and_history_shows_the_current_text(client: HTTPClient) -> None:
    alice, user = await register_and_login(client, "alice")
    room = await make_room(client, alice, "lobby")
    typo = await sent(client, alice, room["id"], "helo wrold")
    await sent(client, alice, room["id"], "second")
    reply = await edit(client, alice, room["id"], typo["seq"], "hello world")
    assert reply.status == 200 and set(reply.json) == {"message"}
    entry = reply.json["message"]
    assert set(entry) == ENTRY_KEYS | {"new_text"}
    assert (entry["kind"], entry["seq"], entry["target_seq"]) == ("edit", 3, 1)
    assert entry["new_text"] == "hello world"
    assert entry["text"] == "alice edited message 1"
    assert entry["author"] == {"id": user["id"], "username": "alice"}
    history = await all_messages(client, alice, room["id"])
    assert [m["seq"] for m in history] == [1, 2, 3]
    first = history[0]
    assert (first["text"], first["deleted"], first["kind"]) == ("hello world", False, "text")
    assert parse_time(first["edited_at"]) >= parse_time(typo["created_at"])
    assert history[1]["edited_at"] is None
    assert history[2] == entry
    assert (await get_room(client, alice, room["id"]))["last_seq"] == 3
    # Edited again: the latest text wins.
    assert (await edit(client, alice, room["id"], 1, "hello, world")).status == 200
    assert (await all_messages(client, alice, room["id"]))[0]["text"] == "hello, world"


@pytest.mark.workers
async def test_a_delete_erases_the_text_and_is_an_entry(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    room = await make_room(client, alice, "lobby")
    await sent(client, alice, room["id"], "oops, my password is hunter2")
    assert (await edit(client, alice, room["id"], 1, "oops, my password is hunter3")).status == 200
    reply = await delete(client, alice, room["id"], 1)
    assert reply.status == 200
    entry = reply.json["message"]
    assert set(entry) == ENTRY_KEYS
    assert (entry["kind"], entry["seq"], entry["target_seq"]) == ("delete", 3, 1)
    assert entry["text"] == "alice deleted message 1"
    history = await all_messages(client, alice, room["id"])
    assert (history[0]["text"], history[0]["deleted"]) == ("", True)
    assert history[1]["new_text"] == ""  # the edit's text is erased too
    assert history[2] == entry
    assert_error(await delete(client, alice, room["id"], 1), 409, "not_editable")
    assert_error(await edit(client, alice, room["id"], 1, "back"), 409, "not_editable")


@pytest.mark.workers
async def test_who_may_edit_or_delete_what(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    bob, _ = await register_and_login(client, "bob")
    carol, _ = await register_and_login(client, "carol")
    room = await make_room(client, alice, "lobby")
    await join(client, bob, room["id"])  # seq 1: a room event
    seq = (await sent(client, alice, room["id"], "alice's"))["seq"]
    assert_error(await edit(client, bob, room["id"], seq, "mine now"), 403, "forbidden")
    assert_error(await delete(client, bob, room["id"], seq), 403, "forbidden")  # a plain member
    assert_error(await edit(client, carol, room["id"], seq, "x"), 403, "forbidden")  # not a member
    assert_error(await delete(client, carol, room["id"], seq), 403, "forbidden")
    assert_error(await edit(client, alice, room["id"] + 9, seq, "x"), 404, "not_found")
    for missing in (0, seq + 1, 10**6):
        assert_error(await edit(client, alice, room["id"], missing, "x"), 404, "not_found")
        assert_error(await delete(client, alice, room["id"], missing), 404, "not_found")
    assert (await edit(client, alice, room["id"], seq, "edited")).status == 200
    for other in (1, seq + 1):  # a room event and the edit entry: not text entries
        assert_error(await edit(client, alice, room["id"], other, "x"), 409, "not_editable")
        assert_error(await delete(client, alice, room["id"], other), 409, "not_editable")
    assert_error(await edit(client, alice, room["id"], seq, "bad\x00"), 422, "validation_failed", "text")
    assert_error(await edit(client, alice, room["id"], seq, ""), 422, "validation_failed", "text")
    reply = await client.patch(f"/rooms/{room['id']}/messages/{seq}", {"text": "x", "more": 1}, token=alice)
    assert_error(reply, 422, "validation_failed", "more")
    reply = await client.delete(f"/rooms/{room['id']}/messages/{seq}", {"text": "x"}, token=alice)
    assert_error(reply, 422, "validation_failed", "text")
    assert_error(await edit(client, "", room["id"], seq, "x"), 401, "unauthorized")
    assert len(await all_messages(client, alice, room["id"])) == 3  # nothing refused was written


@pytest.mark.workers
async def test_moderators_and_owners_delete_any_message(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    bob, bob_user = await register_and_login(client, "bob")
    carol, _ = await register_and_login(client, "carol")
    room = await make_room(client, alice, "lobby")
    for token in (bob, carol):
        await join(client, token, room["id"])
    carols = [(await sent(client, carol, room["id"], f"spam {n}"))["seq"] for n in range(2)]
    mine = (await sent(client, alice, room["id"], "the owner's"))["seq"]
    assert_error(await delete(client, bob, room["id"], carols[0]), 403, "forbidden")
    reply = await client.put(f"/rooms/{room['id']}/members/{bob_user['id']}/role", {"role": "moderator"},
                             token=alice)
    assert reply.status == 200, reply.body
    entry = (await delete(client, bob, room["id"], carols[0])).json["message"]
    assert (entry["kind"], entry["target_seq"]) == ("delete", carols[0])
    assert entry["text"] == f"bob deleted message {carols[0]}"
    assert (await delete(client, alice, room["id"], carols[1])).status == 200  # the owner
    assert (await delete(client, bob, room["id"], mine)).status == 200  # a moderator: anyone's message
    assert_error(await edit(client, bob, room["id"], mine, "x"), 409, "not_editable")
    history = {m["seq"]: m for m in await all_messages(client, carol, room["id"])}
    assert all(history[seq]["deleted"] and history[seq]["text"] == "" for seq in (*carols, mine))


@pytest.mark.workers
async def test_a_server_admin_deletes_without_being_a_member(app: Served, client: HTTPClient) -> None:
    root, _ = await make_admin(app, client)
    alice, _ = await register_and_login(client, "alice")
    made = await client.post("/rooms", {"name": "hush", "visibility": "private"}, token=alice)
    secret = made.json["room"]
    seq = (await sent(client, alice, secret["id"], "report me"))["seq"]
    entry = (await delete(client, root, secret["id"], seq)).json["message"]
    assert (entry["kind"], entry["text"]) == ("delete", f"root deleted message {seq}")
    assert_error(await edit(client, root, secret["id"], seq + 1, "x"), 403, "forbidden")  # not a member
    # A non-admin who is not a member learns nothing of a private room.
    bob, _ = await register_and_login(client, "bob")
    assert_error(await delete(client, bob, secret["id"], seq), 404, "not_found")
    assert_error(await edit(client, bob, secret["id"], seq, "x"), 404, "not_found")


@pytest.mark.workers
async def test_edits_are_idempotent_by_txn_id(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    room = await make_room(client, alice, "lobby")
    await sent(client, alice, room["id"], "one")
    await sent(client, alice, room["id"], "two")
    first = await edit(client, alice, room["id"], 1, "uno", "e-1")
    again = await edit(client, alice, room["id"], 1, "uno", "e-1")
    assert first.status == again.status == 200 and first.json == again.json
    assert (await get_room(client, alice, room["id"]))["last_seq"] == 3
    # The same txn_id for another message, or one a send used, is a client error.
    assert_error(await edit(client, alice, room["id"], 2, "dos", "e-1"), 422, "validation_failed", "txn_id")
    assert (await send(client, alice, room["id"], "three", "s-1")).status == 201
    assert_error(await edit(client, alice, room["id"], 2, "dos", "s-1"), 422, "validation_failed", "txn_id")

    async def racer(results: list[Reply]) -> None:
        results.append(await edit(HTTPClient(client.port), alice, room["id"], 2, "dos", "e-2"))

    results: list[Reply] = []
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(racer, results)
    assert {r.status for r in results} == {200}
    assert len({r.json["message"]["seq"] for r in results}) == 1
    assert (await get_room(client, alice, room["id"]))["last_seq"] == 5


@pytest.mark.workers
async def test_live_frames_and_resume_deliver_edits_and_deletes(app: Served, client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    room = await make_room(client, alice, "lobby")
    await sent(client, alice, room["id"], "first")
    async with connect(app.port, alice) as ws:
        await ws.subscribe(room["id"], after=1)
        edited = (await edit(client, alice, room["id"], 1, "first!")).json["message"]
        deleted = (await delete(client, alice, room["id"], 1)).json["message"]
        assert await ws.messages_until(3) == [edited, deleted]
    async with connect(app.port, alice) as ws:  # a client that was away resumes from 0
        await ws.subscribe(room["id"], after=0)
        replay = await ws.messages_until(3)
        assert [(m["seq"], m["kind"]) for m in replay] == [(1, "text"), (2, "edit"), (3, "delete")]
        assert (replay[0]["text"], replay[0]["deleted"], replay[1]["new_text"]) == ("", True, "")


@pytest.mark.workers
async def test_the_search_index_follows_edits_and_deletes(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    room = await make_room(client, alice, "lobby")
    await sent(client, alice, room["id"], "meet at the harbour")
    await edit(client, alice, room["id"], 1, "meet at the station")
    assert await found(client, alice, "harbour") == []
    assert await found(client, alice, "station") == ["meet at the station"]
    assert await found(client, alice, "edited") == []  # an edit entry's summary is not a message
    await delete(client, alice, room["id"], 1)
    assert await found(client, alice, "meet") == []
    assert await found(client, alice, "station") == []


@pytest.mark.workers
async def test_unread_counts_leave_out_edits_and_deleted_messages(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    bob, _ = await register_and_login(client, "bob")
    room = await make_room(client, alice, "lobby")
    await join(client, bob, room["id"])
    seqs = [(await sent(client, alice, room["id"], f"m{n}"))["seq"] for n in range(4)]
    await client.put(f"/rooms/{room['id']}/read", {"seq": seqs[0]}, token=bob)
    assert (await get_room(client, bob, room["id"]))["unread"] == 3
    await edit(client, alice, room["id"], seqs[2], "m2 edited")  # an edit entry: not counted
    assert (await get_room(client, bob, room["id"]))["unread"] == 3
    await delete(client, alice, room["id"], seqs[3])  # past bob's marker: one fewer
    await delete(client, alice, room["id"], seqs[0])  # at it: no change
    room_seen = await get_room(client, bob, room["id"])
    assert (room_seen["read_seq"], room_seen["unread"]) == (seqs[0], 2)
    assert (await get_room(client, alice, room["id"]))["unread"] == 0


@pytest.mark.workers
async def test_erasing_an_account_erases_like_a_delete(client: HTTPClient) -> None:
    """An account's erasure goes through the same erasure as a delete: search forgets the texts,
    their edits lose their new text, and unread counts drop them."""
    owner, _ = await register_and_login(client, "owner")
    room = await make_room(client, owner, "lobby")
    ann, _ = await register_and_login(client, "ann")
    await join(client, ann, room["id"])
    first = await sent(client, ann, room["id"], "quokka sighting one")
    await sent(client, ann, room["id"], "quokka sighting two")
    await edit(client, ann, room["id"], first["seq"], "quokka sighting uno")
    assert (await get_room(client, owner, room["id"]))["unread"] == 2
    assert len(await found(client, owner, "quokka")) == 2
    reply = await client.request("DELETE", "/me", {"password": PASSWORD, "erase": True}, token=ann)
    assert reply.status == 204, reply.body
    assert await found(client, owner, "quokka") == []
    assert (await get_room(client, owner, room["id"]))["unread"] == 0
    history = await all_messages(client, owner, room["id"])
    assert [m["new_text"] for m in history if m["kind"] == "edit"] == [""]
    assert [(m["text"], m["deleted"]) for m in history if m["kind"] == "text"] == [("", True)] * 2


async def test_edits_count_as_sends_for_the_rate_limit(start_server: StartServer) -> None:
    app: App = await start_server(send_rate=0.001, send_burst=3)
    client = HTTPClient(app.port)
    try:
        alice, _ = await register_and_login(client, "alice")
        room = await make_room(client, alice, "lobby")
        await sent(client, alice, room["id"], "one")
        assert (await edit(client, alice, room["id"], 1, "uno", "e-1")).status == 200
        assert (await edit(client, alice, room["id"], 1, "un", "e-2")).status == 200
        assert_error(await edit(client, alice, room["id"], 1, "eins", "e-3"), 429, "rate_limited")
        assert_error(await send(client, alice, room["id"], "two"), 429, "rate_limited")
        # A retried edit that committed writes nothing: answered even over the limit.
        assert (await edit(client, alice, room["id"], 1, "un", "e-2")).status == 200
        assert (await delete(client, alice, room["id"], 1)).status == 200  # deletes are not sends
    finally:
        await client.aclose()


def _stored_bytes(db: str) -> bytes:
    data = b""
    for suffix in ("", "-wal"):
        path = Path(db + suffix)
        if path.exists():
            data += path.read_bytes()
    return data


async def test_deleting_erases_the_text_from_the_database_and_the_wal(tmp_path: Path) -> None:
    """The deleted text (and every edit of it) is gone from the database file and the WAL as
    soon as the delete answers: overwritten in place, zeroed where it was freed, and the WAL's
    older copies of its pages checkpointed and truncated away."""
    config = make_config(tmp_path)
    secret = "xyzzy plover secret 4242 do not keep"
    edited = "xyzzy plover edited 4243 do not keep either"
    with trio.fail_after(30):
        async with serve(config) as app:
            client = HTTPClient(app.port)
            alice, _ = await register_and_login(client, "alice")
            room = await make_room(client, alice, "vault")
            await sent(client, alice, room["id"], secret)
            await sent(client, alice, room["id"], "x" * 3000 + " a long one to overflow a page " + secret)
            await edit(client, alice, room["id"], 1, edited)
            for n in range(20):
                await sent(client, alice, room["id"], f"filler {n}")
            assert secret.encode() in _stored_bytes(config.db)
            await delete(client, alice, room["id"], 1)
            await delete(client, alice, room["id"], 2)
            stored = _stored_bytes(config.db)  # the writer checkpointed after the erasure
            assert secret.encode() not in stored and edited.encode() not in stored
            assert b"do not keep" not in stored
            assert b"plover" not in stored  # nor the search index's pages (FTS5 secure-delete)
            await client.aclose()
    stored = _stored_bytes(config.db)
    assert secret.encode() not in stored and edited.encode() not in stored
    assert b"plover" not in stored


async def test_words_deleted_before_the_index_forgot_words_leave_it_when_the_server_opens_it(
        tmp_path: Path) -> None:
    """A database whose index was written without FTS5 secure-delete (schema 5, the sqlite of
    Debian 12): a deleted message's words stayed in the index's segment pages, unfindable but
    readable in the file. Migration 6 merges the index once, which drops them; search still
    finds everything else."""
    config = make_config(tmp_path)
    with trio.fail_after(30):
        async with serve(config) as app:
            client = HTTPClient(app.port)
            alice, _ = await register_and_login(client, "alice")
            room = await make_room(client, alice, "vault")
            await sent(client, alice, room["id"], "plover quartzite kept")
            await sent(client, alice, room["id"], "plover xyzzysecret erased")
            await client.aclose()
    conn = sqlite3.connect(config.db, isolation_level=None)
    conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('secure-delete', 0)")
    conn.execute("UPDATE schema_version SET version = 5")
    conn.execute("BEGIN")  # a delete as the server at schema 5 made it
    erase_text(conn, room["id"], [(2, 2, "plover xyzzysecret erased")])
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert b"xyzzysecret" in _stored_bytes(config.db)  # only in the index's pages now
    with trio.fail_after(30):
        async with serve(config) as app:
            client = HTTPClient(app.port)
            alice = (await client.post("/login", {"username": "alice", "password": PASSWORD})).json["token"]
            assert await found(client, alice, "plover") == ["plover quartzite kept"]
            assert await found(client, alice, "xyzzysecret") == []
            await client.aclose()
    conn = sqlite3.connect(config.db)
    assert conn.execute("SELECT version FROM schema_version").fetchone() == (len(MIGRATIONS),)
    conn.close()
    stored = _stored_bytes(config.db)
    assert b"xyzzysecret" not in stored and b"quartzite" in stored
