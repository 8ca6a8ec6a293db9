"""Authorization matrix: every room-scoped REST call and websocket frame, by every kind of caller
who must not get through, answers the documented refusal (docs/API.md, "chat_trio specifics"):

REST: no, expired or revoked token, or the token of an account since deactivated → 401 (with
WWW-Authenticate) for every call. A signed-in non-member (of no room, or of another room, or a
server admin, who reads a room's messages only by joining it) may read the room and join it (rooms
are public) and leave is an idempotent 204; members, and reading or posting messages, are 403.
Every /admin/* call is 401 without a live token and 403 to everyone but an admin.
Websocket: an expired or revoked token, or no token at all, closes with 1008 before any frame is
served; a non-member's subscribe, send and typing close with 1008; unsubscribe needs no
membership (it only ends the caller's own subscription) and answers `unsubscribed`.

v2, a private room (below): every call and frame of the contract by a non-member, an invitee, a
member, a moderator, the owner, a kicked and a banned user, another room's owner, an expired
token, a member whose account was since deactivated (401 / 1008, as expired) and a server admin
who is not a member (it acts as owner: every owner's call, but reading, posting and subscribing
need joining): 404 (exactly a missing room's answer) for everyone neither in it nor invited nor an
admin, the role the contract names for everything else, and no frame about the room reaches
anyone outside it.

And no answer, websocket frame or log line (at debug level) of a full session ever holds a
password, an argon2 hash, or a raw token (other than the login answer that issues it)."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.client import HTTPClient, Reply
from tests.helpers import (
    PASSWORD,
    Client,
    Recorder,
    Served,
    StartServed,
    assert_error,
    join,
    login,
    make_admin,
    make_config,
    make_room,
    operator,
    register,
    register_and_login,
    send,
    serve,
)
from tests.ws_client import DEADLINE, connect, ws_url

# Every test runs in each mode (the `workers` marker). In the workers and PostgreSQL modes the
# worlds of a module share its servers (`shared_served`: one per settings), each world under
# names of its own; these settings let one address register and log in that often.
pytestmark = pytest.mark.workers
SETTINGS = dict(login_rate=0, login_user_limit=0, register_limit=0)
TTL = 0.5  # token lifetime (seconds) in the "expired" case

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
CALLERS = ["no_token", "expired", "revoked", "deactivated", "non_member", "other_room_member", "admin"]
UNAUTHENTICATED = {"no_token", "expired", "revoked", "deactivated"}
# name → (method, path template ({target}: a user id), JSON body, an admin's status)
ADMIN_CALLS: dict[str, tuple[str, str, Any, int]] = {
    "list_users": ("GET", "/admin/users", None, 200),
    "list_rooms": ("GET", "/admin/rooms", None, 200),
    "create_user": ("POST", "/admin/users", {"username": "newcomer", "password": PASSWORD}, 201),
    "set_password": ("PUT", "/admin/users/{target}/password", {"new_password": "a new long password"}, 204),
    "promote": ("PUT", "/admin/users/{target}/admin", {"admin": True}, 200),
    "deactivate": ("POST", "/admin/users/{target}/deactivate", {"erase": True}, 204),
}


@dataclass
class World:
    app: Served
    client: HTTPClient
    prefix: str  # of its user and room names
    room_id: int  # the room the caller must not get into
    caller: str | None  # the caller's token (None: no token at all)
    target: int  # a user the /admin/* calls act on

    def name(self, base: str) -> str:
        return self.prefix + base

    async def token(self, base: str) -> str:
        return await login(self.client, self.name(base))  # fresh: tokens may be short-lived

    async def room_texts(self) -> list[str]:
        """The room's messages, as its owner sees them."""
        reply = await self.client.get(f"/rooms/{self.room_id}/messages", token=await self.token("owner"))
        assert reply.status == 200, reply.body
        return [m["text"] for m in reply.json["messages"] if m["kind"] == "text"]


# The worlds of the callers whose every test changes nothing (each test asserts so), built once
# per server and kind: on a shared server every test of such a caller uses the same one (and an
# expired token is waited for once). Keyed by the server's database path, unique to it.
UNCHANGED: dict[tuple[str, str], World | PrivateWorld] = {}


async def served(shared_served: StartServed, kind: str) -> Served:
    return await shared_served(**SETTINGS, token_ttl=TTL if kind == "expired" else 3600.0)


def new_prefix() -> str:
    return "w" + secrets.token_hex(3) + "-"


@pytest.fixture
async def world(request: pytest.FixtureRequest, shared_served: StartServed) -> AsyncIterator[World]:
    kind: str = request.param
    app = await served(shared_served, kind)
    client = HTTPClient(app.port)
    try:
        built = UNCHANGED.get((app.config.db, kind))
        if isinstance(built, World):
            yield World(app, client, built.prefix, built.room_id, built.caller, built.target)
        else:
            built = await build_world(World(app, client, new_prefix(), 0, None, 0), kind)
            if kind in UNAUTHENTICATED:
                UNCHANGED[app.config.db, kind] = built
            yield built
    finally:
        await client.aclose()


async def build_world(world: World, kind: str) -> World:
    client, name = world.client, world.name
    for user in ("owner", "target", "caller"):
        user_id = (await register(client, name(user)))["id"]
        if user == "target":
            world.target = user_id
    owner = await world.token("owner")
    room = await client.post("/rooms", {"name": name("private")}, token=owner)
    assert room.status == 201, room.body
    world.room_id = room.json["room"]["id"]
    assert (await send(client, owner, world.room_id, "secret")).status == 201
    if kind == "revoked":
        world.caller = await world.token("caller")
        await join(client, world.caller, world.room_id)  # even a former member: the token is what counts
        assert (await client.post("/logout", token=world.caller)).status == 204
    elif kind == "non_member":
        world.caller = await world.token("caller")
    elif kind == "other_room_member":
        world.caller = await world.token("caller")
        elsewhere = await client.post("/rooms", {"name": name("elsewhere")}, token=world.caller)
        assert elsewhere.status == 201, elsewhere.body
    elif kind == "deactivated":
        world.caller = await world.token("caller")
        await join(client, world.caller, world.room_id)
        closed = await client.request("DELETE", "/me", {"password": PASSWORD}, token=world.caller)
        assert closed.status == 204, closed.body
    elif kind == "admin":
        world.caller, _ = await make_admin(world.app, client, name("admin"))
    elif kind == "expired":
        world.caller = await world.token("caller")
        await join(client, world.caller, world.room_id)  # a member, but the token has expired
        await trio.sleep(TTL + 0.05)
    return world


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
                # The server may close after the frame before the ping is sent: then the ping's
                # send fails, and what came before the close is still read below.
                with contextlib.suppress(ConnectionClosed):
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


@pytest.mark.parametrize("world", CALLERS, indirect=True)
@pytest.mark.parametrize("name", list(ADMIN_CALLS))
async def test_admin_calls(world: World, name: str, request: pytest.FixtureRequest) -> None:
    kind = request.node.callspec.params["world"]
    method, path, body, admin_status = ADMIN_CALLS[name]
    path = path.format(target=world.target)
    if name == "create_user":
        body = {**body, "username": world.name("newcomer")}
    reply = await world.client.request(method, path, body, token=world.caller or "")
    if kind in UNAUTHENTICATED:
        assert_error(reply, 401, "unauthorized")
    elif kind != "admin":
        assert_error(reply, 403, "forbidden")
    else:
        assert reply.status == admin_status, reply.body
    # Refused calls changed nothing: the target can still log in, as a plain user.
    users = (await world.client.post("/login", {"username": world.name("target"), "password": PASSWORD}))
    if kind == "admin" and name in ("set_password", "deactivate"):
        assert users.status in (401, 403), users.body
    else:
        assert users.status == 200 and users.json["user"]["admin"] is (kind == "admin" and name == "promote")


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


# -- v2: a private room, every call and frame, by every kind of caller -----------------------------
#
# A private room does not exist for anyone neither in it nor invited (404 on every call, as for a
# room that does not exist; no frame about it); an invitee may see it and join it (or decline);
# each call beyond that needs the role the contract's table names, over a lower role.

V2_CALLERS = ["non_member", "invitee", "member", "moderator", "owner", "kicked", "banned",
              "other_room_owner", "expired", "deactivated", "admin"]
GONE = {"expired", "deactivated"}  # a token that no longer works
OUTSIDERS = {"non_member", "kicked", "banned", "other_room_owner"}
VICTIMS = ("v_kick", "v_ban", "v_role", "v_invite", "v_uninvite", "v_unban")
# call → (method, path under /rooms/{id}, body naming a victim by its key); mutating calls each
# act on their own victim, so the order below never changes another call's answer.
V2_CALLS: dict[str, tuple[str, str, Any]] = {
    "show": ("GET", "", None),
    "members": ("GET", "/members", None),
    "history": ("GET", "/messages", None),
    "long_poll": ("GET", "/messages?after=0&wait=5", None),
    "post": ("POST", "/messages", {"text": "let me in"}),
    "patch": ("PATCH", "", {"topic": "mine now"}),
    "invite": ("POST", "/invites", {"user_id": "v_invite"}),
    "uninvite": ("DELETE", "/invites/{v_uninvite}", None),
    "bans": ("GET", "/bans", None),
    "role": ("PUT", "/members/{v_role}/role", {"role": "moderator"}),
    "kick": ("POST", "/kick", {"user_id": "v_kick"}),
    "ban": ("POST", "/bans", {"user_id": "v_ban"}),
    "unban": ("DELETE", "/bans/{v_unban}", None),
    "join": ("POST", "/join", None),
    "leave": ("POST", "/leave", None),
}
_INVITEE = {"show": 200, "join": 200, "leave": 204}
_MEMBER = {"members": 200, "history": 200, "long_poll": 200, "post": 201}
_MODERATOR = {"patch": 200, "invite": 201, "uninvite": 204, "bans": 200, "kick": 204, "ban": 204,
              "unban": 204}
V2_STATUS: dict[str, dict[str, int]] = {  # anything not named: 403
    "invitee": _INVITEE,
    "member": {**_INVITEE, **_MEMBER},
    "moderator": {**_INVITEE, **_MEMBER, **_MODERATOR},
    "owner": {**_INVITEE, **_MEMBER, **_MODERATOR, "role": 200},
    "admin": {**_INVITEE, **_MODERATOR, "role": 200},  # as owner, but reading needs joining
}


@dataclass
class PrivateWorld:
    app: Served
    client: HTTPClient
    prefix: str  # of its user and room names
    room_id: int
    kind: str  # one of V2_CALLERS
    caller: str  # its token
    ids: dict[str, int]

    def name(self, base: str) -> str:
        return self.prefix + base

    async def token(self, base: str) -> str:
        return await login(self.client, self.name(base))  # fresh: tokens are short-lived in "expired"


@pytest.fixture
async def private_world(
    request: pytest.FixtureRequest, shared_served: StartServed
) -> AsyncIterator[PrivateWorld]:
    kind: str = request.param
    app = await served(shared_served, kind)
    client = HTTPClient(app.port)
    try:
        built = UNCHANGED.get((app.config.db, "private " + kind))
        if isinstance(built, PrivateWorld):
            yield PrivateWorld(app, client, built.prefix, built.room_id, kind, built.caller, built.ids)
        else:
            built = await build_private_world(PrivateWorld(app, client, new_prefix(), 0, kind, "", {}))
            if kind in GONE:
                UNCHANGED[app.config.db, "private " + kind] = built
            yield built
    finally:
        await client.aclose()


async def build_private_world(world: PrivateWorld) -> PrivateWorld:
    client, kind, ids = world.client, world.kind, world.ids
    for name in ["owner", "caller", *VICTIMS]:
        ids[name] = (await register(client, world.name(name)))["id"]
    owner = await world.token("owner")
    reply = await client.post("/rooms", {"name": world.name("secret"), "visibility": "private"}, token=owner)
    rid = world.room_id = reply.json["room"]["id"]
    assert (await send(client, owner, rid, "secret")).status == 201

    async def owner_does(method: str, path: str, body: Any = None) -> None:
        token = await world.token("owner")
        reply = await client.request(method, f"/rooms/{rid}{path}", body, token=token)
        assert reply.status < 300, (method, path, reply.body)

    async def bring_in(name: str) -> None:
        await owner_does("POST", "/invites", {"user_id": ids[name]})
        await join(client, await world.token(name), rid)

    for name in ("v_kick", "v_ban", "v_role"):
        await bring_in(name)
    await owner_does("POST", "/invites", {"user_id": ids["v_uninvite"]})
    await owner_does("POST", "/bans", {"user_id": ids["v_unban"]})
    if kind in ("member", "moderator", "kicked", "banned", "expired", "deactivated"):
        await bring_in("caller")
    if kind == "invitee":
        await owner_does("POST", "/invites", {"user_id": ids["caller"]})
    if kind == "moderator":
        await owner_does("PUT", f"/members/{ids['caller']}/role", {"role": "moderator"})
    if kind == "kicked":
        await owner_does("POST", "/kick", {"user_id": ids["caller"]})
    if kind == "banned":
        await owner_does("POST", "/bans", {"user_id": ids["caller"]})
    if kind == "other_room_owner":
        mine = await client.post("/rooms", {"name": world.name("mine"), "visibility": "private"},
                                 token=await world.token("caller"))
        assert mine.status == 201
    if kind == "admin":
        operator_client = operator(world.app.config)
        promote = f"/admin/users/{ids['caller']}/admin"
        promoted = await operator_client.request("PUT", promote, {"admin": True})
        await operator_client.aclose()
        assert promoted.status == 200, promoted.body
    world.caller = await world.token("owner" if kind == "owner" else "caller")
    if kind == "deactivated":
        closed = await client.request("DELETE", "/me", {"password": PASSWORD}, token=world.caller)
        assert closed.status == 204, closed.body
    if kind == "expired":
        await trio.sleep(TTL + 0.05)
    return world


def v2_request(world: PrivateWorld, name: str) -> tuple[str, str, Any]:
    method, path, body = V2_CALLS[name]
    path = f"/rooms/{world.room_id}" + path.format(**world.ids)
    if isinstance(body, dict) and isinstance(body.get("user_id"), str):
        body = {**body, "user_id": world.ids[body["user_id"]]}
    return method, path, body


@pytest.mark.parametrize("private_world", V2_CALLERS, indirect=True)
async def test_private_room_rest(private_world: PrivateWorld) -> None:
    world, client = private_world, private_world.client
    kind, caller = world.kind, world.caller
    reader = await world.token("v_role")  # a member whatever happens (the owner may leave)
    before = (await client.get(f"/rooms/{world.room_id}/messages?limit=100", token=reader)).json["messages"]
    # Whether GET /rooms lists it (the page that starts at it: a shared server holds many rooms).
    listed = await client.get(f"/rooms?after={world.room_id - 1}&limit=1", token=caller)
    got: dict[str, int] = {}
    for name in V2_CALLS:
        method, path, body = v2_request(world, name)
        with trio.fail_after(3):  # a long-poll is answered at once (an entry exists, or refused)
            reply = await client.request(method, path, body, token=caller)
        got[name] = reply.status
        if kind in GONE:
            assert_error(reply, 401, "unauthorized")
        elif kind in OUTSIDERS:
            # Exactly what a room that does not exist answers: nothing is revealed.
            elsewhere = path.replace(f"/rooms/{world.room_id}", "/rooms/999")
            missing = await client.request(method, elsewhere, body, token=caller)
            assert (reply.status, reply.json) == (missing.status, missing.json) == (
                404, {"error": {"code": "not_found", "message": "no such room"}}), name
        elif reply.status == 403:
            assert reply.json["error"]["code"] == "forbidden", (name, reply.body)
    if kind in GONE:
        assert listed.status == 401
        return
    want = {name: 404 if kind in OUTSIDERS else V2_STATUS[kind].get(name, 403) for name in V2_CALLS}
    assert got == want
    # Listed for those who may see it; an admin finds it in GET /admin/rooms instead.
    assert (world.room_id in [r["id"] for r in listed.json["rooms"]]) == (kind not in OUTSIDERS | {"admin"})
    after = (await client.get(f"/rooms/{world.room_id}/messages?limit=100", token=reader)).json["messages"]
    if kind in OUTSIDERS:
        assert after == before  # nothing got in, not even an entry
    elif kind == "invitee":  # its own join and leave only
        caller_name = world.name("caller")
        assert [(m["kind"], m["text"]) for m in after[len(before):]] == [("join", f"{caller_name} joined"),
                                                                         ("leave", f"{caller_name} left")]
    assert after[0]["text"] == "secret"


@pytest.mark.parametrize("private_world", V2_CALLERS, indirect=True)
async def test_private_room_frames(private_world: PrivateWorld) -> None:
    """subscribe, send and typing by each caller; and whatever happens in the room meanwhile
    (a room change, a message, typing, a member coming online), no frame about it reaches an
    outsider or an invitee."""
    world = private_world
    kind = world.kind
    for frame_kind, frame in WS_FRAMES.items():
        if frame_kind == "unsubscribe":
            continue
        code, frames = await ws_close_code(world.app.port, world.caller, {**frame, "room_id": world.room_id})
        types = [f["type"] for f in frames]
        if kind in GONE:
            assert (code, frames) == (1008, [])
        elif kind in OUTSIDERS:  # as for a room that does not exist: an error, the socket stays
            assert code is None and types == ["hello", "error", "pong"], frames
            assert (frames[1]["code"], frames[1]["message"]) == ("not_found", "no such room")
        elif kind in ("invitee", "admin"):  # it may know the room, but is no member
            assert code == 1008 and types == ["hello"], frames
        else:
            assert code is None and "error" not in types, frames
    if kind in GONE:
        return
    if kind in ("member", "moderator", "owner"):
        return  # members get the room's frames: tests/test_live_rooms.py
    async with connect(world.app.port, world.caller) as outsider:
        outsider.side = True
        owner = await world.token("owner")
        async with connect(world.app.port, owner) as ws:
            await ws.subscribe(world.room_id)
            await ws.send({"type": "typing", "room_id": world.room_id})
            patched = await world.client.request("PATCH", f"/rooms/{world.room_id}", {"topic": "t"},
                                                 token=owner)
            assert patched.status == 200
            assert (await send(world.client, owner, world.room_id, "more secrets")).status == 201
            async with connect(world.app.port, await world.token("v_role")):
                while (frame := await ws.recv(keep="presence"))["type"] != "presence":
                    pass
                assert frame["online"] is True
            await ws.barrier()
        await outsider.send({"type": "ping"})
        assert await outsider.recv() == {"type": "pong"}  # nothing came before it
