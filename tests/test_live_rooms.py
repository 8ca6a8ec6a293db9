"""The v2 websocket frames (docs/API.md, "Websocket additions"): `room` frames to whoever can see
the room, `invite` frames to the invitee, `presence` frames to a room's subscribers when a
member's first websocket opens or last one closes; nothing about a private room reaches anyone
outside it. Each test reads every frame (`WS.side`), so a frame that should not come is seen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.client import HTTPClient
from tests.helpers import Served, as_non_member, join, make_room, register_and_login
from tests.ws_client import WS, connect

JSON = dict[str, Any]


@asynccontextmanager
async def watching(port: int, token: str) -> AsyncIterator[WS]:
    """A websocket that sees every frame, the side frames included."""
    async with connect(port, token) as ws:
        ws.side = True
        yield ws


async def quiet(ws: WS) -> None:
    """Nothing but the pong of a ping: no frame was queued for this socket before it."""
    await ws.send({"type": "ping"})
    assert await ws.recv() == {"type": "pong"}


@pytest.mark.workers
async def test_room_frames_reach_whoever_can_see_the_room(app: Served, client: HTTPClient) -> None:
    alice, alice_user = await register_and_login(client, "alice")
    bob, bob_user = await register_and_login(client, "bob")
    carol, _ = await register_and_login(client, "carol")
    async with watching(app.port, alice) as a, watching(app.port, bob) as b, watching(app.port, carol) as c:
        public = await make_room(client, alice, "lobby")
        frame = await a.expect("room")
        assert frame == {"type": "room", "event": "created", "room": public}  # with alice's role
        seen = as_non_member(public)
        for ws in (b, c):
            assert await ws.expect("room") == {"type": "room", "event": "created", "room": seen}
        secret = (await client.post("/rooms", {"name": "secret", "visibility": "private"}, token=alice)).json
        assert (await a.expect("room"))["room"] == secret["room"]
        renamed = await client.request("PATCH", f"/rooms/{public['id']}", {"topic": "tea"}, token=alice)
        assert renamed.status == 200
        for ws in (a, b, c):  # the room_updated entry goes to subscribers only: none here
            frame = await ws.expect("room")
            assert (frame["event"], frame["room"]["topic"]) == ("updated", "tea")
        changed = await client.request("PATCH", f"/rooms/{secret['room']['id']}", {"topic": "hush"},
                                       token=alice)
        assert changed.status == 200
        assert (await a.expect("room"))["room"]["topic"] == "hush"
        # An invite: to the invitee only, with the room as they see it.
        invited = await client.post(f"/rooms/{secret['room']['id']}/invites", {"user_id": bob_user["id"]},
                                    token=alice)
        assert invited.status == 201
        invite = (await b.expect("invite"))["invite"]
        assert {k: v for k, v in invite.items() if k != "room"} == invited.json["invite"]
        assert invite["room"] == {**as_non_member(secret["room"]),
                                  "topic": "hush", "last_seq": 1}  # not a member: no role
        # Joining a private room makes it appear on the joiner's other sockets.
        await join(client, bob, secret["room"]["id"])
        frame = await b.expect("room")
        assert (frame["event"], frame["room"]["my_role"]) == ("updated", "member")
        # A direct room: created, for the two of them, each with their own name for it.
        opened = await client.post("/direct", {"user_id": bob_user["id"]}, token=alice)
        assert (await a.expect("room"))["room"]["name"] == "bob"
        frame = await b.expect("room")
        assert (frame["event"], frame["room"]["id"], frame["room"]["name"]) == (
            "created", opened.json["room"]["id"], "alice")
        for ws in (a, b, c):
            await quiet(ws)
        assert alice_user["id"] != bob_user["id"]


@pytest.mark.workers
async def test_presence_on_first_open_and_last_close(app: Served, client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    bob, bob_user = await register_and_login(client, "bob")
    carol, _ = await register_and_login(client, "carol")
    rid = (await make_room(client, alice, "lobby"))["id"]
    await join(client, bob, rid)
    elsewhere = (await make_room(client, carol, "elsewhere"))["id"]
    online = {"type": "presence", "room_id": rid, "user": {"id": bob_user["id"], "username": "bob"},
              "online": True}
    async with watching(app.port, alice) as a, watching(app.port, carol) as c:
        await a.subscribe(rid)
        await c.subscribe(elsewhere)
        async with watching(app.port, bob) as first:
            assert await a.expect("presence") == online
            async with watching(app.port, bob):
                await quiet(a)  # a second socket changes nothing
            await quiet(a)
            await quiet(first)
        assert await a.expect("presence") == {**online, "online": False}
        await quiet(a)
        await quiet(c)  # not a subscriber of bob's room


@pytest.mark.workers
async def test_nothing_of_a_private_room_reaches_outsiders(app: Served, client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    bob, _ = await register_and_login(client, "bob")
    eve, _ = await register_and_login(client, "eve")
    made = await client.post("/rooms", {"name": "secret", "visibility": "private"}, token=alice)
    rid = made.json["room"]["id"]
    async with watching(app.port, eve) as e:
        for kind in ("subscribe", "typing", "send"):  # as for a room that does not exist
            frame: JSON = {"type": kind, "room_id": rid, "ref": 1}
            if kind == "send":
                frame["text"] = "hi"
            await e.send(frame)
            error = await e.expect("error")
            assert (error["code"], error["message"]) == ("not_found", "no such room")
        async with watching(app.port, alice) as a:
            await a.subscribe(rid)
            await a.send({"type": "typing", "room_id": rid})
            await client.request("PATCH", f"/rooms/{rid}", {"topic": "hush"}, token=alice)
            assert (await a.expect("room"))["event"] == "updated"
            assert (await a.expect("message"))["message"]["kind"] == "room_updated"
            async with watching(app.port, bob):
                pass
            await quiet(a)
        await quiet(e)
