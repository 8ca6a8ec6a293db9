"""Accounts over their lifetime, over real sockets: password change, sessions, closing (and
erasing) an account, export, admins and /admin/*, closed registration, the local admin socket.
Revocation is checked where it matters: the old token's next request is 401 and its websocket
closes with 4001, in one process and with --workers 2."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from chat_trio.api import context
from tests.client import HTTPClient
from tests.helpers import (
    PASSWORD,
    USER_KEYS,
    Served,
    assert_error,
    history,
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
    store_of,
)
from tests.rawhttp import RawConn, exchange, get
from tests.ws_client import connect

NEW_PASSWORD = "a brand new passphrase"


async def assert_revoked(client: HTTPClient, token: str) -> None:
    assert_error(await client.get("/me", token=token), 401, "unauthorized")


# -- password ------------------------------------------------------------------------------------


@pytest.mark.workers
async def test_changing_the_password_revokes_every_other_session_at_once(
    app: Served, client: HTTPClient,
) -> None:
    here, _ = await register_and_login(client, "ann")
    there = await login(client, "ann")
    async with connect(app.port, there) as other_ws, connect(app.port, here) as own_ws:
        change = {"password": PASSWORD, "new_password": NEW_PASSWORD}
        reply = await client.request("PUT", "/me/password", change, token=here)
        assert reply.status == 204, reply.body
        code, _ = await other_ws.closed()
        assert code == 4001
        await own_ws.barrier()  # the caller's own socket stays open
    await assert_revoked(client, there)
    assert (await client.get("/me", token=here)).status == 200
    assert_error(await client.post("/login", {"username": "ann", "password": PASSWORD}), 401,
                 "invalid_credentials")
    await login(client, "ann", NEW_PASSWORD)


async def test_a_wrong_current_password_is_401_and_counts_as_a_failed_login(start_server: Any) -> None:
    app = await start_server(login_fail_limit=2)
    client = HTTPClient(app.port)
    token, _ = await register_and_login(client, "ann")
    body = {"password": "not my password", "new_password": NEW_PASSWORD}
    for _ in range(2):
        assert_error(await client.request("PUT", "/me/password", body, token=token), 401,
                     "invalid_credentials")
    assert_error(await client.request("PUT", "/me/password", body, token=token), 429, "rate_limited")
    assert_error(await client.post("/login", {"username": "ann", "password": PASSWORD}), 429, "rate_limited")
    assert_error(await client.request("PUT", "/me/password", {"password": PASSWORD, "new_password": "short"},
                                      token=token), 422, "validation_failed", "new_password")
    await client.aclose()


# -- sessions ------------------------------------------------------------------------------------


@pytest.mark.workers
async def test_sessions_are_listed_and_one_can_be_ended(app: Served, client: HTTPClient) -> None:
    await register(client, "ann")
    laptop = (await client.post("/login", {"username": "ann", "password": PASSWORD},
                                headers=[("user-agent", "Laptop/1.0 \x7f" + "x" * 400)])).json["token"]
    phone = (await client.post("/login", {"username": "ann", "password": PASSWORD},
                               headers=[("user-agent", "Phone/2.0")])).json["token"]
    reply = await client.get("/me/sessions", token=laptop)
    assert reply.status == 200, reply.body
    sessions = reply.json["sessions"]
    assert [s["client"] for s in sessions] == ["Laptop/1.0 " + "x" * 245, "Phone/2.0"]
    assert [s["current"] for s in sessions] == [True, False]
    for s in sessions:
        assert set(s) == {"id", "created_at", "last_seen_at", "client", "current"}
        assert len(s["id"]) <= 16 and s["id"] not in (laptop, phone)
        assert s["last_seen_at"] >= s["created_at"]
    async with connect(app.port, phone) as ws:
        ended = await client.request("DELETE", f"/me/sessions/{sessions[1]['id']}", token=laptop)
        assert ended.status == 204, ended.body
        code, _ = await ws.closed()
        assert code == 4001
    await assert_revoked(client, phone)
    assert [s["current"] for s in (await client.get("/me/sessions", token=laptop)).json["sessions"]] == [True]
    gone = f"/me/sessions/{sessions[1]['id']}"
    assert_error(await client.request("DELETE", gone, token=laptop), 404, "not_found")
    # Another user's session id is not found either: ids are scoped to their owner.
    bob, _ = await register_and_login(client, "bob")
    theirs = f"/me/sessions/{sessions[0]['id']}"
    assert_error(await client.request("DELETE", theirs, token=bob), 404, "not_found")
    assert (await client.get("/me", token=laptop)).status == 200


# -- closing an account --------------------------------------------------------------------------


@pytest.mark.workers
async def test_closing_an_account_revokes_it_removes_it_from_rooms_and_keeps_the_name(
    app: Served, client: HTTPClient,
) -> None:
    owner, _ = await register_and_login(client, "owner")
    room = await make_room(client, owner, "lobby")
    ann, user = await register_and_login(client, "ann")
    await join(client, ann, room["id"])
    assert (await send(client, ann, room["id"], "hello from ann")).status == 201
    assert_error(await client.request("DELETE", "/me", {"password": "wrong password"}, token=ann), 401,
                 "invalid_credentials")
    async with connect(app.port, ann) as ws:
        reply = await client.request("DELETE", "/me", {"password": PASSWORD}, token=ann)
        assert reply.status == 204, reply.body
        code, _ = await ws.closed()
        assert code == 4001
    await assert_revoked(client, ann)
    members = (await client.get(f"/rooms/{room['id']}/members", token=owner)).json["members"]
    assert [m["user"]["username"] for m in members] == ["owner"]
    assert_error(await client.post("/login", {"username": "ann", "password": PASSWORD}), 403, "deactivated")
    # Nobody brings a closed account back into a room.
    assert_error(await client.post("/direct", {"user_id": user["id"]}, token=owner), 409, "deactivated")
    hidden = (await client.post("/rooms", {"name": "h", "visibility": "private"}, token=owner)).json["room"]
    invite = await client.post(f"/rooms/{hidden['id']}/invites", {"user_id": user["id"]}, token=owner)
    assert_error(invite, 409, "deactivated")
    assert_error(await client.post("/register", {"username": "ANN", "password": PASSWORD}), 409,
                 "username_taken")
    # It left the room with a `leave` entry; not erased: its message stays, with its author.
    entries = (await history(client, owner, room["id"])).json["messages"]
    assert [(m["kind"], m["text"]) for m in entries] == [
        ("join", "ann joined"), ("text", "hello from ann"), ("leave", "ann left")]
    assert entries[2]["subject"]["id"] == user["id"]
    assert user["deactivated"] is False


async def test_erasing_an_account_erases_its_texts_from_storage(start_server: Any) -> None:
    app = await start_server()
    client = HTTPClient(app.port)
    owner, _ = await register_and_login(client, "owner")
    room = await make_room(client, owner, "lobby")
    ann, _ = await register_and_login(client, "ann")
    await join(client, ann, room["id"])
    marker = "zebra-unicorn-marker-4711"
    for n in range(3):
        assert (await send(client, ann, room["id"], f"{marker} {n}")).status == 201
    assert (await send(client, owner, room["id"], "the owner's own words")).status == 201
    async with connect(app.port, owner) as ws:
        await ws.subscribe(room["id"], after=room["last_seq"] + 5)
        reply = await client.request("DELETE", "/me", {"password": PASSWORD, "erase": True}, token=ann)
        assert reply.status == 204, reply.body
        live = await ws.messages_until(7)  # the erase entry, then ann's leave entry
    assert [(m["kind"], m["subject"]["username"]) for m in live] == [("erase", "ann"), ("leave", "ann")]
    messages = (await history(client, owner, room["id"])).json["messages"]
    assert [(m["kind"], m["text"], m.get("deleted")) for m in messages] == [
        ("join", "ann joined", None), *[("text", "", True)] * 3, ("text", "the owner's own words", False),
        ("erase", "ann's messages were erased", None), ("leave", "ann left", None)]
    db = Path(app.config.db)
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            assert marker.encode() not in path.read_bytes(), path
    await client.aclose()


# -- export --------------------------------------------------------------------------------------


async def test_export_streams_every_message_with_its_current_text(start_server: Any) -> None:
    app = await start_server(send_rate=0)
    client = HTTPClient(app.port)
    ann, user = await register_and_login(client, "ann")
    rooms = [await make_room(client, ann, name) for name in ("one", "two")]
    bob, _ = await register_and_login(client, "bob")
    await join(client, bob, rooms[0]["id"])
    assert (await send(client, bob, rooms[0]["id"], "not ann's")).status == 201
    bobs = await make_room(client, bob, "bob's public")
    await join(client, ann, bobs["id"])  # a join entry of ann's: a room event, not a message
    assert (await client.post(f"/rooms/{bobs['id']}/leave", token=ann)).status == 204
    secret = (await client.post("/rooms", {"name": "bob's", "visibility": "private"}, token=bob)).json["room"]
    invited = await client.post(f"/rooms/{secret['id']}/invites", {"user_id": user["id"]}, token=bob)
    assert invited.status == 201, invited.body
    sent = 1100  # more than one page of the export
    for n in range(sent):
        assert (await send(client, ann, rooms[n % 2]["id"], f"message {n}")).status == 201
    reply = await client.get("/me/export", token=ann)
    assert reply.status == 200
    assert reply.headers.get(b"transfer-encoding") == b"chunked"
    assert b"attachment" in reply.headers[b"content-disposition"]
    doc = orjson.loads(reply.body)
    assert doc["user"]["id"] == user["id"] and set(doc["user"]) == USER_KEYS
    assert sorted((m["room"]["name"], m["role"]) for m in doc["memberships"]) == [("one", "owner"),
                                                                                 ("two", "owner")]
    assert [(i["room"]["name"], i["invited_by"]["username"]) for i in doc["invites"]] == [("bob's", "bob")]
    assert [m["text"] for m in doc["messages"]] == [f"message {n}" for n in range(sent)]
    shapes = {(m["author"]["id"], m["kind"], m["deleted"]) for m in doc["messages"]}
    assert shapes == {(user["id"], "text", False)}
    assert_error(await client.get("/me/export"), 401, "unauthorized")
    await client.aclose()


# -- admins --------------------------------------------------------------------------------------


async def test_admin_calls_are_403_to_everyone_else(client: HTTPClient, app: Served) -> None:
    token, user = await register_and_login(client, "ann")
    calls = [("GET", "/admin/users", None),
             ("POST", "/admin/users", {"username": "x1x", "password": PASSWORD}),
             ("PUT", f"/admin/users/{user['id']}/password", {"new_password": NEW_PASSWORD}),
             ("PUT", f"/admin/users/{user['id']}/admin", {"admin": True}),
             ("POST", f"/admin/users/{user['id']}/deactivate", {}), ("GET", "/admin/rooms", None),
             ("POST", "/admin/backup", {"path": "/tmp/x.db"})]
    for method, path, body in calls:
        assert_error(await client.request(method, path, body, token=token), 403, "forbidden")
        assert_error(await client.request(method, path, body), 401, "unauthorized")
    admin, _ = await make_admin(app, client)
    # Even an admin's token does not make backups: only the local socket writes server files.
    assert_error(await client.request("POST", "/admin/backup", {"path": "/tmp/x.db"}, token=admin), 403,
                 "forbidden")


@pytest.mark.workers
async def test_admins_list_create_reset_promote_and_deactivate_users(app: Served, client: HTTPClient) -> None:
    admin, root = await make_admin(app, client)
    assert root["admin"] is True
    made = await client.post("/admin/users", {"username": "ann", "password": PASSWORD}, token=admin)
    assert made.status == 201, made.body
    ann_user = made.json["user"]
    assert (ann_user["admin"], ann_user["deactivated"]) == (False, False)
    taken = {"username": "ANN", "password": PASSWORD}
    assert_error(await client.post("/admin/users", taken, token=admin), 409, "username_taken")
    for name in ("anna", "bob", "annie"):
        await register(client, name)
    page = (await client.get("/admin/users?q=AN&limit=2", token=admin)).json
    assert [u["username"] for u in page["users"]] == ["ann", "anna"] and page["has_more"] is True
    rest = (await client.get(f"/admin/users?q=an&after={page['users'][-1]['id']}", token=admin)).json
    assert [u["username"] for u in rest["users"]] == ["annie"] and rest["has_more"] is False
    everyone = (await client.get("/admin/users", token=admin)).json["users"]
    assert {u["username"]: u["last_seen_at"] is not None for u in everyone} == {
        "root": True, "ann": False, "anna": False, "bob": False, "annie": False}
    assert set(everyone[0]) == USER_KEYS | {"last_seen_at"}
    assert_error(await client.get("/admin/users?q=a%25", token=admin), 422, "validation_failed", "q")

    ann = await login(client, "ann")
    async with connect(app.port, ann) as ws:
        reply = await client.request("PUT", f"/admin/users/{ann_user['id']}/password",
                                     {"new_password": NEW_PASSWORD}, token=admin)
        assert reply.status == 204, reply.body
        code, _ = await ws.closed()
        assert code == 4001
    await assert_revoked(client, ann)
    ann = await login(client, "ann", NEW_PASSWORD)

    # The last admin cannot step down; once there is another, it can.
    root_admin, ann_admin = f"/admin/users/{root['id']}/admin", f"/admin/users/{ann_user['id']}/admin"
    assert_error(await client.request("PUT", root_admin, {"admin": False}, token=admin), 409, "last_admin")
    promoted = await client.request("PUT", ann_admin, {"admin": True}, token=admin)
    assert promoted.status == 200 and promoted.json["user"]["admin"] is True
    assert (await client.get("/admin/users", token=ann)).status == 200
    demoted = await client.request("PUT", root_admin, {"admin": False}, token=ann)
    assert demoted.status == 200 and demoted.json["user"]["admin"] is False
    assert_error(await client.get("/admin/users", token=admin), 403, "forbidden")  # at once
    assert_error(await client.request("POST", f"/admin/users/{ann_user['id']}/deactivate", {}, token=ann),
                 409, "last_admin")

    bob_user = next(u for u in everyone if u["username"] == "bob")
    bob = await login(client, "bob")
    async with connect(app.port, bob) as ws:
        reply = await client.request("POST", f"/admin/users/{bob_user['id']}/deactivate", {}, token=ann)
        assert reply.status == 204, reply.body
        code, _ = await ws.closed()
        assert code == 4001
    await assert_revoked(client, bob)
    listed = (await client.get("/admin/users?q=bob", token=ann)).json["users"]
    assert [(u["deactivated"], u["admin"]) for u in listed] == [(True, False)]
    bob_admin = f"/admin/users/{bob_user['id']}/admin"
    assert_error(await client.request("PUT", bob_admin, {"admin": True}, token=ann), 409, "deactivated")
    assert_error(await client.request("PUT", "/admin/users/999/admin", {"admin": True}, token=ann), 404,
                 "not_found")
    rooms = await client.get("/admin/rooms?limit=1", token=ann)
    assert rooms.status == 200 and rooms.json == {"rooms": [], "has_more": False}


async def test_closed_registration_leaves_account_creation_to_admins(tmp_path: Path) -> None:
    async with serve(make_config(tmp_path, registration="closed")) as app:
        client = HTTPClient(app.port)
        assert_error(await client.post("/register", {"username": "ann", "password": PASSWORD}), 403,
                     "registration_closed")
        admin, _ = await make_admin(app, client)
        made = await client.post("/admin/users", {"username": "ann", "password": PASSWORD}, token=admin)
        assert made.status == 201, made.body
        await login(client, "ann")
        await client.aclose()


async def test_the_admin_socket_is_private_and_its_requests_are_the_operators(app: Served) -> None:
    path = app.config.admin_socket_path()
    assert path is not None and path == app.config.db + ".sock"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    op = operator(app.config)
    assert (await op.get("/healthz")).status == 200
    reply = await op.get("/admin/users")
    assert reply.status == 200 and reply.json == {"users": [], "has_more": False}
    assert (await op.get("/rooms")).status == 404  # only the admin calls are served there
    # The prefix is literal: `_` and `%` are no wildcards.
    for name in ("a_b", "axb", "a_c"):
        assert (await op.post("/admin/users", {"username": name, "password": PASSWORD})).status == 201
    listed = (await op.get("/admin/users?q=A_")).json["users"]
    assert [u["username"] for u in listed] == ["a_b", "a_c"]
    await op.aclose()


# -- last seen -----------------------------------------------------------------------------------


async def test_last_seen_is_written_at_most_once_a_minute_per_token(
    start_server: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = await start_server()
    client = HTTPClient(app.port)
    token, _ = await register_and_login(client, "ann")
    writer = store_of(app).writer
    before = writer.writes
    for _ in range(20):
        assert (await client.get("/me", token=token)).status == 200
    assert writer.writes == before  # just logged in: its last_seen_at is fresh, nothing to write
    first = (await client.get("/me/sessions", token=token)).json["sessions"][0]
    monkeypatch.setattr(context, "SEEN_EVERY", 0.0)  # as if a minute had passed before each request
    with trio.fail_after(10):
        while True:
            await trio.sleep(0.01)
            seen = (await client.get("/me/sessions", token=token)).json["sessions"][0]["last_seen_at"]
            if seen > first["last_seen_at"]:
                break
    assert writer.writes > before
    users = (await operator(app.config).get("/admin/users")).json["users"]
    assert users[0]["last_seen_at"] >= seen
    await client.aclose()


async def test_export_over_http_1_0_head_and_a_reader_that_goes_away(start_server: Any) -> None:
    """HTTP/1.0 gets the document delimited by the connection's close; HEAD gets the head only,
    and the connection stays usable; a client that disconnects mid-export costs nothing else."""
    app = await start_server(send_rate=0)
    client = HTTPClient(app.port)
    token, _ = await register_and_login(client, "ann")
    room = await make_room(client, token, "one")
    for n in range(30):
        assert (await send(client, token, room["id"], f"message {n} " + "x" * 3000)).status == 201
    auth = f"Authorization: Bearer {token}"
    raw, closed = await exchange(app.port, get("/me/export", auth, version="1.0"))
    assert closed and raw.startswith(b"HTTP/1.1 200")
    assert len(orjson.loads(raw.split(b"\r\n\r\n", 1)[1])["messages"]) == 30
    raw, _ = await exchange(app.port, get("/me/export", auth, method="HEAD") + get("/healthz"), timeout=1)
    assert raw.count(b"HTTP/1.1 200") == 2 and b'"messages"' not in raw
    for _ in range(3):  # read the head and a little, then hang up
        conn = await RawConn.open(app.port)
        await conn.send(get("/me/export", auth))
        await conn.read_response(head_only=True)
        await conn.aclose()
    assert (await client.get("/healthz")).status == 200
    await client.aclose()


# -- admins in rooms -----------------------------------------------------------------------------


@pytest.mark.workers
async def test_an_admin_acts_as_owner_in_any_room_without_being_a_member(
    app: Served, client: HTTPClient,
) -> None:
    admin, _ = await make_admin(app, client)
    owner, _ = await register_and_login(client, "owner")
    mod, mod_user = await register_and_login(client, "mod")
    ann, ann_user = await register_and_login(client, "ann")
    made = await client.post("/rooms", {"name": "hidden", "visibility": "private"}, token=owner)
    room = made.json["room"]
    rid = room["id"]
    for token, user in ((mod, mod_user), (ann, ann_user)):
        invited = await client.post(f"/rooms/{rid}/invites", {"user_id": user["id"]}, token=owner)
        assert invited.status == 201, invited.body
        await join(client, token, rid)
    # Not a member, yet the private room is there for the admin, and every owner's call works.
    assert (await client.get(f"/rooms/{rid}", token=admin)).status == 200
    assert_error(await history(client, admin, rid), 403, "forbidden")  # reading needs joining
    patched = await client.request("PATCH", f"/rooms/{rid}", {"topic": "moderated"}, token=admin)
    assert patched.status == 200 and patched.json["room"]["topic"] == "moderated", patched.body
    role = f"/rooms/{rid}/members/{mod_user['id']}/role"
    assert (await client.request("PUT", role, {"role": "moderator"}, token=admin)).status == 200
    assert (await client.post(f"/rooms/{rid}/kick", {"user_id": ann_user["id"]}, token=admin)).status == 204
    assert (await client.post(f"/rooms/{rid}/bans", {"user_id": mod_user["id"], "reason": "spam"},
                              token=admin)).status == 204
    bans = await client.get(f"/rooms/{rid}/bans", token=admin)
    assert [b["user"]["username"] for b in bans.json["bans"]] == ["mod"]
    assert (await client.request("DELETE", f"/rooms/{rid}/bans/{mod_user['id']}", token=admin)).status == 204
    owner_id = room["created_by"]
    assert_error(await client.request("PUT", f"/rooms/{rid}/members/{owner_id}/role", {"role": "member"},
                                      token=admin), 403, "forbidden")  # as owner: not over the owner
    # Handing the room over for its owner: the owner steps down to moderator, as it would itself.
    invited = await client.post(f"/rooms/{rid}/invites", {"user_id": ann_user["id"]}, token=admin)
    assert invited.status == 201, invited.body
    await join(client, ann, rid)
    handed = await client.request("PUT", f"/rooms/{rid}/members/{ann_user['id']}/role", {"role": "owner"},
                                  token=admin)
    assert handed.status == 200, handed.body
    members = (await client.get(f"/rooms/{rid}/members", token=owner)).json["members"]
    assert {m["user"]["username"]: m["role"] for m in members} == {"owner": "moderator", "ann": "owner"}
    # Joining a private room needs no invite for an admin, and shows as a join entry.
    await join(client, admin, rid)
    entries = (await history(client, admin, rid)).json["messages"]
    assert entries[-1]["kind"] == "join" and entries[-1]["subject"]["username"] == "root"
    listed = (await client.get("/admin/rooms", token=admin)).json["rooms"]
    assert [(r["name"], r["visibility"]) for r in listed] == [("hidden", "private")]
    # A plain user still gets 404 for the private room.
    stranger, _ = await register_and_login(client, "stranger")
    assert_error(await client.get(f"/rooms/{rid}", token=stranger), 404, "not_found")
    refused = await client.request("PATCH", f"/rooms/{rid}", {"topic": "x"}, token=stranger)
    assert_error(refused, 404, "not_found")
