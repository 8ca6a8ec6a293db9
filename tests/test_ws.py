"""GET /ws against the real server over real websockets: every frame and close code of the
contract, presence, heartbeat, Origin, and the ordering guarantees (resume, replay racing live
sends, gap). Every wait is bounded; nothing asserts on timing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio.testing import MockClock
from trio_websocket import open_websocket_url

from chat_trio.app import App
from tests.client import HTTPClient
from tests.helpers import (
    Served,
    all_messages,
    assert_error,
    assert_message_shape,
    join,
    login,
    make_config,
    make_room,
    register_and_login,
    send,
    serve,
)
from tests.rawhttp import read_until_closed
from tests.ws_client import (
    DEADLINE,
    WS,
    client_frame,
    connect,
    open_slow,
    raw_handshake,
    server_frames,
)

JSON = dict[str, Any]


@pytest.fixture(autouse=True)
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A websocket session must end quietly: a handler failure ("handler failed", a 500 written
    onto an upgraded stream) fails the test even when the client saw the right close code."""
    caplog.set_level(logging.ERROR, logger="chat_trio")
    yield
    errors = [r for r in caplog.get_records("call") if r.name.startswith("chat_trio")
              and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# -- helpers -------------------------------------------------------------------------------------


async def room_with(client: HTTPClient, *names: str) -> tuple[JSON, list[tuple[str, JSON]]]:
    """Register and log in `names`; the first creates a room, the others join it."""
    people = [await register_and_login(client, name) for name in names]
    room = await make_room(client, people[0][0], "room-" + names[0])
    for token, _ in people[1:]:
        await join(client, token, room["id"])
    return room, people


async def online(client: HTTPClient, token: str, room_id: int) -> dict[int, bool]:
    reply = await client.get(f"/rooms/{room_id}/members", token=token)
    assert reply.status == 200, reply.body
    return {m["user"]["id"]: m["online"] for m in reply.json["members"]}


async def wait_online(client: HTTPClient, token: str, room_id: int, user_id: int, expected: bool) -> None:
    """Poll the members list until `user_id`'s `online` is `expected` (bounded)."""
    with trio.fail_after(DEADLINE):
        while (await online(client, token, room_id))[user_id] is not expected:
            await trio.sleep(0.01)


async def rest_send(client: HTTPClient, token: str, room_id: int, text: str) -> JSON:
    reply = await send(client, token, room_id, text)
    assert reply.status == 201, reply.body
    message: JSON = reply.json["message"]
    return message


async def fill_room(port: int, token: str, room_id: int, count: int, *, connections: int = 16) -> None:
    """`count` messages over REST from several concurrent connections (needs send_rate=0)."""
    todo = iter(range(count))

    async def worker() -> None:
        c = HTTPClient(port, token)
        try:
            for i in todo:
                await rest_send(c, token, room_id, f"fill {i}")
        finally:
            await c.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)


def seqs(messages: list[JSON]) -> list[int]:
    return [m["seq"] for m in messages]


# -- authentication and hello --------------------------------------------------------------------


@pytest.mark.workers
@pytest.mark.parametrize("auth", ["header", "frame"])
async def test_hello_after_auth(app: Served, client: HTTPClient, auth: str) -> None:
    token, user = await register_and_login(client, "alice")
    async with connect(app.port, token, auth=auth) as ws:
        assert ws.hello == {"type": "hello", "user": user, "heartbeat_s": app.config.heartbeat_s}
        await ws.barrier()


@pytest.mark.parametrize("auth", ["header", "frame"])
async def test_bad_token_closes_1008(app: App, client: HTTPClient, auth: str) -> None:
    token, _ = await register_and_login(client, "alice")
    assert (await client.post("/logout", token=token)).status == 204
    for bad in ("not-a-token", token):  # unknown, and revoked
        async with connect(app.port, bad, auth=auth, hello=False) as ws:
            assert await ws.closed() == (1008, [])


@pytest.mark.parametrize("first", [{"type": "ping"}, {"type": "auth"}, "not json"])
async def test_first_frame_not_auth_closes_1008(app: App, first: Any) -> None:
    async with connect(app.port, hello=False) as ws:
        await ws.send(first)
        assert await ws.closed() == (1008, [])


async def test_no_auth_frame_in_time_closes_1008(tmp_path: Path, autojump_clock: MockClock) -> None:
    """On virtual time: the server's deadline is on trio's clock and no thread is waited for."""
    async with serve(make_config(tmp_path, ws_auth_timeout=0.2)) as app, \
            connect(app.port, hello=False) as ws:
        assert await ws.closed() == (1008, [])


# -- frames --------------------------------------------------------------------------------------


@pytest.mark.workers
async def test_ping_pong(app: Served, client: HTTPClient) -> None:
    token, _ = await register_and_login(client, "alice")
    async with connect(app.port, token) as ws:
        await ws.send({"type": "ping"})
        assert await ws.recv() == {"type": "pong"}


@pytest.mark.workers
async def test_subscribe_and_unsubscribe(app: Served, client: HTTPClient) -> None:
    room, [(token, _)] = await room_with(client, "alice")
    rid = room["id"]
    for i in range(2):
        await rest_send(client, token, rid, f"old {i}")
    async with connect(app.port, token) as ws:
        await ws.send({"type": "subscribe", "room_id": rid})
        assert await ws.recv() == {"type": "subscribed", "room_id": rid, "last_seq": 2}
        await ws.barrier()  # no `after`: nothing is replayed
        sent = await rest_send(client, token, rid, "live")
        frame = await ws.expect("message")
        assert frame == {"type": "message", "message": sent}
        assert_message_shape(frame["message"])
        assert frame["message"]["seq"] == 3

        await ws.send({"type": "unsubscribe", "room_id": rid})
        assert await ws.recv() == {"type": "unsubscribed", "room_id": rid}
        await rest_send(client, token, rid, "unseen")
        await ws.barrier()  # the message published before the ping did not come

        assert (await ws.subscribe(rid, after=0))["last_seq"] == 4
        assert seqs(await ws.messages_until(4)) == [1, 2, 3, 4]
        await ws.barrier()


@pytest.mark.workers
async def test_send_ack_after_commit_and_txn_id(app: Served, client: HTTPClient) -> None:
    room, [(ta, alice), (tb, _)] = await room_with(client, "alice", "bobby")
    rid = room["id"]
    async with connect(app.port, ta) as a, connect(app.port, tb) as b:
        await b.subscribe(rid)
        await a.send({"type": "send", "room_id": rid, "text": "hi", "txn_id": "t1", "ref": "r1"})
        ack = await a.expect("ack")
        assert set(ack) == {"type", "ref", "message"} and ack["ref"] == "r1"
        message = ack["message"]
        assert_message_shape(message)
        assert (message["text"], message["txn_id"], message["seq"]) == ("hi", "t1", 2)  # 1: bobby's join
        assert message["author"] == {"id": alice["id"], "username": "alice"}
        # committed before the ack: history already has it
        assert (await all_messages(client, ta, rid))[1:] == [message]
        assert (await b.expect("message"))["message"] == message

        await a.send({"type": "send", "room_id": rid, "text": "hi", "txn_id": "t1", "ref": 7})
        again = await a.expect("ack")
        assert again == {"type": "ack", "ref": 7, "message": message}
        await b.barrier()  # the repeat published nothing
        assert (await all_messages(client, ta, rid))[1:] == [message]

        # REST with the same txn_id agrees
        reply = await send(client, ta, rid, "hi", txn_id="t1")
        assert reply.status == 200 and reply.json["message"] == message


@pytest.mark.workers
async def test_typing_reaches_others_not_sender(app: Served, client: HTTPClient) -> None:
    room, [(ta, alice), (tb, _)] = await room_with(client, "alice", "bobby")
    rid = room["id"]
    async with connect(app.port, ta) as a, connect(app.port, tb) as b:
        await a.subscribe(rid)
        await b.subscribe(rid)
        await a.send({"type": "typing", "room_id": rid})
        assert await b.recv() == {"type": "typing", "room_id": rid,
                                  "user": {"id": alice["id"], "username": "alice"}}
        await a.barrier()  # the sender got no typing frame


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ("not json", "invalid_json", None),
        ("[1, 2]", "invalid_json", None),
        (b'{"type": "ping"}', "bad_request", None),
        ({"type": "bogus"}, "bad_request", None),
        ({"no": "type"}, "bad_request", None),
        ({"type": "subscribe", "room_id": "one"}, "validation_failed", "room_id"),
        ({"type": "subscribe", "room_id": 1, "after": -1}, "validation_failed", "after"),
        ({"type": "subscribe", "room_id": 1, "color": "red"}, "validation_failed", "color"),
        ({"type": "subscribe", "room_id": 999}, "not_found", None),
        ({"type": "send", "room_id": 1, "text": "x" * 4001, "ref": "r9"}, "validation_failed", "text"),
        ({"type": "send", "room_id": 1, "text": "", "ref": 12}, "validation_failed", "text"),
        ({"type": "send", "room_id": 1, "text": "a\x00b", "ref": "nul"}, "validation_failed", "text"),
        ({"type": "send", "room_id": 1, "text": "ok", "txn_id": "t" * 65, "ref": "t"},
         "validation_failed", "txn_id"),
    ],
)
async def test_invalid_frame_gets_error_and_stays_open(
    app: App, client: HTTPClient, frame: Any, code: str, field: str | None
) -> None:
    room, [(token, _)] = await room_with(client, "alice")
    assert room["id"] == 1
    async with connect(app.port, token) as ws:
        await ws.subscribe(1)
        await ws.send(frame)
        error = await ws.expect("error")
        assert error["code"] == code and isinstance(error["message"], str) and error["message"]
        ref = frame.get("ref") if isinstance(frame, dict) else None
        assert set(error) == ({"type", "code", "message"} | ({"ref"} if ref is not None else set()))
        assert error.get("ref") == ref
        if field is not None:
            assert field in error["message"]
        await ws.barrier()  # still open, and nothing was posted
        await ws.send({"type": "send", "room_id": 1, "text": "after the error"})
        messages, acks = await collect(ws, 1, 1)
        assert seqs(messages) == seqs(acks) == [1]


@pytest.mark.parametrize("kind", ["subscribe", "send", "typing"])
async def test_not_a_member_closes_1008(app: App, client: HTTPClient, kind: str) -> None:
    room, [(ta, _)] = await room_with(client, "alice")
    tb, _ = await register_and_login(client, "bobby")
    frame: JSON = {"type": kind, "room_id": room["id"]}
    if kind == "send":
        frame["text"] = "let me in"
    async with connect(app.port, tb) as ws:
        await ws.send(frame)
        assert await ws.closed() == (1008, [])
    assert await all_messages(client, ta, room["id"]) == []


async def test_frame_too_big_closes_1009(tmp_path: Path) -> None:
    async with serve(make_config(tmp_path, ws_max_frame=1024)) as app:
        client = HTTPClient(app.port)
        token, _ = await register_and_login(client, "alice")
        async with connect(app.port, token) as ws:
            await ws.send("x" * 1000)  # under the limit: just an error
            assert (await ws.expect("error"))["code"] == "invalid_json"
            await ws.send("x" * 1025)
            assert await ws.closed() == (1009, [])
        await client.aclose()


@pytest.mark.workers
async def test_logout_closes_that_tokens_sockets_4001(app: Served, client: HTTPClient) -> None:
    room, [(t1, alice)] = await room_with(client, "alice")
    t2 = await login(client, "alice")
    async with connect(app.port, t1) as ws1, connect(app.port, t1, auth="frame") as ws1b, \
            connect(app.port, t2, auth="frame") as ws2:
        assert (await client.post("/logout", token=t1)).status == 204
        assert await ws1.closed() == (4001, [])
        assert await ws1b.closed() == (4001, [])
        await ws2.barrier()  # another token's socket stays open
        assert (await online(client, t2, room["id"]))[alice["id"]] is True


async def test_shutdown_closes_every_socket_1001(tmp_path: Path) -> None:
    async with serve(make_config(tmp_path)) as app:
        client = HTTPClient(app.port)
        room, [(ta, _), (tb, _)] = await room_with(client, "alice", "bobby")
        await client.aclose()
        async with connect(app.port, ta) as a1, connect(app.port, ta) as a2, connect(app.port, tb) as b:
            await a1.subscribe(room["id"])
            await b.subscribe(room["id"])
            app.shutdown()
            for ws in (a1, a2, b):
                assert await ws.closed() == (1001, [])


async def test_reader_that_never_reads_is_closed_4008(tmp_path: Path) -> None:
    config = make_config(tmp_path, ws_queue=8, send_rate=0, max_websockets_per_user=50)
    async with serve(config) as app, trio.open_nursery() as nursery:
        client = HTTPClient(app.port)
        room, [(ta, _), (ts, slowpoke)] = await room_with(client, "alice", "slowpoke")
        rid = room["id"]
        fast: list[WS] = []
        async with trio.open_nursery() as opening:
            async def open_fast() -> None:
                ws = WS(await nursery.start(_hold_socket, app.port, ta))
                await ws.expect("hello")
                await ws.subscribe(rid)
                fast.append(ws)
            for _ in range(50):
                opening.start_soon(open_fast)
        slow = await open_slow(nursery, app.port, ts)
        await slow.expect("hello")
        for ws in fast:  # slowpoke came online
            assert (await ws.expect("presence"))["user"]["id"] == slowpoke["id"]
        await slow.send({"type": "subscribe", "room_id": rid})  # and never read again

        slow_end: list[tuple[int, list[JSON]]] = []
        slow_closed = trio.Event()

        async def read_slow() -> None:
            slow_end.append(await slow.closed())
            slow_closed.set()

        text = "x" * config.text_max  # big frames fill the slow peer's TCP window quickly
        sent = 0
        dropped_at = None
        with trio.fail_after(30):
            while dropped_at is None or sent < dropped_at + 3:
                sent = (await rest_send(client, ta, rid, text))["seq"]
                for ws in fast:  # every other subscriber gets each message, in order
                    assert (await ws.expect("message"))["message"]["seq"] == sent
                if dropped_at is None and not (await online(client, ta, rid))[slowpoke["id"]]:
                    dropped_at = sent
                    # reading now, it finds the frames that got through, whole and in order,
                    # then the close code
                    nursery.start_soon(read_slow)
                assert sent < 300, "the slow reader was never closed"
            for ws in fast:
                await ws.barrier()
            await slow_closed.wait()
        code, frames = slow_end[0]
        assert code == 4008
        assert frames[0]["type"] == "subscribed"
        got = [f["message"]["seq"] for f in frames[1:]]
        assert got == list(range(2, len(got) + 2)) and len(got) < sent  # 1: slowpoke's join
        await client.aclose()
        nursery.cancel_scope.cancel()


async def _hold_socket(port: int, token: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Keep a websocket open (in a nursery of the caller's choosing) and hand it over."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws",
                                  extra_headers=[(b"authorization", f"Bearer {token}".encode())]) as conn:
        task_status.started(conn)
        await trio.sleep_forever()


# -- presence and membership ---------------------------------------------------------------------


async def test_online_while_a_socket_is_open(app: App, client: HTTPClient) -> None:
    room, [(ta, _), (tb, bobby)] = await room_with(client, "alice", "bobby")
    rid = room["id"]
    assert (await online(client, ta, rid))[bobby["id"]] is False
    async with connect(app.port, tb):
        assert (await online(client, ta, rid))[bobby["id"]] is True
    await wait_online(client, ta, rid, bobby["id"], False)


@pytest.mark.workers
async def test_leaving_ends_the_subscription(app: Served, client: HTTPClient) -> None:
    room, [(ta, _), (tb, _)] = await room_with(client, "alice", "bobby")
    other = await make_room(client, tb, "other")
    rid = room["id"]
    async with connect(app.port, tb) as b:
        await b.subscribe(rid)
        await b.subscribe(other["id"])
        assert (await client.post(f"/rooms/{rid}/leave", token=tb)).status == 204
        assert (await b.expect("message"))["message"]["kind"] == "leave"  # in the room's timeline
        assert await b.recv() == {"type": "unsubscribed", "room_id": rid, "reason": "left"}
        await rest_send(client, ta, rid, "after bobby left")
        await rest_send(client, tb, other["id"], "still here")
        assert (await b.expect("message"))["message"]["room_id"] == other["id"]
        await b.barrier()
        await b.send({"type": "subscribe", "room_id": rid})
        assert await b.closed() == (1008, [])


# -- heartbeat -----------------------------------------------------------------------------------


async def test_heartbeat_drops_a_peer_that_does_not_answer(tmp_path: Path) -> None:
    async with serve(make_config(tmp_path, heartbeat_s=0.2)) as app:
        client = HTTPClient(app.port)
        token, _ = await register_and_login(client, "alice")
        async with connect(app.port, token) as alive:  # trio-websocket answers pings
            assert alive.hello["heartbeat_s"] == 0.2
            stream, status, _, data = await raw_handshake(
                app.port, headers=[("Authorization", f"Bearer {token}")])
            assert status == 101
            # never answer; only watch what arrives until the server closes the connection
            received = [data]
            with trio.fail_after(10):
                await read_until_closed(stream, received)
            data = b"".join(received)
            await stream.aclose()
            frames, _ = server_frames(data)
            assert frames[0][0] == 0x1 and orjson.loads(frames[0][1])["type"] == "hello"
            assert any(opcode == 0x9 for opcode, _ in frames), "the server never pinged"
            # the peer that answers has lived through the same heartbeats and is still there
            await alive.barrier()
        await client.aclose()


# -- the upgrade request -------------------------------------------------------------------------


async def test_get_ws_without_upgrade_is_400(client: HTTPClient) -> None:
    assert_error(await client.get("/ws"), 400, "bad_request")


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        ("same", True),
        ("http://chat.example.com", True),  # listed in ws_origins
        ("http://evil.example", False),
        ("http://127.0.0.1:1", False),  # same host, other port
        ("null", False),
    ],
)
async def test_origin(tmp_path: Path, origin: str | None, allowed: bool) -> None:
    async with serve(make_config(tmp_path, ws_origins="http://chat.example.com, https://x.example")) as app:
        client = HTTPClient(app.port)
        token, _ = await register_and_login(client, "alice")
        await client.aclose()
        headers = [("Authorization", f"Bearer {token}")]
        if origin is not None:
            headers.append(("Origin", f"http://127.0.0.1:{app.port}" if origin == "same" else origin))
        stream, status, head, rest = await raw_handshake(app.port, headers=headers)
        try:
            if allowed:
                assert status == 101, head
                with trio.fail_after(DEADLINE):
                    while not server_frames(rest)[0]:
                        rest += await stream.receive_some(65536)
                (_, payload), *_ = server_frames(rest)[0]
                assert orjson.loads(payload)["type"] == "hello"
                await stream.send_all(client_frame(b'{"type":"ping"}'))
            else:
                assert status == 403, head
                assert b"upgrade" not in head.lower()
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                with trio.fail_after(DEADLINE):
                    while len(rest) < length:
                        rest += await stream.receive_some(65536)
                assert orjson.loads(rest[:length])["error"]["code"] == "forbidden"
        finally:
            await stream.aclose()


# -- ordering scenarios --------------------------------------------------------------------------


async def collect(ws: WS, messages: int, acks: int) -> tuple[list[JSON], list[JSON]]:
    """Read exactly `messages` message frames and `acks` ack frames (in whatever interleaving);
    return the message objects of each."""
    got: dict[str, list[JSON]] = {"message": [], "ack": []}
    with trio.fail_after(DEADLINE):
        while len(got["message"]) < messages or len(got["ack"]) < acks:
            frame = await ws.recv()
            assert frame["type"] in got, frame
            got[frame["type"]].append(frame["message"])
    assert (len(got["message"]), len(got["ack"])) == (messages, acks)
    return got["message"], got["ack"]


@pytest.mark.workers
async def test_two_clients_see_each_others_messages_in_order(app: Served, client: HTTPClient) -> None:
    room, [(ta, _), (tb, _)] = await room_with(client, "alice", "bobby")
    rid = room["id"]
    async with connect(app.port, ta) as a, connect(app.port, tb) as b:
        await a.subscribe(rid)
        await b.subscribe(rid)
        for i in range(10):
            await a.send({"type": "send", "room_id": rid, "text": f"a{i}", "ref": i})
            await b.send({"type": "send", "room_id": rid, "text": f"b{i}", "ref": i})
        seen_a, acks_a = await collect(a, 20, 10)
        seen_b, acks_b = await collect(b, 20, 10)
        for seen in (seen_a, seen_b):
            assert seqs(seen) == list(range(2, 22))  # 1: bobby's join
            assert [m["text"] for m in seen if m["text"][0] == "a"] == [f"a{i}" for i in range(10)]
            assert [m["text"] for m in seen if m["text"][0] == "b"] == [f"b{i}" for i in range(10)]
        assert seen_a == seen_b == (await all_messages(client, ta, rid))[1:]
        assert [m["text"] for m in acks_a] == [f"a{i}" for i in range(10)]
        assert [m["text"] for m in acks_b] == [f"b{i}" for i in range(10)]
        assert sorted(seqs(acks_a + acks_b)) == list(range(2, 22))
        await a.barrier()
        await b.barrier()


@pytest.mark.parametrize("ws_queue", [1024, 8])
async def test_resume_after_reconnect(tmp_path: Path, ws_queue: int) -> None:
    """With ws_queue=8 more messages are missed than the outbox holds: resuming must still work
    (it is what a client closed with 4008 is told to do)."""
    async with serve(make_config(tmp_path, send_rate=0, ws_queue=ws_queue)) as app:
        client = HTTPClient(app.port)
        room, [(ta, _), (tb, _)] = await room_with(client, "alice", "bobby")
        rid = room["id"]
        for i in range(3):
            await rest_send(client, tb, rid, f"before {i}")
        async with connect(app.port, ta) as a:
            await a.subscribe(rid, after=0)
            last = (await a.messages_until(4))[-1]["seq"]  # 1: bobby's join
        for i in range(50):
            await rest_send(client, tb, rid, f"missed {i}")
        async with connect(app.port, ta) as a:
            assert (await a.subscribe(rid, after=last))["last_seq"] == last + 50
            missed = await a.messages_until(last + 50)
            assert seqs(missed) == list(range(last + 1, last + 51))
            assert [m["text"] for m in missed] == [f"missed {i}" for i in range(50)]
            await rest_send(client, tb, rid, "live")
            assert (await a.expect("message"))["message"]["seq"] == last + 51
            await a.barrier()  # and nothing twice
        await client.aclose()


@pytest.mark.parametrize("recent_cache", [200, 3])  # 3: replays are read from disk, not memory
async def test_replay_racing_live_sends(tmp_path: Path, recent_cache: int) -> None:
    async with serve(make_config(tmp_path, send_rate=0, recent_cache=recent_cache)) as app:
        client = HTTPClient(app.port)
        room, [(ta, _), (tb, _)] = await room_with(client, "alice", "bobby")
        rid = room["id"]
        for i in range(5):
            await rest_send(client, tb, rid, f"seed {i}")
        sender = HTTPClient(app.port, tb)

        async def send_live(started: trio.Event, sent: list[int]) -> None:
            for i in range(12):
                sent.append((await rest_send(sender, tb, rid, f"live {i}"))["seq"])
                if i == 1:
                    started.set()  # the subscribe goes out while ten more are being sent

        last = 5
        for iteration in range(30):
            started, sent = trio.Event(), list[int]()
            async with connect(app.port, ta) as a:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send_live, started, sent)
                    await started.wait()
                    after = max(0, last - iteration % 9)
                    await a.send({"type": "subscribe", "room_id": rid, "after": after})
                    await a.expect("subscribed")
                last = sent[-1]
                got = await a.messages_until(last)
                assert seqs(got) == list(range(after + 1, last + 1)), (iteration, after)
                await a.barrier()  # no duplicate after the last one either
        await sender.aclose()
        await client.aclose()


async def test_more_than_1000_missed_is_a_gap(tmp_path: Path) -> None:
    async with serve(make_config(tmp_path, send_rate=0, durability="normal")) as app:
        client = HTTPClient(app.port)
        room, [(token, _)] = await room_with(client, "alice")
        rid = room["id"]
        await fill_room(app.port, token, rid, 1001)
        async with connect(app.port, token) as ws:
            assert (await ws.subscribe(rid, after=0))["last_seq"] == 1001
            assert await ws.recv() == {"type": "gap", "room_id": rid, "after": 0, "last_seq": 1001}
            await ws.barrier()  # nothing replayed
            await rest_send(client, token, rid, "live")
            assert (await ws.expect("message"))["message"]["seq"] == 1002
        async with connect(app.port, token) as ws:  # exactly 1000 missed: replayed, no gap
            assert (await ws.subscribe(rid, after=2))["last_seq"] == 1002
            assert seqs(await ws.messages_until(1002)) == list(range(3, 1003))
            await ws.barrier()
        await client.aclose()


async def test_pipelined_sends_keep_their_order(tmp_path: Path) -> None:
    """Sends are not waited for one by one: 50 frames sent at once all commit, in the order they
    were sent, and their acks come back in that order too."""
    async with serve(make_config(tmp_path, send_rate=0)) as app:
        client = HTTPClient(app.port)
        await pipelined_sends(app, client)
        await client.aclose()


async def pipelined_sends(app: App, client: HTTPClient) -> None:
    room, [(ta, _)] = await room_with(client, "alice")
    rid = room["id"]
    async with connect(app.port, ta) as a:
        for i in range(50):
            await a.send({"type": "send", "room_id": rid, "text": f"m{i}", "ref": i})
        acks = [await a.expect("ack") for _ in range(50)]
        assert [ack["ref"] for ack in acks] == list(range(50))
        assert [ack["message"]["text"] for ack in acks] == [f"m{i}" for i in range(50)]
        assert seqs([ack["message"] for ack in acks]) == list(range(1, 51))
        assert [m["text"] for m in await all_messages(client, ta, rid)] == [f"m{i}" for i in range(50)]
