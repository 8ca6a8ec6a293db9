"""Many clients sending at once: every acknowledged message is stored once, seqs are dense per
room, and all of it survives a restart on the same database file, after which seqs and ids go on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.client import HTTPClient
from tests.helpers import (
    all_messages,
    assert_dense,
    assert_message_shape,
    get_room,
    make_config,
    seed_rooms,
    send,
    serve,
)

CLIENTS = 50
SENDS = 100
ROOMS = 5


def check_room(messages: list[dict[str, Any]], last_seq: int, acked: dict[int, dict[str, Any]]) -> None:
    """Dense seqs 1..last_seq, and every acknowledged message of the room present unchanged."""
    assert_dense(messages, last_seq)
    stored = {m["id"]: m for m in messages}
    for msg_id, message in acked.items():
        assert stored.get(msg_id) == message


async def test_many_clients_then_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path, send_rate=0, register_limit=0, login_rate=0)  # 50 users from one address
    acked: list[dict[int, dict[str, Any]]] = [{} for _ in range(ROOMS)]  # per room: id → message
    async with serve(config) as app:
        setup = HTTPClient(app.port)
        owner, rooms, tokens = await seed_rooms(setup, ROOMS, CLIENTS)

        async def client(n: int) -> None:
            c = HTTPClient(app.port, tokens[n])
            last_seq_seen = [0] * ROOMS
            for i in range(SENDS):
                r = (n + i) % ROOMS
                reply = await send(c, tokens[n], rooms[r], f"client {n} message {i}", f"{n}:{i}")
                assert reply.status == 201, reply.body
                message = reply.json["message"]
                assert_message_shape(message)
                assert message["room_id"] == rooms[r] and message["text"] == f"client {n} message {i}"
                # One client's sends are sequential, so their seqs increase within a room.
                assert message["seq"] > last_seq_seen[r]
                last_seq_seen[r] = message["seq"]
                acked[r][message["id"]] = message
            await c.aclose()

        async with trio.open_nursery() as nursery:
            for n in range(CLIENTS):
                nursery.start_soon(client, n)

        assert sum(len(a) for a in acked) == CLIENTS * SENDS
        last_seqs = []
        for r, rid in enumerate(rooms):
            last_seq = (await get_room(setup, owner, rid))["last_seq"]
            assert last_seq - CLIENTS == len(acked[r]) == CLIENTS * SENDS // ROOMS  # and a join each
            check_room(await all_messages(setup, owner, rid), last_seq, acked[r])
            last_seqs.append(last_seq)
        old_ids = {msg_id for a in acked for msg_id in a}
        assert len(old_ids) == CLIENTS * SENDS
        await setup.aclose()

    # A second server on the same file: everything is still there, read back from disk.
    async with serve(config) as app:
        c = HTTPClient(app.port)
        listed = (await c.get("/rooms", token=owner)).json["rooms"]
        assert [room["last_seq"] for room in listed] == last_seqs
        for r, rid in enumerate(rooms):
            check_room(await all_messages(c, owner, rid), last_seqs[r], acked[r])
        # Sending goes on densely: seqs continue after the old last_seq, ids are never reused.
        new: list[dict[str, Any]] = []
        for i in range(3):
            for rid in rooms:
                reply = await send(c, tokens[i], rid, f"after restart {i}")
                assert reply.status == 201
                new.append(reply.json["message"])
        for r, rid in enumerate(rooms):
            mine = [m for m in new if m["room_id"] == rid]
            assert [m["seq"] for m in mine] == [last_seqs[r] + 1, last_seqs[r] + 2, last_seqs[r] + 3]
            check_room(await all_messages(c, owner, rid), last_seqs[r] + 3,
                       {**acked[r], **{m["id"]: m for m in mine}})
        assert min(m["id"] for m in new) > max(old_ids)
        # A retried txn_id from before the restart is still recognised.
        again = await send(c, tokens[0], rooms[0], "client 0 message 0", "0:0")
        assert again.status == 200 and again.json["message"] in acked[0].values()
        await c.aclose()
