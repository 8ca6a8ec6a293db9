"""Private rooms, invites, roles, kicks, bans and room changes (docs/API.md, v2 "Room visibility,
direct rooms, roles"), and the timeline entries they add ("Timeline entries")."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.client import HTTPClient, Reply
from tests.helpers import (
    Served,
    all_messages,
    assert_error,
    get_room,
    history,
    join,
    make_room,
    register_and_login,
    send,
)
from tests.ws_client import connect

JSON = dict[str, Any]


async def people(client: HTTPClient, *names: str) -> dict[str, tuple[str, JSON]]:
    return {name: await register_and_login(client, name) for name in names}


async def private_room(client: HTTPClient, token: str, name: str = "secret") -> JSON:
    reply = await client.post("/rooms", {"name": name, "visibility": "private"}, token=token)
    assert reply.status == 201, reply.body
    room: JSON = reply.json["room"]
    return room


async def act(client: HTTPClient, method: str, path: str, token: str, body: Any = None) -> Reply:
    return await client.request(method, path, body, token=token)


def entries(messages: list[JSON]) -> list[tuple[str, str]]:
    """(kind, text) of each timeline entry."""
    return [(m["kind"], m["text"]) for m in messages]


@pytest.mark.workers
async def test_a_private_room_does_not_exist_for_outsiders(client: HTTPClient) -> None:
    who = await people(client, "alice", "eve")
    alice, eve = who["alice"][0], who["eve"][0]
    room = await private_room(client, alice)
    assert (room["visibility"], room["kind"], room["my_role"]) == ("private", "room", "owner")
    rid = room["id"]
    await send(client, alice, rid, "for members only")
    assert [r["id"] for r in (await client.get("/rooms", token=eve)).json["rooms"]] == []
    assert [r["id"] for r in (await client.get("/rooms", token=alice)).json["rooms"]] == [rid]
    for method, path, body in [
        ("GET", f"/rooms/{rid}", None), ("POST", f"/rooms/{rid}/join", None),
        ("POST", f"/rooms/{rid}/leave", None), ("GET", f"/rooms/{rid}/members", None),
        ("GET", f"/rooms/{rid}/messages", None), ("POST", f"/rooms/{rid}/messages", {"text": "hi"}),
        ("GET", f"/rooms/{rid}/messages?after=0&wait=5", None), ("PATCH", f"/rooms/{rid}", {"topic": "x"}),
        ("POST", f"/rooms/{rid}/invites", {"user_id": who["eve"][1]["id"]}),
        ("GET", f"/rooms/{rid}/bans", None), ("POST", f"/rooms/{rid}/kick", {"user_id": 1}),
    ]:
        with trio.fail_after(3):  # the long-poll too: refused before it waits
            reply = await act(client, method, path, eve, body)
        # Exactly what a room that does not exist answers.
        missing = await act(client, method, path.replace(f"/rooms/{rid}", "/rooms/999"), eve, body)
        assert (reply.status, reply.json) == (missing.status, missing.json) == (
            404, {"error": {"code": "not_found", "message": "no such room"}}), (method, path)
    # A private room's name takes nothing: a public room of the same name can be made.
    assert (await make_room(client, eve, "SECRET"))["name"] == "SECRET"
    assert (await private_room(client, eve, "secret"))["id"] != rid


@pytest.mark.workers
async def test_an_invite_shows_the_room_until_it_is_used_or_declined(client: HTTPClient) -> None:
    who = await people(client, "alice", "bob", "carol")
    (alice, _), (bob, bob_user), (carol, carol_user) = who["alice"], who["bob"], who["carol"]
    rid = (await private_room(client, alice))["id"]
    reply = await act(client, "POST", f"/rooms/{rid}/invites", alice, {"user_id": bob_user["id"]})
    assert reply.status == 201, reply.body
    invite = reply.json["invite"]
    assert invite["room_id"] == rid and invite["user"] == bob_user
    assert invite["invited_by"]["username"] == "alice" and set(invite) == {"room_id", "user", "invited_by",
                                                                          "created_at"}
    again = await act(client, "POST", f"/rooms/{rid}/invites", alice, {"user_id": bob_user["id"]})
    assert (again.status, again.json["invite"]) == (201, invite)  # idempotent
    listed = (await client.get("/invites", token=bob)).json["invites"]
    assert [(i["room_id"], i["room"]["name"]) for i in listed] == [(rid, "secret")]
    assert "my_role" not in listed[0]["room"]  # not a member yet
    assert (await get_room(client, bob, rid))["id"] == rid  # visible to the invitee
    assert [r["id"] for r in (await client.get("/rooms", token=bob)).json["rooms"]] == [rid]
    assert_error(await history(client, bob, rid), 403, "forbidden")  # but not readable yet
    joined = await join(client, bob, rid)
    assert joined["my_role"] == "member" and joined["member_count"] == 2
    assert (await client.get("/invites", token=bob)).json["invites"] == []  # consumed
    assert entries(await all_messages(client, bob, rid)) == [("join", "bob joined")]
    # Declined: the room is gone for carol again.
    await act(client, "POST", f"/rooms/{rid}/invites", alice, {"user_id": carol_user["id"]})
    assert (await act(client, "DELETE", f"/rooms/{rid}/invites/{carol_user['id']}", carol)).status == 204
    assert_error(await client.get(f"/rooms/{rid}", token=carol), 404, "not_found")
    assert_error(await client.post(f"/rooms/{rid}/join", token=carol), 404, "not_found")
    # Withdrawn by a moderator: the same.
    await act(client, "POST", f"/rooms/{rid}/invites", alice, {"user_id": carol_user["id"]})
    assert (await act(client, "DELETE", f"/rooms/{rid}/invites/{carol_user['id']}", alice)).status == 204
    assert (await client.get("/invites", token=carol)).json["invites"] == []
    assert_error(await act(client, "POST", f"/rooms/{rid}/invites", alice, {"user_id": bob_user["id"]}),
                 409, "already_member")
    assert_error(await act(client, "POST", f"/rooms/{rid}/invites", bob, {"user_id": carol_user["id"]}),
                 403, "forbidden")  # a member may not invite


@pytest.mark.workers
async def test_roles_decide_who_may_act_on_whom(client: HTTPClient) -> None:
    who = await people(client, "owner", "mod", "mod2", "member", "member2")
    tokens = {name: token for name, (token, _) in who.items()}
    ids = {name: user["id"] for name, (_, user) in who.items()}
    rid = (await make_room(client, tokens["owner"], "lobby"))["id"]
    for name in ("mod", "mod2", "member", "member2"):
        await join(client, tokens[name], rid)

    async def role(actor: str, target: str, value: str) -> Reply:
        return await act(client, "PUT", f"/rooms/{rid}/members/{ids[target]}/role", tokens[actor],
                         {"role": value})

    for name in ("mod", "mod2"):
        reply = await role("owner", name, "moderator")
        assert reply.status == 200 and reply.json["member"]["role"] == "moderator", reply.body
        assert reply.json["member"]["user"]["id"] == ids[name]
    assert_error(await role("mod", "member", "moderator"), 403, "forbidden")  # only the owner
    assert_error(await role("owner", "owner", "member"), 403, "forbidden")  # not on oneself

    async def kick(actor: str, target: str) -> Reply:
        return await act(client, "POST", f"/rooms/{rid}/kick", tokens[actor], {"user_id": ids[target]})

    assert_error(await kick("member", "member2"), 403, "forbidden")  # a member moderates no one
    assert_error(await kick("mod", "mod2"), 403, "forbidden")  # an equal role
    assert_error(await kick("mod", "owner"), 403, "forbidden")  # a higher one
    assert_error(await kick("mod", "mod"), 403, "forbidden")  # oneself
    assert_error(await act(client, "PATCH", f"/rooms/{rid}", tokens["member"], {"topic": "x"}), 403,
                 "forbidden")
    assert_error(await act(client, "GET", f"/rooms/{rid}/bans", tokens["member"]), 403, "forbidden")
    assert (await kick("mod", "member")).status == 204
    assert (await kick("owner", "mod2")).status == 204
    # Handing the room over: exactly one owner, the old one a moderator.
    assert (await role("owner", "mod", "owner")).json["member"]["role"] == "owner"
    members = (await client.get(f"/rooms/{rid}/members", token=tokens["owner"])).json["members"]
    assert {m["user"]["username"]: m["role"] for m in members} == {
        "owner": "moderator", "mod": "owner", "member2": "member"}
    assert (await get_room(client, tokens["owner"], rid))["my_role"] == "moderator"
    assert_error(await role("owner", "member2", "moderator"), 403, "forbidden")  # no longer the owner
    assert (await kick("mod", "owner")).status == 204  # the new owner over a moderator


@pytest.mark.workers
async def test_an_owner_who_leaves_hands_the_room_on(client: HTTPClient) -> None:
    who = await people(client, "owner", "early", "mod")
    tokens = {name: token for name, (token, _) in who.items()}
    rid = (await make_room(client, tokens["owner"], "lobby"))["id"]
    for name in ("early", "mod"):
        await join(client, tokens[name], rid)
    mod_id = who["mod"][1]["id"]
    await act(client, "PUT", f"/rooms/{rid}/members/{mod_id}/role", tokens["owner"], {"role": "moderator"})
    assert (await client.post(f"/rooms/{rid}/leave", token=tokens["owner"])).status == 204
    members = (await client.get(f"/rooms/{rid}/members", token=tokens["mod"])).json["members"]
    assert {m["user"]["username"]: m["role"] for m in members} == {"early": "member", "mod": "owner"}


@pytest.mark.workers
async def test_a_kick_takes_effect_at_commit_everywhere(app: Served, client: HTTPClient) -> None:
    who = await people(client, "alice", "bob")
    (alice, _), (bob, bob_user) = who["alice"], who["bob"]
    for visibility, refused in (("public", (403, "forbidden")), ("private", (404, "not_found"))):
        reply = await client.post("/rooms", {"name": f"room {visibility}", "visibility": visibility},
                                  token=alice)
        rid = reply.json["room"]["id"]
        await act(client, "POST", f"/rooms/{rid}/invites", alice, {"user_id": bob_user["id"]})
        await join(client, bob, rid)
        last = (await get_room(client, bob, rid))["last_seq"]
        poller = HTTPClient(app.port, bob)
        polled: list[Reply] = []

        async def poll(rid: int = rid, last: int = last, poller: HTTPClient = poller,
                       polled: list[Reply] = polled) -> None:
            polled.append(await history(poller, bob, rid, after=last, wait=20))

        async with connect(app.port, bob) as ws:
            await ws.subscribe(rid)
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(poll)
                    await trio.sleep(0.2)  # the poll is held
                    kicked = await act(client, "POST", f"/rooms/{rid}/kick", alice,
                                       {"user_id": bob_user["id"], "reason": "spam"})
                    assert kicked.status == 204, kicked.body
                entry = (await ws.expect("message"))["message"]  # bob sees why, then the end
                assert (entry["kind"], entry["text"]) == ("kick", "alice kicked bob: spam")
                assert entry["subject"] == {"id": bob_user["id"], "username": "bob"}
                assert entry["author"]["username"] == "alice" and entry["seq"] == last + 1
                assert await ws.expect("unsubscribed") == {"type": "unsubscribed", "room_id": rid,
                                                           "reason": "kicked"}
                await ws.barrier()
        assert_error(polled[0], *refused)
        assert b"spam" not in polled[0].body
        assert_error(await send(client, bob, rid, "still here?"), *refused)
        assert_error(await history(client, bob, rid), *refused)
        await poller.aclose()
    # A kick is no ban: the public room can be joined again at once.
    assert (await join(client, bob, rid - 1))["my_role"] == "member"


@pytest.mark.workers
async def test_a_ban_blocks_joining_and_invites_until_lifted(app: Served, client: HTTPClient) -> None:
    who = await people(client, "alice", "bob", "carol")
    (alice, alice_user), (bob, bob_user), (carol, carol_user) = who["alice"], who["bob"], who["carol"]
    rid = (await make_room(client, alice, "lobby"))["id"]
    await join(client, bob, rid)
    await act(client, "POST", f"/rooms/{rid}/invites", alice, {"user_id": carol_user["id"]})
    async with connect(app.port, bob) as ws:
        await ws.subscribe(rid)
        banned = await act(client, "POST", f"/rooms/{rid}/bans", alice, {"user_id": bob_user["id"]})
        assert banned.status == 204, banned.body
        assert (await ws.expect("message"))["message"]["kind"] == "ban"
        assert (await ws.expect("unsubscribed"))["reason"] == "banned"
    # A non-member can be banned too, and their pending invite goes.
    assert (await act(client, "POST", f"/rooms/{rid}/bans", alice,
                      {"user_id": carol_user["id"], "reason": "no"})).status == 204
    assert (await client.get("/invites", token=carol)).json["invites"] == []
    again = await act(client, "POST", f"/rooms/{rid}/bans", alice, {"user_id": bob_user["id"]})
    assert again.status == 204  # idempotent: no second entry
    for token in (bob, carol):
        assert_error(await client.post(f"/rooms/{rid}/join", token=token), 403, "banned")
    assert_error(await act(client, "POST", f"/rooms/{rid}/invites", alice, {"user_id": bob_user["id"]}),
                 403, "banned")
    bans = (await act(client, "GET", f"/rooms/{rid}/bans", alice)).json["bans"]
    assert [(b["user"]["id"], b["banned_by"]["id"], b["reason"]) for b in bans] == [
        (bob_user["id"], alice_user["id"], None), (carol_user["id"], alice_user["id"], "no")]
    assert entries(await all_messages(client, alice, rid)) == [
        ("join", "bob joined"), ("ban", "alice banned bob"), ("ban", "alice banned carol: no")]
    assert (await act(client, "DELETE", f"/rooms/{rid}/bans/{bob_user['id']}", alice)).status == 204
    assert (await act(client, "DELETE", f"/rooms/{rid}/bans/{bob_user['id']}", alice)).status == 204
    assert (await join(client, bob, rid))["member_count"] == 2
    bans = (await act(client, "GET", f"/rooms/{rid}/bans", alice)).json["bans"]
    assert [b["user"]["id"] for b in bans] == [carol_user["id"]]


@pytest.mark.workers
async def test_membership_changes_are_dense_timeline_entries(app: Served, client: HTTPClient) -> None:
    who = await people(client, "alice", "bob")
    (alice, _), (bob, bob_user) = who["alice"], who["bob"]
    room = await make_room(client, alice, "lobby")
    rid = room["id"]
    assert room["last_seq"] == 0  # creating a room adds no entry
    for _ in range(2):  # a repeated join or leave changes nothing and adds nothing
        await join(client, bob, rid)
    await send(client, bob, rid, "hello")
    for _ in range(2):
        assert (await client.post(f"/rooms/{rid}/leave", token=bob)).status == 204
    await join(client, bob, rid)
    for _ in range(2):
        patched = await act(client, "PATCH", f"/rooms/{rid}", alice,
                            {"name": "Lounge", "topic": "", "visibility": "public"})
        assert patched.status == 200 and patched.json["room"]["name"] == "Lounge", patched.body
    await act(client, "PATCH", f"/rooms/{rid}", alice, {"topic": "tea", "visibility": "private"})
    await act(client, "POST", f"/rooms/{rid}/kick", alice, {"user_id": bob_user["id"]})
    timeline = await all_messages(client, alice, rid)
    assert [m["seq"] for m in timeline] == list(range(1, 8))
    assert entries(timeline) == [
        ("join", "bob joined"), ("text", "hello"), ("leave", "bob left"), ("join", "bob joined"),
        ("room_updated", "alice renamed the room to \u201cLounge\u201d"),
        ("room_updated", "alice changed the topic to \u201ctea\u201d and made the room private"),
        ("kick", "alice kicked bob")]
    events = [m for m in timeline if m["kind"] != "text"]
    for m in events:
        assert set(m) == {"id", "room_id", "seq", "author", "text", "created_at", "txn_id", "kind", "subject",
                          *(("changes",) if m["kind"] == "room_updated" else ())}, m
        assert m["txn_id"] is None
    assert [m["subject"] for m in events] == [{"id": bob_user["id"], "username": "bob"}] * 3 + [None] * 2 + [
        {"id": bob_user["id"], "username": "bob"}]
    assert [m["changes"] for m in events if m["kind"] == "room_updated"] == [
        {"name": "Lounge"}, {"topic": "tea", "visibility": "private"}]
    assert timeline[1]["edited_at"] is None and timeline[1]["deleted"] is False
    # Paging and resuming deliver them like messages.
    assert entries((await history(client, alice, rid, before=4, limit=2)).json["messages"]) == [
        ("text", "hello"), ("leave", "bob left")]
    async with connect(app.port, alice) as ws:
        await ws.subscribe(rid, after=4)
        assert [m["seq"] for m in await ws.messages_until(7)] == [5, 6, 7]


@pytest.mark.workers
async def test_changing_a_room(client: HTTPClient) -> None:
    who = await people(client, "alice", "bob")
    alice, bob = who["alice"][0], who["bob"][0]
    rid = (await make_room(client, alice, "lobby"))["id"]
    await make_room(client, bob, "taken")
    secret = await private_room(client, bob, "lobby")  # a private room may share a name
    assert_error(await act(client, "PATCH", f"/rooms/{rid}", alice, {"name": "TAKEN"}), 409,
                 "room_name_taken")
    assert_error(await act(client, "PATCH", f"/rooms/{rid}", alice, {}), 422, "validation_failed", "name")
    assert_error(await act(client, "PATCH", f"/rooms/{rid}", alice, {"visibility": "hidden"}), 422,
                 "validation_failed", "visibility")
    assert_error(await act(client, "PATCH", f"/rooms/{secret['id']}", bob, {"visibility": "public"}), 409,
                 "room_name_taken")  # going public takes the name
    made = await act(client, "PATCH", f"/rooms/{rid}", alice, {"visibility": "private", "name": "Taken!"})
    assert made.status == 200 and made.json["room"]["visibility"] == "private"
    # Its old name is free now, and a private room's name was never taken.
    assert (await make_room(client, bob, "LOBBY "))["name"] == "LOBBY "
    assert_error(await client.get(f"/rooms/{rid}", token=bob), 404, "not_found")
