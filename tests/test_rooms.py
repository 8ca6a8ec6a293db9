"""Rooms over real HTTP: create, list, show, join, leave, members, and the 401/403/404 rules."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from chat_trio.app import App
from tests.client import HTTPClient, Reply
from tests.helpers import (
    MEMBER_ROOM_KEYS,
    USER_KEYS,
    Served,
    as_non_member,
    assert_error,
    get_room,
    join,
    make_config,
    make_room,
    parse_time,
    register_and_login,
    send,
    serve,
    store_of,
)


@pytest.mark.workers
async def test_create_room(client: HTTPClient) -> None:
    token, user = await register_and_login(client, "alice")
    before = time.time()
    reply = await client.post("/rooms", {"name": "General", "topic": "Anything goes"}, token=token)
    assert reply.status == 201
    assert set(reply.json) == {"room"}
    room = reply.json["room"]
    assert set(room) == MEMBER_ROOM_KEYS  # the role, read marker and count: for a member only
    assert (room["visibility"], room["kind"], room["my_role"]) == ("public", "room", "owner")
    assert isinstance(room["id"], int) and room["id"] >= 1
    assert room["name"] == "General" and room["topic"] == "Anything goes"
    assert room["created_by"] == user["id"]
    assert room["member_count"] == 1 and room["last_seq"] == 0
    assert before - 1 <= parse_time(room["created_at"]) <= time.time() + 1
    # The creator is a member: listed, and allowed to read members and messages.
    members = (await client.get(f"/rooms/{room['id']}/members", token=token)).json["members"]
    assert [m["user"] for m in members] == [user]
    mine = (await client.get("/rooms?joined=true", token=token)).json["rooms"]
    assert mine == [room]
    assert (await client.get(f"/rooms/{room['id']}/messages", token=token)).status == 200


async def test_topic_is_optional(client: HTTPClient) -> None:
    token, _ = await register_and_login(client, "alice")
    assert (await make_room(client, token, "no-topic"))["topic"] == ""
    reply = await client.post("/rooms", {"name": "null-topic", "topic": None}, token=token)
    assert reply.status == 201 and reply.json["room"]["topic"] == ""
    assert (await make_room(client, token, "empty-topic", ""))["topic"] == ""


@pytest.mark.parametrize(("first", "second"), [
    ("General", "general"), ("general", "GENERAL"), ("General", "General"),
    ("Ärger", "ärger"), ("ärger", "ÄRGER"), ("Ωmega", "ωMEGA"), ("Straße", "STRASSE"),
])
async def test_room_name_taken_ignoring_case(client: HTTPClient, first: str, second: str) -> None:
    token, _ = await register_and_login(client, "alice")
    other, _ = await register_and_login(client, "bob")
    await make_room(client, token, first)
    for who in (token, other):
        reply = await client.post("/rooms", {"name": second}, token=who)
        assert_error(reply, 409, "room_name_taken")
    rooms = (await client.get("/rooms", token=token)).json["rooms"]
    assert [r["name"] for r in rooms] == [first]


@pytest.mark.workers
async def test_racing_creates_of_one_name_make_one_room(app: Served, client: HTTPClient) -> None:
    token, _ = await register_and_login(client, "alice")
    clients = [HTTPClient(app.port, token) for _ in range(8)]
    replies: list[Reply] = []

    async def attempt(c: HTTPClient, name: str) -> None:
        replies.append(await c.post("/rooms", {"name": name}))

    async with trio.open_nursery() as nursery:
        for n, c in enumerate(clients):
            nursery.start_soon(attempt, c, "Ärger" if n % 2 else "ärger")
    assert sorted(r.status for r in replies) == [201] + [409] * 7
    for reply in replies:
        if reply.status == 409:
            assert_error(reply, 409, "room_name_taken")
    assert len((await client.get("/rooms", token=token)).json["rooms"]) == 1
    for c in clients:
        await c.aclose()


async def test_room_name_and_topic_boundaries(client: HTTPClient) -> None:
    token, _ = await register_and_login(client, "alice")
    for name in ("x", "n" * 64, "ä" * 64, "a room with spaces", "日本語"):
        assert (await make_room(client, token, name))["name"] == name
    for bad in ("m" * 65, "ö" * 65, "", "   ", "nul\x00", "esc\x1b", 5, None):
        reply = await client.post("/rooms", {"name": bad}, token=token)
        assert_error(reply, 422, "validation_failed", "name")
    assert_error(await client.post("/rooms", {"topic": "t"}, token=token), 422, "validation_failed", "name")
    assert (await make_room(client, token, "t256", "t" * 256))["topic"] == "t" * 256
    for bad_topic in ("t" * 257, "bell\x07", 7):
        reply = await client.post("/rooms", {"name": "t257", "topic": bad_topic}, token=token)
        assert_error(reply, 422, "validation_failed", "topic")
    reply = await client.post("/rooms", {"name": "extra", "private": True}, token=token)
    assert_error(reply, 422, "validation_failed", "private")
    # None of the refused rooms exists.
    names = [r["name"] for r in (await client.get("/rooms", token=token)).json["rooms"]]
    assert names == ["x", "n" * 64, "ä" * 64, "a room with spaces", "日本語", "t256"]


async def test_create_room_body_errors(client: HTTPClient) -> None:
    token, _ = await register_and_login(client, "alice")
    reply = await client.post("/rooms", body=b"[]", headers=[("content-type", "application/json")],
                              token=token)
    assert_error(reply, 400, "invalid_json")
    reply = await client.post("/rooms", body=b'{"name":"x"}', headers=[("content-type", "text/plain")],
                              token=token)
    assert_error(reply, 415, "unsupported_media_type")


@pytest.mark.workers
async def test_list_rooms(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    bob, _ = await register_and_login(client, "bob")
    a1 = await make_room(client, alice, "zeta")
    b1 = await make_room(client, bob, "alpha")
    a2 = await make_room(client, alice, "mu")
    a1, a2 = (as_non_member(r) for r in (a1, a2))  # as bob sees them
    reply = await client.get("/rooms", token=bob)
    assert reply.status == 200 and set(reply.json) == {"rooms", "has_more"}
    assert reply.json["rooms"] == [a1, b1, a2]  # ordered by id, not by name
    assert reply.json["has_more"] is False
    assert [r["id"] for r in reply.json["rooms"]] == sorted(r["id"] for r in (a1, b1, a2))
    for value in ("true", "1", "TRUE"):
        assert (await client.get(f"/rooms?joined={value}", token=bob)).json["rooms"] == [b1]
    assert [r["id"] for r in (await client.get("/rooms?joined=true", token=alice)).json["rooms"]] == [
        a1["id"], a2["id"]]
    assert (await client.get("/rooms?joined=false", token=bob)).json["rooms"] == [a1, b1, a2]
    await join(client, bob, a2["id"])
    mine = (await client.get("/rooms?joined=true", token=bob)).json["rooms"]
    assert [r["id"] for r in mine] == [b1["id"], a2["id"]]
    for bad in ("yes", "2", "maybe"):
        assert_error(await client.get(f"/rooms?joined={bad}", token=bob), 422, "validation_failed", "joined")


@pytest.mark.workers
async def test_show_room(client: HTTPClient) -> None:
    token, _ = await register_and_login(client, "alice")
    other, _ = await register_and_login(client, "bob")
    room = await make_room(client, token, "lobby", "hi")
    reply = await client.get(f"/rooms/{room['id']}", token=other)  # non-members may look
    assert reply.status == 200 and reply.json == {"room": as_non_member(room)}
    assert_error(await client.get(f"/rooms/{room['id'] + 1000}", token=token), 404, "not_found")
    assert_error(await client.get("/rooms/abc", token=token), 404, "not_found")


@pytest.mark.workers
async def test_join_is_idempotent(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    bob, _ = await register_and_login(client, "bob")
    room = await make_room(client, alice, "lobby")
    for _ in range(3):
        reply = await client.post(f"/rooms/{room['id']}/join", token=bob)
        assert reply.status == 200 and set(reply.json) == {"room"}
        # bob's join is the room's first timeline entry
        assert reply.json["room"] == {**room, "member_count": 2, "my_role": "member", "last_seq": 1,
                                      "read_seq": 1}
    assert (await join(client, alice, room["id"]))["member_count"] == 2  # the creator joining again
    assert (await get_room(client, alice, room["id"]))["member_count"] == 2
    members = (await client.get(f"/rooms/{room['id']}/members", token=bob)).json["members"]
    assert len(members) == 2


@pytest.mark.workers
async def test_leave_is_idempotent(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    bob, _ = await register_and_login(client, "bob")
    room = await make_room(client, alice, "lobby")
    await join(client, bob, room["id"])
    for _ in range(2):
        reply = await client.post(f"/rooms/{room['id']}/leave", token=bob)
        assert reply.status == 204 and reply.body == b""
    assert (await get_room(client, alice, room["id"]))["member_count"] == 1
    assert (await client.get("/rooms?joined=true", token=bob)).json["rooms"] == []
    assert_error(await client.get(f"/rooms/{room['id']}/messages", token=bob), 403, "forbidden")
    assert_error(await send(client, bob, room["id"], "hello"), 403, "forbidden")
    # Leaving a room never joined is fine too; joining again works.
    carol, _ = await register_and_login(client, "carol")
    assert (await client.post(f"/rooms/{room['id']}/leave", token=carol)).status == 204
    assert (await join(client, bob, room["id"]))["member_count"] == 2


@pytest.mark.workers
async def test_members(client: HTTPClient) -> None:
    alice, alice_user = await register_and_login(client, "alice")
    bob, bob_user = await register_and_login(client, "bob")
    carol, _ = await register_and_login(client, "carol")
    room = await make_room(client, alice, "lobby")
    await join(client, bob, room["id"])
    reply = await client.get(f"/rooms/{room['id']}/members", token=bob)
    assert reply.status == 200 and set(reply.json) == {"members"}
    members = reply.json["members"]
    for member in members:
        assert set(member) == {"user", "joined_at", "online", "role"}
        assert set(member["user"]) == USER_KEYS
        assert member["online"] is False  # nobody has a websocket open
        parse_time(member["joined_at"])
    assert sorted((m["user"] for m in members), key=lambda u: u["id"]) == [alice_user, bob_user]
    assert [m["role"] for m in members] == ["owner", "member"]
    assert_error(await client.get(f"/rooms/{room['id']}/members", token=carol), 403, "forbidden")


@pytest.mark.workers
async def test_non_member_is_forbidden_on_every_room_scoped_call(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    eve, _ = await register_and_login(client, "eve")
    room = await make_room(client, alice, "private-ish")
    assert (await send(client, alice, room["id"], "secret")).status == 201
    rid = room["id"]
    for method, path, body in [
        ("GET", f"/rooms/{rid}/members", None),
        ("GET", f"/rooms/{rid}/messages", None),
        ("GET", f"/rooms/{rid}/messages?after=0&wait=5", None),
        ("POST", f"/rooms/{rid}/messages", {"text": "let me in"}),
        ("POST", f"/rooms/{rid}/messages", {"text": "let me in", "txn_id": "x"}),
    ]:
        reply = await client.request(method, path, body, token=eve)
        assert_error(reply, 403, "forbidden")
        assert b"secret" not in reply.body
    assert (await get_room(client, alice, rid))["last_seq"] == 1  # the refused sends wrote nothing


AUTHENTICATED: list[tuple[str, str, Any]] = [
    ("POST", "/logout", None),
    ("GET", "/me", None),
    ("POST", "/rooms", {"name": "x"}),
    ("GET", "/rooms", None),
    ("GET", "/rooms?joined=true", None),
    ("GET", "/rooms/{rid}", None),
    ("POST", "/rooms/{rid}/join", None),
    ("POST", "/rooms/{rid}/leave", None),
    ("GET", "/rooms/{rid}/members", None),
    ("GET", "/rooms/{rid}/messages", None),
    ("POST", "/rooms/{rid}/messages", {"text": "hi"}),
]


@pytest.mark.workers
async def test_room_that_does_not_exist_is_404(client: HTTPClient) -> None:
    token, _ = await register_and_login(client, "alice")
    room = await make_room(client, token, "real")
    for method, path, body in AUTHENTICATED:
        if "{rid}" in path:
            reply = await client.request(method, path.format(rid=room["id"] + 1), body, token=token)
            assert_error(reply, 404, "not_found")


@pytest.mark.parametrize("token", [None, "bogus-token"])
async def test_every_authenticated_route_needs_a_token(client: HTTPClient, token: str | None) -> None:
    owner, _ = await register_and_login(client, "alice")
    room = await make_room(client, owner, "real")
    for method, path, body in AUTHENTICATED:
        reply = await client.request(method, path.format(rid=room["id"]), body, token=token or "")
        assert_error(reply, 401, "unauthorized")
    # Nothing changed.
    after = await get_room(client, owner, room["id"])
    assert after == room
    assert len((await client.get("/rooms", token=owner)).json["rooms"]) == 1


async def test_calls_without_a_body_take_only_an_empty_one(client: HTTPClient) -> None:
    """A call that takes no body accepts an empty body or `{}`; anything else is refused as a
    body with unknown fields (422), not JSON (400) or of another type (415) would be."""
    with trio.fail_after(10):
        token, _ = await register_and_login(client, "alice")
        rid = (await make_room(client, token, "general"))["id"]
        calls = [("POST", f"/rooms/{rid}/join"), ("GET", "/rooms"), ("GET", f"/rooms/{rid}"),
                 ("GET", f"/rooms/{rid}/members"), ("GET", f"/rooms/{rid}/messages"), ("GET", "/me"),
                 ("POST", f"/rooms/{rid}/leave")]
        json_type = [("content-type", "application/json")]
        for method, path in calls:
            reply = await client.request(method, path, json={"x": 1}, token=token)
            assert_error(reply, 422, "validation_failed", "x")
            assert_error(await client.request(method, path, body=b"[1]", headers=json_type, token=token),
                         400, "invalid_json")
            text = [("content-type", "text/plain")]
            assert_error(await client.request(method, path, body=b"x", headers=text, token=token),
                         415, "unsupported_media_type")
            assert (await client.request(method, path, json={}, token=token)).status in (200, 204)
            assert (await client.request(method, path, token=token)).status in (200, 204)
        # The refused join did not make anyone a member of anything.
        assert (await get_room(client, token, rid))["member_count"] == 0
        assert_error(await client.post("/logout", {"x": 1}, token=token), 422, "validation_failed", "x")
        assert (await client.get("/me", token=token)).status == 200  # still logged in
        assert (await client.post("/logout", {}, token=token)).status == 204


async def test_room_names_and_topics_are_nfc_and_refuse_invisible_tricks(client: HTTPClient) -> None:
    with trio.fail_after(10):
        token, _ = await register_and_login(client, "alice")
        room = await make_room(client, token, "Cafe\u0301", "re\u0301sume\u0301")
        assert room["name"] == "Caf\u00e9" and room["topic"] == "r\u00e9sum\u00e9"
        assert (await get_room(client, token, room["id"]))["name"] == "Caf\u00e9"
        assert_error(await client.post("/rooms", {"name": "Caf\u00e9"}, token=token), 409, "room_name_taken")
        tricks = ("evil\u202etxt.exe", "a\u2066b\u2069", "zero\u200bwidth", "bom\ufeff", "two\nlines",
                  "para\u2029graph", "line\u2028sep", "cr\rx", "nel\x85x", "lrm\u200ex")
        for bad in tricks:
            assert_error(await client.post("/rooms", {"name": bad}, token=token), 422, "validation_failed",
                         "name")
            reply = await client.post("/rooms", {"name": "ok", "topic": bad}, token=token)
            assert_error(reply, 422, "validation_failed", "topic")
        for blank in ("\u3164", " \u00a0\u3000", "\u2800\u2800", "\u115f\u1160", "\u034f", "\t"):
            assert_error(await client.post("/rooms", {"name": blank}, token=token), 422, "validation_failed",
                         "name")
        # A topic may still span tabs; a name may hold any visible script.
        assert (await make_room(client, token, "ok", "a\tb"))["topic"] == "a\tb"
        emoji = "\u65e5\u672c \U0001f600"
        assert (await make_room(client, token, emoji))["name"] == emoji


@pytest.mark.parametrize(("first", "second"), [
    ("general", "\uff47\uff45\uff4e\uff45\uff52\uff41\uff4c"),  # fullwidth
    ("\uff27eneral", "GENERAL"),
    ("file", "\ufb01le"),  # the fi ligature
    ("Stra\u00dfe", "STRASSE"),
    ("\u2460", "1"),  # circled digit one
])
async def test_room_names_collide_by_nfkc_casefold(client: HTTPClient, first: str, second: str) -> None:
    with trio.fail_after(10):
        token, _ = await register_and_login(client, "alice")
        await make_room(client, token, first)
        assert_error(await client.post("/rooms", {"name": second}, token=token), 409, "room_name_taken")


@pytest.mark.workers
async def test_messages_are_stored_nfc(client: HTTPClient) -> None:
    with trio.fail_after(10):
        token, _ = await register_and_login(client, "alice")
        rid = (await make_room(client, token, "general"))["id"]
        reply = await send(client, token, rid, "noe\u0308l \u212b")  # combining diaeresis; angstrom sign
        assert reply.status == 201 and reply.json["message"]["text"] == "no\u00ebl \u00c5"
        assert (await client.get(f"/rooms/{rid}/messages", token=token)).json["messages"][0]["text"] == \
            "no\u00ebl \u00c5"


async def test_list_rooms_pages_by_id(app: App, client: HTTPClient) -> None:
    with trio.fail_after(20):
        _, alice_user = await register_and_login(client, "alice")
        bob, bob_user = await register_and_login(client, "bob")
        store = store_of(app)
        ids = [(await store.create_room((alice_user if i % 2 else bob_user)["id"], f"room {i}", "")).id
               for i in range(7)]
        seen: list[int] = []
        after = 0
        while True:
            page = (await client.get(f"/rooms?after={after}&limit=3", token=bob)).json
            assert len(page["rooms"]) <= 3
            seen += [r["id"] for r in page["rooms"]]
            if not page["has_more"]:
                break
            after = page["rooms"][-1]["id"]
        assert seen == ids
        mine = (await client.get(f"/rooms?joined=true&limit=2&after={ids[0]}", token=bob)).json
        assert [r["id"] for r in mine["rooms"]] == [ids[2], ids[4]] and mine["has_more"] is True
        last = (await client.get(f"/rooms?joined=1&limit=2&after={ids[4]}", token=bob)).json
        assert [r["id"] for r in last["rooms"]] == [ids[6]] and last["has_more"] is False
        exact = (await client.get(f"/rooms?limit=7&after={ids[0] - 1}", token=bob)).json
        assert len(exact["rooms"]) == 7 and exact["has_more"] is False
        beyond = (await client.get(f"/rooms?after={ids[-1]}", token=bob)).json
        assert beyond == {"rooms": [], "has_more": False}
        for bad in ("limit=0", "limit=501", "limit=x", "after=-1", "after=1.5", "limit="):
            name = bad.split("=")[0]
            assert_error(await client.get(f"/rooms?{bad}", token=bob), 422, "validation_failed", name)
        assert len((await client.get("/rooms?limit=500", token=bob)).json["rooms"]) == 7


async def test_list_rooms_default_page_is_100(app: App, client: HTTPClient) -> None:
    with trio.fail_after(30):
        token, user = await register_and_login(client, "alice")
        async with trio.open_nursery() as nursery:  # concurrent creates share commits
            for i in range(101):
                nursery.start_soon(store_of(app).create_room, user["id"], f"r{i}", "")
        page = (await client.get("/rooms", token=token)).json
        assert len(page["rooms"]) == 100 and page["has_more"] is True
        rest = (await client.get(f"/rooms?after={page['rooms'][-1]['id']}", token=token)).json
        assert len(rest["rooms"]) == 1 and rest["has_more"] is False


async def test_room_creation_is_rate_limited_per_user(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Rooms per user: a token bucket (429 with Retry-After, as for sends). Refused creates (taken
    name, invalid body) do not use it up; other users are not affected."""
    mock_clock.rate = 1.0
    config = make_config(tmp_path, room_create_rate=0.5, room_create_burst=2)
    with trio.fail_after(30 + 2):  # 30 s of real time, plus the jump
        async with serve(config) as app:
            client = HTTPClient(app.port)
            token, _ = await register_and_login(client, "yara")
            other, _ = await register_and_login(client, "zoe")
            await make_room(client, token, "one")
            assert_error(await client.post("/rooms", {"name": "one"}, token=token), 409, "room_name_taken")
            assert_error(await client.post("/rooms", {"name": ""}, token=token), 422, "validation_failed")
            await make_room(client, token, "two")
            reply = await client.post("/rooms", {"name": "three"}, token=token)
            error = assert_error(reply, 429, "rate_limited")
            assert 1500 < error["retry_after_ms"] <= 2000 and reply.headers[b"retry-after"] == b"2"
            await make_room(client, other, "three")
            mock_clock.jump(2.0)
            await make_room(client, token, "four")
            assert_error(await client.post("/rooms", {"name": "five"}, token=token), 429, "rate_limited")
            assert [r["name"] for r in (await client.get("/rooms", token=token)).json["rooms"]] == [
                "one", "two", "three", "four"]
            await client.aclose()


async def test_unknown_query_parameters_are_refused_like_unknown_fields(client: HTTPClient) -> None:
    """A misspelt cursor must not silently answer another page: an unknown query parameter of a
    call that takes a query is 422 naming it, as an unknown body field is."""
    with trio.fail_after(10):
        token, _ = await register_and_login(client, "quinn")
        rid = (await make_room(client, token, "queries"))["id"]
        for path in ("/rooms?befor=3", f"/rooms/{rid}/messages?befor=3", f"/rooms/{rid}/messages?=1",
                     "/rooms?limit=10&%233I4%7C=null"):
            reply = await client.get(path, token=token)
            assert_error(reply, 422, "validation_failed")
        assert (await client.get(f"/rooms/{rid}/messages?before=3&limit=5", token=token)).status == 200
        assert (await client.get("/rooms?joined=true&after=0&limit=5", token=token)).status == 200
