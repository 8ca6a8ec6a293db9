"""Read markers and unread counts over real HTTP and websockets: PUT /rooms/{id}/read moves the
caller's marker forward only (clamped to last_seq), room objects seen by a member carry
`read_seq` and `unread`, sending moves the sender's marker, and the caller's websockets get a
`read` frame through the change feed (so it holds with --workers too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.client import HTTPClient
from tests.helpers import (
    MEMBER_ROOM_KEYS,
    ROOM_KEYS,
    Served,
    assert_error,
    get_room,
    join,
    make_config,
    make_room,
    register_and_login,
    send,
    serve,
)
from tests.ws_client import connect


async def mark(client: HTTPClient, token: str, room_id: int, seq: Any) -> int:
    reply = await client.put(f"/rooms/{room_id}/read", {"seq": seq}, token=token)
    assert reply.status == 200, reply.body
    assert set(reply.json) == {"read_seq"}
    read_seq: int = reply.json["read_seq"]
    return read_seq


async def marker(client: HTTPClient, token: str, room_id: int) -> tuple[int, int]:
    room = await get_room(client, token, room_id)
    assert set(room) == MEMBER_ROOM_KEYS, room
    return room["read_seq"], room["unread"]


@pytest.mark.workers
async def test_unread_counts_what_others_sent_past_the_marker(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    bob, _ = await register_and_login(client, "bob")
    room = await make_room(client, alice, "lobby")
    assert (room["read_seq"], room["unread"]) == (0, 0)
    await join(client, bob, room["id"])  # seq 1: bob's join entry, his own: his marker is there
    for n in range(3):  # seqs 2, 3, 4
        assert (await send(client, alice, room["id"], f"hello {n}")).status == 201
    assert await marker(client, bob, room["id"]) == (1, 3)
    assert await marker(client, alice, room["id"]) == (4, 0)  # sending moved alice's marker

    assert await mark(client, bob, room["id"], 3) == 3
    assert await marker(client, bob, room["id"]) == (3, 1)
    assert await mark(client, bob, room["id"], 2) == 3  # backwards: ignored, not an error
    assert await mark(client, bob, room["id"], 0) == 3
    assert await mark(client, bob, room["id"], 10**9) == 4  # clamped to last_seq
    assert await marker(client, bob, room["id"]) == (4, 0)

    # Bob's own messages never count; his send moves his marker past alice's too.
    assert (await send(client, alice, room["id"], "four")).status == 201
    assert await marker(client, bob, room["id"]) == (4, 1)
    assert (await send(client, bob, room["id"], "five")).status == 201
    assert await marker(client, bob, room["id"]) == (6, 0)
    assert await marker(client, alice, room["id"]) == (5, 1)

    listed = (await client.get("/rooms?joined=true", token=alice)).json["rooms"]
    assert [(r["read_seq"], r["unread"]) for r in listed] == [(5, 1)]
    # Room events are not unread: bob leaving (an entry of his) changes nothing for alice.
    assert (await client.post(f"/rooms/{room['id']}/leave", token=bob)).status == 204
    assert await marker(client, alice, room["id"]) == (5, 1)


@pytest.mark.workers
async def test_only_members_have_a_marker(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    carol, _ = await register_and_login(client, "carol")
    room = await make_room(client, alice, "lobby")
    assert (await send(client, alice, room["id"], "hi")).status == 201
    seen = await get_room(client, carol, room["id"])
    assert set(seen) == ROOM_KEYS  # not a member: no marker, no count
    everyone = (await client.get("/rooms", token=carol)).json["rooms"]
    assert [set(r) for r in everyone] == [ROOM_KEYS]
    assert_error(await client.put(f"/rooms/{room['id']}/read", {"seq": 1}, token=carol), 403, "forbidden")
    assert_error(await client.put(f"/rooms/{room['id'] + 1}/read", {"seq": 1}, token=carol), 404, "not_found")
    assert_error(await client.put(f"/rooms/{room['id']}/read", {"seq": 1}), 401, "unauthorized")
    # A new member has read what came before they joined, up to their join entry (seq 2).
    joined = await join(client, carol, room["id"])
    assert (joined["read_seq"], joined["unread"]) == (2, 0)
    assert (await send(client, alice, room["id"], "again")).status == 201
    assert await marker(client, carol, room["id"]) == (2, 1)
    assert (await client.post(f"/rooms/{room['id']}/leave", token=carol)).status == 204
    assert (await send(client, alice, room["id"], "and again")).status == 201
    assert (await join(client, carol, room["id"]))["unread"] == 0  # leaving forgot the marker


async def test_read_marker_bodies_are_validated(client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    room = await make_room(client, alice, "lobby")
    path = f"/rooms/{room['id']}/read"
    for body in ({}, {"seq": -1}, {"seq": "1"}, {"seq": 1.5}, {"seq": True}, {"seq": 2**63}):
        assert_error(await client.put(path, body, token=alice), 422, "validation_failed", "seq")
    reply = await client.put(path, {"seq": 1, "extra": 1}, token=alice)
    assert_error(reply, 422, "validation_failed", "extra")


@pytest.mark.workers
async def test_the_callers_websockets_get_a_read_frame(app: Served, client: HTTPClient) -> None:
    alice, _ = await register_and_login(client, "alice")
    bob, _ = await register_and_login(client, "bob")
    room = await make_room(client, alice, "lobby")
    other = await make_room(client, alice, "other")
    await join(client, bob, room["id"])
    for n in range(4):
        assert (await send(client, alice, room["id"], f"m{n}")).status == 201
    async with connect(app.port, bob) as phone, connect(app.port, bob) as laptop, \
            connect(app.port, alice) as alices:
        # No subscription needed: the frame is about the user, so a room list's badge clears.
        assert await mark(client, bob, room["id"], 3) == 3
        for ws in (phone, laptop):
            assert await ws.expect("read") == {"type": "read", "room_id": room["id"], "read_seq": 3}
        assert await mark(client, bob, room["id"], 2) == 3  # nothing moved: no frame
        assert await mark(client, alice, other["id"], 0) == 0
        for ws in (phone, laptop, alices):
            await ws.barrier()  # the pong comes first: no other frame was queued


async def test_markers_and_counts_survive_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with trio.fail_after(30):
        async with serve(config) as app:
            client = HTTPClient(app.port)
            alice, _ = await register_and_login(client, "alice")
            bob, _ = await register_and_login(client, "bob")
            room = await make_room(client, alice, "lobby")
            await join(client, bob, room["id"])
            for n in range(5):
                await send(client, alice, room["id"], f"m{n}")
            await mark(client, bob, room["id"], 2)
            before = (await marker(client, bob, room["id"]), await marker(client, alice, room["id"]))
            await client.aclose()
        async with serve(config) as app:
            client = HTTPClient(app.port)
            after = (await marker(client, bob, room["id"]), await marker(client, alice, room["id"]))
            await client.aclose()
    assert before == after == ((2, 4), (6, 0))  # seq 1 is bob's join entry
