"""The timeline on either engine: search answers the same on sqlite (FTS5) and PostgreSQL (its
text search: store/pgsearch.py) whatever the query holds, sends appended together (PostgreSQL's
bulk append) are indexed and counted as one by one, PostgreSQL's index forgets a deleted text in
the delete's commit, and read markers, edits and deletes hold across PostgreSQL nodes (the change
feed), also after a node resyncs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from chat_trio.api.commands import LocalCommands
from chat_trio.store import ddl, pgschema, pgsearch, queries
from chat_trio.store.changes import (
    Commit,
    MemberJoined,
    MessageCommitted,
    RoomCreated,
    TextErased,
    UserCreated,
)
from chat_trio.store.pg import PgConnection
from chat_trio.store.state import State
from tests.client import HTTPClient
from tests.helpers import IN_PROCESS, POSTGRES, Served, all_messages, get_room, join, register_and_login
from tests.helpers import send as send_text
from tests.pg import query
from tests.test_commands import running_store
from tests.test_edits import delete, edit, sent
from tests.test_pg_nodes import dsn, node, people_in_room
from tests.test_reads import mark
from tests.test_search import found, posted, search
from tests.ws_client import connect

__all__ = ["dsn"]  # the fixture, shared with test_pg_nodes.py

# PostgreSQL's tsquery syntax (quotes, operators, weights, prefix marks, phrase distances) and
# FTS5's: each is plain words, or nothing.
HOSTILE = ["'", "''", "\\", "&", "|", "!", "!!", "<->", "<2>", ":*", "a:*", ":A", "fish:B", "(", ")",
           "sword & !fish", "sword | fish", "sword <-> and", "'sword' | 'fish'", "sword:*B",
           "\"", "*", "NEAR(sword fish)", "text:", "-", "^sword", "%_", ";" * 200, "&|!()<>:*'\\" * 18]


@pytest.mark.workers
async def test_search_takes_any_query_as_words_on_every_engine(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    room = (await client.post("/rooms", {"name": "armoury", "topic": ""}, token=alice)).json["room"]
    await posted(client, alice, room["id"], "sword and shield", "fish and chips", "it's a trap",
                 "longword " + "x" * 2049)
    for q in HOSTILE:
        reply = await search(client, alice, q)
        assert reply.status == 200, (q, reply.body)
    assert await found(client, alice, "sword | fish") == []  # every word must match
    assert await found(client, alice, "sword & !fish") == []
    assert await found(client, alice, "'sword'") == ["sword and shield"]
    assert await found(client, alice, "fish:B") == []  # `B` is a word, and no word starts with it
    assert await found(client, alice, "fish:A") == ["fish and chips"]
    assert await found(client, alice, "it's") == ["it's a trap"]
    assert await found(client, alice, "sword:*") == ["sword and shield"]
    # A word longer than an index keeps (PostgreSQL: under 2048 bytes a lexeme, silently cut
    # to its length modulo 2048 beyond) is found by its prefix.
    reply = await search(client, alice, "x" * 200)
    assert [r["highlights"] for r in reply.json["results"]] == [[[9, 2058]]]


@pytest.mark.workers
async def test_sends_appended_together_are_searchable_and_counted(app: Served, client: HTTPClient) -> None:
    """Sends pipelined on a websocket commit in batches (PostgreSQL appends a batch's messages
    in bulk): each is searchable at once, the other member's unread count has every one, and the
    sender's marker stands at its last message."""
    alice, _ = await register_and_login(client, "alice")
    bob, _ = await register_and_login(client, "bob")
    room = (await client.post("/rooms", {"name": "lobby", "topic": ""}, token=alice)).json["room"]
    await join(client, bob, room["id"])
    async with connect(app.port, alice) as ws:
        for i in range(30):
            await ws.send({"type": "send", "room_id": room["id"], "text": f"batched número {i}", "ref": i})
        acks = [await ws.expect("ack") for _ in range(30)]
    last = max(a["message"]["seq"] for a in acks)
    assert len(await found(client, bob, "numero", limit=50)) == 30
    assert (await get_room(client, bob, room["id"]))["unread"] == 30
    seen = await get_room(client, alice, room["id"])
    assert (seen["read_seq"], seen["unread"]) == (last, 0)


@pytest.mark.parametrize("app", [POSTGRES], indirect=True)
async def test_postgres_index_forgets_edited_and_deleted_text_at_commit(app: Served,
                                                                        client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    room = (await client.post("/rooms", {"name": "lobby", "topic": ""}, token=alice)).json["room"]
    message = await sent(client, alice, room["id"], "meet at the Harbour café")
    dsn = app.config.database

    def words() -> list[Any]:
        return query(dsn, "SELECT words::text FROM messages_search WHERE id = %s", message["id"])

    assert words() == [("'at' 'cafe' 'harbour' 'meet' 'the'",)]
    await edit(client, alice, room["id"], message["seq"], "meet at the station")
    assert words() == [("'at' 'meet' 'station' 'the'",)]
    await delete(client, alice, room["id"], message["seq"])
    assert words() == []  # gone in the delete's own commit: the reply came after it
    assert query(dsn, "SELECT count(*) FROM messages WHERE strpos(text, 'station') > 0"
                      " OR strpos(new_text, 'station') > 0") == [(0,)]
    assert await found(client, alice, "meet") == []


async def test_markers_edits_and_deletes_hold_across_nodes(tmp_path: Path, dsn: str) -> None:
    async with node(tmp_path, dsn, "a") as a, node(tmp_path, dsn, "b") as b:
        room_id, [(alice, _), (bob, _)] = await people_in_room([a.port, b.port], ["alice", "bobby"])
        on_a, on_b = HTTPClient(a.port), HTTPClient(b.port)
        async with connect(a.port, alice) as subscriber, connect(b.port, alice) as phone:
            await subscriber.subscribe(room_id, after=0)
            texts = [await sent(on_b, bob, room_id, f"harbour {n}") for n in range(3)]
            with trio.fail_after(5):  # node A takes in node B's commits through the feed
                while (await get_room(on_a, alice, room_id))["unread"] != 3:
                    await trio.sleep(0.01)
            await subscriber.messages_until(texts[-1]["seq"])
            assert await mark(on_a, alice, room_id, texts[0]["seq"]) == texts[0]["seq"]
            for ws in (phone, subscriber):  # her devices on either node
                assert await ws.expect("read") == {"type": "read", "room_id": room_id,
                                                   "read_seq": texts[0]["seq"]}
            edited = (await edit(on_b, bob, room_id, texts[1]["seq"], "station 1")).json["message"]
            deleted = (await delete(on_b, bob, room_id, texts[2]["seq"])).json["message"]
            live = await subscriber.messages_until(deleted["seq"])
            assert live[-2:] == [edited, deleted]
            with trio.fail_after(5):
                while (await get_room(on_a, alice, room_id))["unread"] != 1:  # the deleted one left
                    await trio.sleep(0.01)
            history = {m["seq"]: m for m in await all_messages(on_a, alice, room_id)}
            shown = history[texts[1]["seq"]]["text"], history[texts[2]["seq"]]["deleted"]
            assert shown == ("station 1", True)
            assert await found(on_a, alice, "harbour") == ["harbour 0"]
        await on_a.aclose()
        await on_b.aclose()


async def test_a_resync_counts_and_erases_what_the_node_missed(tmp_path: Path, dsn: str) -> None:
    """Commits a node did not hear of (its listener was reconnecting) are read again after its
    resync: a text entry counts once in the unread counts, and a cached entry deleted meanwhile
    shows as deleted."""
    with trio.fail_after(20):
        async with running_store(tmp_path, database=dsn) as (store, _):
            assert store.node is not None
            commands = LocalCommands(store.config, store)
            alice = await commands.create_user("alice", "hash")
            bob = await commands.create_user("bob", "hash")
            room_id = await commands.create_room(alice["id"], "lobby", "")
            await commands.join(room_id, bob["id"])
            first, _ = await (await commands.submit_message(alice["id"], room_id, "secret", None))()
            room = store.room(room_id)
            assert room is not None and room.unread(bob["id"]) == 1
            # Committed elsewhere, not heard of: a delete of the first and one more message.
            query(dsn, "UPDATE messages SET text = '', deleted = 1 WHERE id = %s", first["id"])
            query(dsn, "DELETE FROM messages_search WHERE id = %s", first["id"])
            query(dsn, "WITH r AS (UPDATE rooms SET last_seq = last_seq + 1, text_count = text_count + 1"
                       " WHERE id = %s RETURNING last_seq, text_count)"
                       " INSERT INTO messages (room_id, seq, author_id, text, created_at, text_n)"
                       " SELECT %s, last_seq, %s, 'later', 0, text_count FROM r",
                  room_id, room_id, alice["id"])
            await store.node.ordered.resync()
            await store.node.ordered.catch_up(room_id)
            room = store.room(room_id)
            assert room is not None and room.last_seq == first["seq"] + 1
            assert room.unread(bob["id"]) == 1  # "later"; the deleted one not, nor twice
            cached = await store.messages(room, first["seq"], first["seq"])
            assert (cached[0]["text"], cached[0]["deleted"]) == ("", True)


async def test_an_existing_postgres_database_gets_markers_counts_and_its_index(dsn: str) -> None:
    """Migration 5 on a database of version 4: texts numbered per room, every member has read
    everything, and the texts that are not deleted are indexed."""
    def run() -> None:
        conn = PgConnection.connect(dsn)
        try:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (4)")
            for script in pgschema.MIGRATIONS[:4]:
                assert isinstance(script, str)
                ddl.run(conn, script)
            conn.execute("INSERT INTO users (username, password_hash, created_at) VALUES ('alice', 'x', 0)")
            conn.execute("INSERT INTO rooms (name, name_key, created_by, created_at, last_seq)"
                         " VALUES ('lobby', 'lobby', 1, 0, 4)")
            conn.execute("INSERT INTO members (room_id, user_id, joined_at, role) VALUES (1, 1, 0, 'owner')")
            for seq, text, kind, deleted in ((1, "Café at noon", "text", 0), (2, "alice joined", "join", 0),
                                             (3, "", "text", 1), (4, "see the harbour", "text", 0)):
                conn.execute("INSERT INTO messages (room_id, seq, author_id, text, created_at, kind, deleted)"
                             " VALUES (1, ?, 1, ?, 0, ?, ?)", (seq, text, kind, deleted))
            assert pgschema.migrate(conn) == len(pgschema.MIGRATIONS)
            assert conn.execute("SELECT seq, text_n FROM messages ORDER BY seq").fetchall() == [
                (1, 1), (2, None), (3, 2), (4, 3)]
            assert conn.execute("SELECT text_count FROM rooms").fetchall() == [(3,)]
            assert conn.execute("SELECT read_seq, read_text_n FROM members").fetchall() == [(4, 3)]
            assert conn.execute("SELECT count(*) FROM messages_search").fetchall() == [(2,)]
            assert [row[2] for row in queries.search(conn, ["cafe"], [1], None, 10)] == [1]
            assert queries.search(conn, ["alice"], [1], None, 10) == []  # a room event is not a message
        finally:
            conn.close()

    await trio.to_thread.run_sync(run)


async def test_edits_take_the_send_limit_shared_by_the_nodes(tmp_path: Path, dsn: str) -> None:
    """An edit counts as a send against the bucket kept in the database, whichever node takes it;
    a retried edit that committed is still answered, and deletes are not sends."""
    limit = ("--send-rate", "0.001", "--send-burst", "3")
    async with node(tmp_path, dsn, "a", *limit) as a, node(tmp_path, dsn, "b", *limit) as b:
        room_id, [(alice, _)] = await people_in_room([a.port, b.port], ["alice"])
        on_a, on_b = HTTPClient(a.port), HTTPClient(b.port)
        await sent(on_a, alice, room_id, "one")
        assert (await edit(on_b, alice, room_id, 1, "uno", "e-1")).status == 200
        assert (await edit(on_a, alice, room_id, 1, "un", "e-2")).status == 200
        assert (await edit(on_b, alice, room_id, 1, "eins", "e-3")).status == 429
        assert (await send_text(on_a, alice, room_id, "two")).status == 429
        assert (await edit(on_b, alice, room_id, 1, "un", "e-2")).status == 200  # the retry
        assert (await delete(on_a, alice, room_id, 1)).status == 200
        await on_a.aclose()
        await on_b.aclose()


def test_an_entry_erased_before_it_is_applied_is_cached_erased() -> None:
    """A PostgreSQL node applies another node's erasure at once but may apply an entry it held
    for a gap later (a message too large to notify, read back after the delete's notification):
    the cache must not keep that text, nor an edit's new text of it."""
    state = State(100)
    state.apply(Commit((UserCreated(5, "alice", 0), RoomCreated(3, "lobby", "", 5, 0),
                        MemberJoined(3, 5, 0, "owner"))))
    author = {"id": 5, "username": "alice"}
    text: Any = {"id": 1, "room_id": 3, "seq": 1, "author": author, "text": "secret", "txn_id": None,
                 "created_at": "2026-11-30T08:00:00.000Z", "kind": "text", "edited_at": None,
                 "deleted": False}
    edit_entry: Any = {**text, "id": 2, "seq": 2, "text": "alice edited message 1", "kind": "edit",
                       "target_seq": 1, "new_text": "secret too"}
    state.apply(Commit((TextErased(3, (1,)),)))
    state.apply(Commit((MessageCommitted(text), MessageCommitted(edit_entry))))
    recent = state.rooms[3].recent
    assert [(m["text"], m["deleted"]) for m in recent[:1]] == [("", True)]
    assert recent[1]["new_text"] == ""
    assert state.rooms[3].unread(5) == 0 and state.rooms[3].text_count == 1


@pytest.mark.parametrize("app", [IN_PROCESS, POSTGRES], indirect=True)
async def test_a_search_in_a_few_rooms_answers_the_newest_matches_of_all(
        app: Served, client: HTTPClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL reads each room's newest rows first (two here): a match beyond one room's
    walk may be newer than one inside another's, and must still come first."""
    monkeypatch.setattr(pgsearch, "NEWEST_WALK", 2)
    alice, _ = await register_and_login(client, "alice")
    first = (await client.post("/rooms", {"name": "first", "topic": ""}, token=alice)).json["room"]
    second = (await client.post("/rooms", {"name": "second", "topic": ""}, token=alice)).json["room"]
    for room, text in ((first, "apple one"), (first, "apple two"), (second, "apple three"),
                       (second, "pear"), (second, "pear")):
        await sent(client, alice, room["id"], text)
    assert await found(client, alice, "apple", limit=1) == ["apple three"]
    assert await found(client, alice, "apple", limit=2) == ["apple three", "apple two"]
    assert await found(client, alice, "apple", limit=3) == ["apple three", "apple two", "apple one"]
    assert await found(client, alice, "pear", limit=1, room_id=second["id"]) == ["pear"]
