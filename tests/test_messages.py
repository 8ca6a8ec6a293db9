"""Messages over real HTTP: sending (validation, txn_id idempotency also under races, the send rate
limit) and history (paging, has_more, the long-poll)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from chat_trio.config import Config
from tests.client import HTTPClient, Reply
from tests.helpers import (
    Served,
    assert_error,
    assert_message_shape,
    db_rows,
    get_room,
    history,
    join,
    make_config,
    make_room,
    parse_time,
    register_and_login,
    send,
    serve,
)
from tests.ws_client import connect


async def setup_room(client: HTTPClient) -> tuple[str, dict[str, Any], dict[str, Any]]:
    token, user = await register_and_login(client, "alice")
    room = await make_room(client, token, "lobby")
    return token, user, room


def txn_rows(config: Config, room_id: int, txn_id: str) -> int:
    return int(db_rows(config.db, "SELECT count(*) FROM messages WHERE room_id = ? AND txn_id = ?",
                       room_id, txn_id)[0][0])


# -- sending --------------------------------------------------------------------------------


@pytest.mark.workers
async def test_send_answers_201_with_the_message(client: HTTPClient) -> None:
    token, user, room = await setup_room(client)
    before = time.time()
    reply = await send(client, token, room["id"], "hello, world")
    assert reply.status == 201 and set(reply.json) == {"message"}
    message = reply.json["message"]
    assert_message_shape(message)
    assert message["room_id"] == room["id"] and message["seq"] == 1
    assert message["author"] == {"id": user["id"], "username": "alice"}
    assert message["text"] == "hello, world" and message["txn_id"] is None
    assert before - 1 <= parse_time(message["created_at"]) <= time.time() + 1
    second = (await send(client, token, room["id"], "again", "t-1")).json["message"]
    assert second["seq"] == 2 and second["txn_id"] == "t-1" and second["id"] > message["id"]
    assert (await get_room(client, token, room["id"]))["last_seq"] == 2
    page = (await history(client, token, room["id"])).json
    assert page == {"messages": [message, second], "has_more": False}


@pytest.mark.workers
async def test_text_validation(client: HTTPClient) -> None:
    token, _, room = await setup_room(client)
    rid = room["id"]
    accepted = ["x" * 4000, "ü" * 4000, "line one\nline two", "col\tcol", "\n", "😀 emoji", " "]
    for text in accepted:
        reply = await send(client, token, rid, text)
        assert reply.status == 201, (text[:20], reply.body)
        assert reply.json["message"]["text"] == text
    rejected: list[Any] = ["x" * 4001, "ü" * 4001, "", "nul\x00", "bell\x07", "cr\r", "esc\x1b[31m",
                           "del\x7f", "c1\x85", "c1\x9b", "vt\x0b", 42, None, ["hi"]]
    for text in rejected:
        assert_error(await send(client, token, rid, text), 422, "validation_failed", "text")
    reply = await client.post(f"/rooms/{rid}/messages", {}, token=token)
    assert_error(reply, 422, "validation_failed", "text")
    reply = await client.post(f"/rooms/{rid}/messages", {"text": "hi", "html": "<b>"}, token=token)
    assert_error(reply, 422, "validation_failed", "html")
    reply = await client.post(f"/rooms/{rid}/messages", body=b'"hi"',
                              headers=[("content-type", "application/json")], token=token)
    assert_error(reply, 400, "invalid_json")
    # Only the accepted ones were written, in order.
    page = (await history(client, token, rid, limit=100)).json["messages"]
    assert [m["text"] for m in page] == accepted
    assert (await get_room(client, token, rid))["last_seq"] == len(accepted)


@pytest.mark.workers
async def test_txn_id_validation(client: HTTPClient) -> None:
    token, _, room = await setup_room(client)
    assert (await send(client, token, room["id"], "a", "t" * 64)).json["message"]["txn_id"] == "t" * 64
    assert (await send(client, token, room["id"], "b", "!azAZ09~")).status == 201
    # Printable ASCII only: no spaces, controls or anything beyond ASCII.
    for bad in ("t" * 65, "", 17, ["x"], "é", "a b", "tab\t", "\x7f", "\uff54"):
        reply = await client.post(f"/rooms/{room['id']}/messages", {"text": "c", "txn_id": bad}, token=token)
        assert_error(reply, 422, "validation_failed", "txn_id")
    assert (await get_room(client, token, room["id"]))["last_seq"] == 2


@pytest.mark.workers
async def test_repeated_txn_id_creates_nothing(client: HTTPClient, config: Config) -> None:
    token, _, room = await setup_room(client)
    rid = room["id"]
    first = await send(client, token, rid, "only once", "txn-a")
    assert first.status == 201
    for text in ("only once", "a different text"):
        again = await send(client, token, rid, text, "txn-a")
        assert again.status == 200
        assert again.json == first.json  # the original message, text included
    assert txn_rows(config, rid, "txn-a") == 1
    assert (await get_room(client, token, rid))["last_seq"] == 1
    page = (await history(client, token, rid)).json["messages"]
    assert page == [first.json["message"]]
    following = await send(client, token, rid, "next", "txn-b")
    assert following.status == 201 and following.json["message"]["seq"] == 2  # seq did not skip


@pytest.mark.workers
async def test_concurrent_duplicates_create_one_message(app: Served, client: HTTPClient,
                                                        config: Config) -> None:
    token, _, room = await setup_room(client)
    rid = room["id"]
    clients = [HTTPClient(app.port, token) for _ in range(20)]
    for c in clients:  # open every connection first so the sends really race
        assert (await c.get("/me")).status == 200
    go = trio.Event()
    replies: list[Reply] = []

    async def racer(c: HTTPClient) -> None:
        await go.wait()
        replies.append(await send(c, token, rid, "race", "same-txn"))

    async with trio.open_nursery() as nursery:
        for c in clients:
            nursery.start_soon(racer, c)
        await trio.testing.wait_all_tasks_blocked()
        go.set()
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] * 19 + [201]
    assert len({r.body for r in replies}) == 1  # all the very same message
    assert txn_rows(config, rid, "same-txn") == 1
    assert (await get_room(client, token, rid))["last_seq"] == 1
    for c in clients:
        await c.aclose()


@pytest.mark.workers
async def test_same_txn_id_from_another_user_or_room_is_a_new_message(client: HTTPClient) -> None:
    alice, _, room = await setup_room(client)
    bob, _ = await register_and_login(client, "bob")
    await join(client, bob, room["id"])
    other_room = await make_room(client, alice, "other")
    a = await send(client, alice, room["id"], "from alice", "shared")
    b = await send(client, bob, room["id"], "from bob", "shared")
    c = await send(client, alice, other_room["id"], "other room", "shared")
    assert [a.status, b.status, c.status] == [201, 201, 201]
    ids = {r.json["message"]["id"] for r in (a, b, c)}
    assert len(ids) == 3
    assert b.json["message"]["seq"] == 3 and c.json["message"]["seq"] == 1  # seq 1: bob's join
    assert (await send(client, bob, room["id"], "dup", "shared")).json == b.json


# -- paging ---------------------------------------------------------------------------------


def seqs(reply: Reply) -> list[int]:
    assert reply.status == 200, reply.body
    assert set(reply.json) == {"messages", "has_more"}
    return [m["seq"] for m in reply.json["messages"]]


@pytest.mark.parametrize("recent_cache", [200, 7])  # pages from memory and from disk
async def test_paging(tmp_path: Path, recent_cache: int) -> None:
    total = 300
    async with serve(make_config(tmp_path, send_rate=0, recent_cache=recent_cache)) as app:
        client = HTTPClient(app.port)
        token, _ = await register_and_login(client, "alice")
        rid = (await make_room(client, token, "busy"))["id"]
        by_seq: dict[int, dict[str, Any]] = {}

        async def sender(worker: int) -> None:
            c = HTTPClient(app.port, token)
            for i in range(total // 10):
                reply = await send(c, token, rid, f"w{worker} #{i}")
                assert reply.status == 201
                by_seq[reply.json["message"]["seq"]] = reply.json["message"]
            await c.aclose()

        async with trio.open_nursery() as nursery:
            for worker in range(10):
                nursery.start_soon(sender, worker)
        assert sorted(by_seq) == list(range(1, total + 1))

        async def page(**query: Any) -> tuple[list[int], bool]:
            reply = await history(client, token, rid, **query)
            got = seqs(reply)
            assert reply.json["messages"] == [by_seq[s] for s in got]  # exactly what was sent
            return got, reply.json["has_more"]

        def r(first: int, last: int) -> list[int]:
            return list(range(first, last + 1))

        assert await page() == (r(251, 300), True)
        assert await page(limit=1) == ([300], True)
        assert await page(limit=100) == (r(201, 300), True)
        assert await page(before=251) == (r(201, 250), True)
        assert await page(before=52) == (r(2, 51), True)
        assert await page(before=51) == (r(1, 50), False)
        assert await page(before=2) == ([1], False)
        assert await page(before=1) == ([], False)
        assert await page(before=1000) == (r(251, 300), True)
        assert await page(before=301, limit=100) == (r(201, 300), True)
        assert await page(after=0) == (r(1, 50), True)
        assert await page(after=0, limit=1) == ([1], True)
        assert await page(after=100, limit=100) == (r(101, 200), True)
        assert await page(after=249) == (r(250, 299), True)
        assert await page(after=250) == (r(251, 300), False)
        assert await page(after=299, limit=100) == ([300], False)
        assert await page(after=300) == ([], False)
        assert await page(after=5000) == ([], False)

        # Walking the whole room backwards and forwards gives every seq exactly once.
        backwards: list[int] = []
        got, more = await page(limit=37)
        backwards = got + backwards
        while more:
            got, more = await page(before=backwards[0], limit=37)
            backwards = got + backwards
        assert backwards == r(1, total)
        forwards: list[int] = []
        more, after = True, 0
        while more:
            got, more = await page(after=after, limit=41)
            forwards += got
            after = got[-1]
        assert forwards == r(1, total)

        bad_queries: list[tuple[dict[str, Any], str]] = [
            ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": -1}, "limit"),
            ({"limit": "ten"}, "limit"), ({"limit": ""}, "limit"),
            ({"before": "x"}, "before"), ({"before": -5}, "before"),
            ({"after": "1.5"}, "after"), ({"after": "1e3"}, "after"),
        ]
        for query, name in bad_queries:
            assert_error(await history(client, token, rid, **query), 422, "validation_failed", name)
        reply = await history(client, token, rid, before=100, after=10)
        assert_error(reply, 422, "validation_failed")
        await client.aclose()


@pytest.mark.workers
async def test_empty_room_history(client: HTTPClient) -> None:
    token, _, room = await setup_room(client)
    for query in ({}, {"after": 0}, {"before": 1}, {"limit": 1}):
        reply = await history(client, token, room["id"], **query)
        assert reply.status == 200 and reply.json == {"messages": [], "has_more": False}


# -- long-poll ------------------------------------------------------------------------------


@pytest.mark.workers
async def test_long_poll_is_woken_by_a_send(app: Served, client: HTTPClient) -> None:
    alice, _, room = await setup_room(client)
    bob, _ = await register_and_login(client, "bob")
    await join(client, bob, room["id"])
    await send(client, alice, room["id"], "before the poll")
    poller = HTTPClient(app.port, bob)
    polled: list[Reply] = []

    async def poll() -> None:
        polled.append(await history(poller, bob, room["id"], after=2, wait=30))  # 1: bob's join

    with trio.fail_after(15):  # guards against a poll that is only ended by its 30 s wait
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert polled == []  # the server is holding the request
            sent = await send(client, alice, room["id"], "wake up")
            assert sent.status == 201
    reply = polled[0]
    assert reply.status == 200
    assert reply.json == {"messages": [sent.json["message"]], "has_more": False}
    await poller.aclose()


@pytest.mark.workers
async def test_long_poll_of_a_member_who_left_meanwhile_is_403(app: Served, client: HTTPClient) -> None:
    alice, _, room = await setup_room(client)
    bob, _ = await register_and_login(client, "bob")
    await join(client, bob, room["id"])
    poller = HTTPClient(app.port, bob)
    polled: list[Reply] = []

    async def poll() -> None:
        polled.append(await history(poller, bob, room["id"], after=1, wait=30))  # 1: bob's join

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert (await client.post(f"/rooms/{room['id']}/leave", token=bob)).status == 204
            assert (await send(client, alice, room["id"], "not for bob")).status == 201
    assert_error(polled[0], 403, "forbidden")
    assert b"not for bob" not in polled[0].body
    await poller.aclose()


@pytest.mark.workers
async def test_long_poll_answers_at_once_when_newer_messages_exist(client: HTTPClient) -> None:
    token, _, room = await setup_room(client)
    first = (await send(client, token, room["id"], "already here")).json["message"]
    with trio.fail_after(15):
        reply = await history(client, token, room["id"], after=0, wait=30)
    assert reply.json == {"messages": [first], "has_more": False}


async def test_long_poll_times_out_with_no_messages(client: HTTPClient) -> None:
    token, _, room = await setup_room(client)
    await send(client, token, room["id"], "old")
    reply = await history(client, token, room["id"], after=1, wait=0.3)
    assert reply.status == 200 and reply.json == {"messages": [], "has_more": False}
    reply = await history(client, token, room["id"], after=1, wait=0)
    assert reply.status == 200 and reply.json == {"messages": [], "has_more": False}


@pytest.mark.workers
async def test_wait_validation(client: HTTPClient) -> None:
    token, _, room = await setup_room(client)
    for query in ({"wait": 1}, {"wait": 1, "before": 5}):
        assert_error(await history(client, token, room["id"], **query), 422, "validation_failed", "wait")
    for bad in (-1, 31, 30.5, "nan", "inf", "soon", ""):
        reply = await history(client, token, room["id"], after=0, wait=bad)
        assert_error(reply, 422, "validation_failed", "wait")


# -- send rate limit ------------------------------------------------------------------------


async def test_send_rate_limit(tmp_path: Path) -> None:
    async with serve(make_config(tmp_path, send_rate=2, send_burst=2)) as app:
        client = HTTPClient(app.port)
        token, _, room = await setup_room(client)
        first = await send(client, token, room["id"], "one", "t1")
        assert first.status == 201
        assert (await send(client, token, room["id"], "two")).status == 201
        reply = await send(client, token, room["id"], "three", "t3")
        error = assert_error(reply, 429, "rate_limited")
        assert isinstance(error["retry_after_ms"], int) and error["retry_after_ms"] >= 1
        assert int(reply.headers[b"retry-after"]) >= 1
        # A retry of a send that committed writes nothing, so the limit does not refuse it.
        retry = await send(client, token, room["id"], "one", "t1")
        assert retry.status == 200 and retry.json["message"] == first.json["message"]
        assert_error(await send(client, token, room["id"], "three", "t3"), 429, "rate_limited")
        # Nothing was written by the refused send.
        assert (await get_room(client, token, room["id"]))["last_seq"] == 2
        texts = [m["text"] for m in (await history(client, token, room["id"])).json["messages"]]
        assert texts == ["one", "two"]
        # The limit is per user: another member can still send.
        bob, _ = await register_and_login(client, "bob")
        await join(client, bob, room["id"])
        assert (await send(client, bob, room["id"], "bob here")).status == 201
        await client.aclose()


@pytest.mark.workers
async def test_websocket_send_follows_the_same_rules(app: Served, client: HTTPClient) -> None:
    """The `send` frame is checked by the same declarations as POST .../messages: printable ASCII
    txn_id, text stored NFC."""
    with trio.fail_after(10):
        token, _, room = await setup_room(client)
        async with connect(app.port, token) as ws:
            await ws.subscribe(room["id"])
            await ws.send({"type": "send", "room_id": room["id"], "text": "x", "txn_id": "\u00e9", "ref": 1})
            error = await ws.expect("error")
            assert error["code"] == "validation_failed" and error["message"].startswith("txn_id:")
            await ws.send({"type": "send", "room_id": room["id"], "text": "noe\u0308l", "ref": 2})
            for _ in range(2):  # the ack and the live message, in either order
                frame = await ws.recv()
                assert frame["message"]["text"] == "no\u00ebl", frame
