"""Authorization matrix: every room-scoped REST call and websocket frame, by every kind of caller
who must not get through, answers the documented refusal (docs/API.md, "chat_trio specifics"):

REST: no, expired or revoked token → 401 (with WWW-Authenticate) for every call. A signed-in
non-member (of no room, or of another room) may read the room and join it (rooms are public) and
leave is an idempotent 204; members, and reading or posting messages, are 403.
Websocket: an expired or revoked token, or no token at all, closes with 1008 before any frame is
served; a non-member's subscribe, send and typing close with 1008; unsubscribe needs no
membership (it only ends the caller's own subscription) and answers `unsubscribed`.

And no answer, websocket frame or log line (at debug level) of a full session ever holds a
password, an argon2 hash, or a raw token (other than the login answer that issues it)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from chat_trio.app import App
from tests.client import HTTPClient, Reply
from tests.helpers import (
    PASSWORD,
    Client,
    Recorder,
    assert_error,
    join,
    login,
    make_config,
    make_room,
    register_and_login,
    send,
    serve,
)
from tests.ws_client import DEADLINE, connect, ws_url

TTL = 0.3  # token lifetime (seconds) in the "expired" case

REST_CALLS = {  # name → (method, path template, JSON body)
    "show": ("GET", "/rooms/{id}", None),
    "join": ("POST", "/rooms/{id}/join", None),
    "leave": ("POST", "/rooms/{id}/leave", None),
    "members": ("GET", "/rooms/{id}/members", None),
    "history": ("GET", "/rooms/{id}/messages", None),
    "post": ("POST", "/rooms/{id}/messages", {"text": "let me in"}),
}
# What a signed-in user who is not a member of the room gets.
NON_MEMBER_STATUS = {"show": 200, "join": 200, "leave": 204, "members": 403, "history": 403, "post": 403}
WS_FRAMES = {
    "subscribe": {"type": "subscribe", "room_id": 0},
    "send": {"type": "send", "room_id": 0, "text": "let me in", "ref": 1},
    "typing": {"type": "typing", "room_id": 0},
    "unsubscribe": {"type": "unsubscribe", "room_id": 0},
}
CALLERS = ["no_token", "expired", "revoked", "non_member", "other_room_member"]
UNAUTHENTICATED = {"no_token", "expired", "revoked"}


@dataclass
class World:
    app: App
    client: HTTPClient
    room_id: int  # the room the caller must not get into
    caller: str | None  # the caller's token (None: no token at all)

    async def room_texts(self) -> list[str]:
        """The room's messages, as its owner sees them (a fresh login: tokens may be short-lived)."""
        owner = await login(self.client, "owner")
        reply = await self.client.get(f"/rooms/{self.room_id}/messages", token=owner)
        assert reply.status == 200, reply.body
        return [m["text"] for m in reply.json["messages"] if m["kind"] == "text"]


@pytest.fixture
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    kind: str = request.param
    config = make_config(tmp_path, token_ttl=TTL if kind == "expired" else 3600.0)
    async with serve(config) as app:
        client = HTTPClient(app.port)
        caller: str | None = None
        owner, _ = await register_and_login(client, "owner")
        room = await make_room(client, owner, "private")
        assert (await send(client, owner, room["id"], "secret")).status == 201
        if kind == "revoked":
            caller, _ = await register_and_login(client, "caller")
            await join(client, caller, room["id"])  # even a former member: the token is what counts
            assert (await client.post("/logout", token=caller)).status == 204
        elif kind == "non_member":
            caller, _ = await register_and_login(client, "caller")
        elif kind == "other_room_member":
            caller, _ = await register_and_login(client, "caller")
            await make_room(client, caller, "elsewhere")
        elif kind == "expired":
            caller, _ = await register_and_login(client, "caller")
            await join(client, caller, room["id"])  # a member, but the token has expired
            await trio.sleep(TTL + 0.05)
        try:
            yield World(app, client, room["id"], caller)
        finally:
            await client.aclose()


async def call(world: World, name: str, room_id: int | None = None) -> Reply:
    method, path, body = REST_CALLS[name]
    path = path.format(id=room_id or world.room_id)
    return await world.client.request(method, path, body, token=world.caller or "")


@pytest.mark.parametrize("world", CALLERS, indirect=True)
@pytest.mark.parametrize("name", list(REST_CALLS))
async def test_rest(world: World, name: str, request: pytest.FixtureRequest) -> None:
    kind = request.node.callspec.params["world"]
    reply = await call(world, name)
    if kind in UNAUTHENTICATED:
        assert_error(reply, 401, "unauthorized")
        assert reply.headers[b"www-authenticate"] == b'Bearer realm="chat_trio"'
    elif NON_MEMBER_STATUS[name] == 403:
        assert_error(reply, 403, "forbidden")
    else:
        assert reply.status == NON_MEMBER_STATUS[name], reply.body
        if name in ("show", "join"):
            assert reply.json["room"]["id"] == world.room_id
    assert await world.room_texts() == ["secret"]  # nothing got into the room
    if kind not in UNAUTHENTICATED:  # a room that does not exist is 404 before membership
        assert_error(await call(world, name, room_id=999), 404, "not_found")


async def ws_close_code(port: int, token: str | None, frame: dict[str, Any]) -> tuple[int | None, list[Any]]:
    """Open /ws, authenticate with an auth frame when a token is given (else send the frame
    first), send `frame`, and read until the server closes: (close code, frames seen)."""
    frames: list[Any] = []
    async with open_websocket_url(ws_url(port), connect_timeout=DEADLINE,
                                  disconnect_timeout=DEADLINE) as conn:
        try:
            with trio.fail_after(DEADLINE):
                if token is not None:
                    await conn.send_message(orjson.dumps({"type": "auth", "token": token}).decode())
                await conn.send_message(orjson.dumps(frame).decode())
                await conn.send_message(orjson.dumps({"type": "ping"}).decode())
                while True:
                    frames.append(orjson.loads(await conn.get_message()))
                    if frames[-1]["type"] == "pong":
                        return None, frames
        except ConnectionClosed as exc:
            assert exc.reason is not None
            return int(exc.reason.code), frames
    raise AssertionError("unreachable")


@pytest.mark.parametrize("world", CALLERS, indirect=True)
@pytest.mark.parametrize("kind", list(WS_FRAMES))
async def test_websocket(world: World, kind: str, request: pytest.FixtureRequest) -> None:
    caller = request.node.callspec.params["world"]
    frame = {**WS_FRAMES[kind], "room_id": world.room_id}
    code, frames = await ws_close_code(world.app.port, world.caller, frame)
    if caller in UNAUTHENTICATED:
        assert code == 1008, (code, frames)
        assert frames == [], frames  # not even the hello
    elif kind == "unsubscribe":
        assert code is None
        assert [f["type"] for f in frames] == ["hello", "unsubscribed", "pong"], frames
    else:
        assert code == 1008, (code, frames)
        assert [f["type"] for f in frames] == ["hello"], frames  # no subscribed, ack or message
    assert await world.room_texts() == ["secret"]
    if caller not in UNAUTHENTICATED and kind != "unsubscribe":
        # A room that does not exist answers an error frame and the socket stays open.
        code, frames = await ws_close_code(world.app.port, world.caller, {**frame, "room_id": 999})
        assert code is None
        assert [f["type"] for f in frames] == ["hello", "error", "pong"], frames
        assert frames[1]["code"] == "not_found"


# -- secrets never leave -------------------------------------------------------------------------


async def test_no_secret_in_any_answer_frame_or_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    recorder = Recorder()
    passwords = {PASSWORD, "another secret password", "wrong password!"}
    ws_frames: list[str] = []
    tokens: list[str] = []
    async with serve(make_config(tmp_path, log_level="debug", login_fail_limit=3)) as app:
        client = Client(app.port, recorder=recorder)
        alice, _ = await register_and_login(client, "alice")
        bob, _ = await register_and_login(client, "bob", "another secret password")
        tokens += [alice, bob]
        # Failures that carry a password: wrong, too long, malformed, duplicate user, rate limited.
        for _ in range(4):
            await client.post("/login", {"username": "alice", "password": "wrong password!"})
        await client.post("/register", {"username": "carol", "password": PASSWORD + "x" * 1100})
        await client.post("/register", {"username": "alice", "password": PASSWORD})
        await client.post("/register", {"username": "x", "password": PASSWORD, "extra": PASSWORD})
        truncated = b'{"username": "alice", "password": "' + PASSWORD.encode()
        await client.request("POST", "/login", body=truncated, headers=[("content-type", "application/json")])
        room = await make_room(client, alice, "room")
        await join(client, bob, room["id"])
        for path in ("/me", f"/rooms/{room['id']}", f"/rooms/{room['id']}/members",
                     f"/rooms/{room['id']}/messages", "/rooms"):
            await client.get(path, token=alice)
        await send(client, bob, room["id"], "hi", txn_id="t1")
        await client.get("/me", token=alice + "garbage")  # a wrong token must not be echoed either
        async with connect(app.port, alice) as ws, connect(app.port, bob, auth="frame") as ws2:
            for w in (ws, ws2):
                await w.subscribe(room["id"])
            await ws2.send({"type": "send", "room_id": room["id"], "text": "yo", "ref": "r"})
            await ws2.send({"type": "typing", "room_id": room["id"]})
            await ws2.send({"type": "auth", "token": bob})  # a second auth frame is just invalid
            # Everything both sockets get: bob up to his ack, alice up to bob's typing event.
            for w, last in ((ws2, '"ack"'), (ws, '"typing"')):
                with trio.fail_after(DEADLINE):
                    while True:
                        ws_frames.append(str(await w.conn.get_message()))
                        if last in ws_frames[-1]:
                            break
            assert (await client.post("/logout", token=bob)).status == 204
            code, frames = await ws2.closed()
            assert code == 4001
            ws_frames += [orjson.dumps(f).decode() for f in frames]
        await client.get("/me", token=bob)  # revoked
        await client.aclose()
    recorder.passwords |= passwords
    recorder.assert_no_leaks()
    texts = [r.getMessage() + " " + repr(vars(r)) for r in caplog.records]
    assert any("/login" in t for t in texts), "the access log was not captured"
    for text in texts + ws_frames + [r.body.decode("utf-8", "replace") for r in recorder.replies]:
        assert "$argon2" not in text, text
        for secret in passwords:
            assert secret not in text, text
    for text in texts + ws_frames:
        for token in tokens:
            assert token not in text, text
