"""Direct rooms (docs/API.md, v2): one per pair of users, also when both open it at once, named
after the other user as each sees it, closed to everyone else and to moderation."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.client import HTTPClient, Reply
from tests.helpers import Served, all_messages, assert_error, get_room, register_and_login, send

JSON = dict[str, Any]


async def direct(client: HTTPClient, token: str, user_id: int) -> Reply:
    return await client.post("/direct", {"user_id": user_id}, token=token)


@pytest.mark.workers
async def test_one_direct_room_per_pair_named_after_the_other(client: HTTPClient) -> None:
    alice, alice_user = await register_and_login(client, "alice")
    bob, bob_user = await register_and_login(client, "bob")
    carol, carol_user = await register_and_login(client, "carol")
    opened = await direct(client, alice, bob_user["id"])
    assert opened.status == 201, opened.body
    room = opened.json["room"]
    assert (room["kind"], room["visibility"], room["name"], room["my_role"]) == (
        "direct", "private", "bob", "member")
    assert (room["member_count"], room["last_seq"]) == (2, 0)  # both members from seq 0: no entries
    again = await direct(client, bob, alice_user["id"])
    assert again.status == 200 and again.json["room"]["id"] == room["id"]
    assert again.json["room"]["name"] == "alice"
    assert (await get_room(client, bob, room["id"]))["name"] == "alice"
    listed = (await client.get("/rooms?joined=true", token=alice)).json["rooms"]
    assert [(r["id"], r["name"]) for r in listed] == [(room["id"], "bob")]
    members = (await client.get(f"/rooms/{room['id']}/members", token=alice)).json["members"]
    assert sorted((m["user"]["id"], m["role"]) for m in members) == [
        (alice_user["id"], "member"), (bob_user["id"], "member")]
    other = await direct(client, carol, alice_user["id"])  # another pair, another room
    assert other.status == 201 and other.json["room"]["id"] != room["id"]
    # Nobody else gets in; nobody moderates it.
    rid = room["id"]
    assert_error(await client.get(f"/rooms/{rid}", token=carol), 404, "not_found")
    assert_error(await client.post(f"/rooms/{rid}/join", token=carol), 404, "not_found")
    seen = (await client.get("/rooms", token=carol)).json["rooms"]
    assert [r["id"] for r in seen] == [other.json["room"]["id"]]
    for method, path, body in [
        ("POST", f"/rooms/{rid}/invites", {"user_id": carol_user["id"]}),
        ("POST", f"/rooms/{rid}/kick", {"user_id": bob_user["id"]}),
        ("POST", f"/rooms/{rid}/bans", {"user_id": bob_user["id"]}),
        ("POST", f"/rooms/{rid}/bans", {"user_id": carol_user["id"]}),
        ("PUT", f"/rooms/{rid}/members/{bob_user['id']}/role", {"role": "moderator"}),
        ("PATCH", f"/rooms/{rid}", {"name": "ours"}),
    ]:
        assert_error(await client.request(method, path, body, token=alice), 403, "forbidden")
    assert_error(await direct(client, alice, alice_user["id"]), 422, "validation_failed", "user_id")
    assert_error(await direct(client, alice, 999), 404, "not_found")


@pytest.mark.workers
async def test_leaving_then_opening_again_brings_both_back(client: HTTPClient) -> None:
    alice, alice_user = await register_and_login(client, "alice")
    bob, bob_user = await register_and_login(client, "bob")
    rid = (await direct(client, alice, bob_user["id"])).json["room"]["id"]
    await send(client, alice, rid, "hi bob")
    for token in (alice, bob):
        assert (await client.post(f"/rooms/{rid}/leave", token=token)).status == 204
        assert_error(await client.get(f"/rooms/{rid}", token=token), 404, "not_found")
        assert_error(await client.post(f"/rooms/{rid}/join", token=token), 404, "not_found")
    back = await direct(client, bob, alice_user["id"])
    assert back.status == 200 and back.json["room"]["id"] == rid and back.json["room"]["member_count"] == 2
    timeline = await all_messages(client, alice, rid)
    assert [(m["kind"], m["text"]) for m in timeline] == [
        ("text", "hi bob"), ("leave", "alice left"), ("leave", "bob left"), ("join", "bob joined"),
        ("join", "alice joined")]


@pytest.mark.workers
async def test_racing_opens_from_both_sides_make_one_room(app: Served) -> None:
    setup = HTTPClient(app.port)
    alice, alice_user = await register_and_login(setup, "alice")
    bob, bob_user = await register_and_login(setup, "bob")
    await setup.aclose()
    replies: list[Reply] = []

    async def open_it(token: str, other: int) -> None:
        c = HTTPClient(app.port)
        replies.append(await direct(c, token, other))
        await c.aclose()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(open_it, alice, bob_user["id"])
                nursery.start_soon(open_it, bob, alice_user["id"])
    assert sorted(r.status for r in replies) == [200] * 15 + [201]
    assert len({r.json["room"]["id"] for r in replies}) == 1
    assert {r.json["room"]["name"] for r in replies} == {"alice", "bob"}
    assert {r.json["room"]["member_count"] for r in replies} == {2}
