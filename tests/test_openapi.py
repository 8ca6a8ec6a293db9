"""The served OpenAPI document: valid OpenAPI 3.1, consistent, and true to what the server answers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from chat_trio.config import Config
from tests.client import HTTPClient, Reply
from tests.helpers import PASSWORD, OperatorClient, StartServer, make_config

JSON = dict[str, Any]
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    # Small limits so 429s are cheap to reach.
    return make_config(tmp_path, send_rate=0.01, send_burst=4, login_fail_limit=2, register_limit=3,
                       login_fail_address_limit=2, room_create_rate=0.01, room_create_burst=1,
                       invite_rate=0.01, invite_burst=2)


async def served(client: HTTPClient) -> JSON:
    reply = await client.get("/openapi.json")
    assert reply.status == 200
    doc: JSON = reply.json
    return doc


def resolve(doc: JSON, node: JSON) -> JSON:
    """Follow a local `$ref` (one level is all the document uses outside schemas)."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return resolve(doc, target)


def operations(doc: JSON) -> list[tuple[str, str, JSON]]:
    return [(method, path, op) for path, item in doc["paths"].items()
            for method, op in item.items() if method in METHODS]


# -- the document itself -------------------------------------------------------------------------


async def test_document_is_valid_openapi_31(client: HTTPClient) -> None:
    doc = await served(client)
    assert doc["openapi"].startswith("3.1")
    validate(doc, cls=OpenAPIV31SpecValidator)


async def test_authenticated_operations_list_401(client: HTTPClient) -> None:
    doc = await served(client)
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        **doc["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    secured = [(m, p, op) for m, p, op in operations(doc) if op.get("security")]
    assert len(secured) == 37
    for method, path, op in secured:
        if {} in op["security"]:
            # Anonymous allowed at the HTTP level: only /ws, whose token is checked after the
            # upgrade (a bad one closes the socket with 1008, never an HTTP 401).
            assert path == "/ws"
            assert "401" not in op["responses"]
        else:
            assert "401" in op["responses"], f"{method} {path}"


async def test_path_parameters_are_declared(client: HTTPClient) -> None:
    doc = await served(client)
    with_room = [p for p in doc["paths"] if "{room_id}" in p]
    assert len(with_room) == 13
    for method, path, op in operations(doc):
        declared = {param["name"]: param for param in map(lambda p: resolve(doc, p), op.get("parameters", []))
                    if param["in"] == "path"}
        assert set(declared) == set(re.findall(r"{(\w+)}", path)), f"{method} {path}"
        if "{room_id}" in path:
            room_id = declared["room_id"]
            assert room_id["required"] is True
            assert room_id["schema"]["type"] == "integer"


async def test_operations_are_complete(client: HTTPClient) -> None:
    doc = await served(client)
    for method, path, op in operations(doc):
        where = f"{method} {path}"
        assert op.get("summary"), where
        assert any(status.startswith("2") or status == "101" for status in op["responses"]), where
        if "requestBody" in op:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert schema["additionalProperties"] is False, where
            # Every field optional: then at least one (minProperties), or the body itself is optional.
            optional = schema.get("minProperties") or not op["requestBody"]["required"]
            assert schema["required"] or optional, where
            assert {"400", "415", "422"} <= set(op["responses"]), where


# -- the document against real answers -----------------------------------------------------------


class Checker:
    """Sends requests and checks each answer against the operation the document gives it."""

    def __init__(self, doc: JSON, client: HTTPClient) -> None:
        self.doc = doc
        self.client = client
        self.seen: set[tuple[str, str, str]] = set()

    async def __call__(self, method: str, template: str, status: int, *, path: str | None = None,
                       **kw: Any) -> Reply:
        reply = await self.client.request(method, path or template, **kw)
        assert reply.status == status, (method, path or template, reply.status, reply.body)
        op = self.doc["paths"][template][method.lower()]
        assert str(status) in op["responses"], f"{method} {template} {status} is not documented"
        self.seen.add((method, template, str(status)))
        response = resolve(self.doc, op["responses"][str(status)])
        for name in response.get("headers", {}):
            assert name.lower().encode() in reply.headers, f"{method} {template} {status}: {name}"
        content = response.get("content")
        if content is None:
            assert reply.body == b""
            return reply
        if "application/json" not in content:
            media = reply.headers[b"content-type"].split(b";")[0].decode()
            assert media in content, (method, template, status, media)
            return reply
        schema = {**content["application/json"]["schema"], "components": self.doc["components"]}
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = [e.message for e in validator.iter_errors(reply.json)]
        assert not errors, (method, template, status, reply.json, errors)
        return reply


async def sweep(check: Checker, room_id: int, token: str) -> None:
    """The answers every operation of a kind has: 401 without a token, 404 for a missing room,
    400 / 415 / 422 for a bad body (with `token`, a member of `room_id`)."""
    json_type = [("content-type", "application/json")]
    for method, template, op in operations(check.doc):
        verb = method.upper()
        path = template.replace("{room_id}", str(room_id)).replace("{user_id}", "1")
        path = path.replace("{session_id}", "x").replace("{seq}", "1")
        if op.get("security") and {} not in op["security"]:
            await check(verb, template, 401, path=path)
        if "{room_id}" in template:
            missing = path.replace(f"/rooms/{room_id}", "/rooms/999")
            await check(verb, template, 404, path=missing, token=token)
        if "requestBody" in op:
            await check(verb, template, 400, path=path, body=b"{", headers=json_type, token=token)
            await check(verb, template, 415, path=path, body=b"{}", headers=[("content-type", "text/plain")],
                        token=token)
            await check(verb, template, 422, path=path, json={"not_a_field": 1}, token=token)


async def test_answers_match_the_document(client: HTTPClient) -> None:
    check = Checker(await served(client), client)
    alice = {"username": "alice", "password": "correct horse"}
    bob = {"username": "bob.b", "password": "battery staple"}

    await check("GET", "/healthz", 200)
    await check("GET", "/openapi.json", 200)
    await check("GET", "/metrics", 200)
    await check("GET", "/", 200)
    await check("GET", "/static/{name}", 200, path="/static/app.js")
    await check("GET", "/static/{name}", 200, path="/static/style.css")
    await check("GET", "/static/{name}", 404, path="/static/nothing.js")

    await check("POST", "/register", 201, json=alice)
    await check("POST", "/register", 201, json=bob)
    await check("POST", "/register", 409, json={**alice, "username": "ALICE"})
    await check("POST", "/register", 422, json={"username": "x"})
    await check("POST", "/register", 422, json={**alice, "extra": 1})
    await check("POST", "/register", 400, body=b"[1]", headers=[("content-type", "application/json")])
    await check("POST", "/register", 415, body=b"{}", headers=[("content-type", "text/plain")])
    await check("POST", "/register", 201, json={**alice, "username": "carol"})  # the third
    await check("POST", "/register", 429, json={**alice, "username": "dave"})

    token = (await check("POST", "/login", 200, json=alice)).json["token"]
    bob_token = (await check("POST", "/login", 200, json=bob)).json["token"]
    await check("GET", "/me", 401)
    await check("GET", "/me", 200, token=token)

    await check("POST", "/rooms", 401, json={"name": "general"})
    room = (await check("POST", "/rooms", 201, json={"name": "general", "topic": "hi"}, token=token)).json
    rid = room["room"]["id"]
    await check("POST", "/rooms", 409, json={"name": "GENERAL"}, token=token)
    await check("POST", "/rooms", 422, json={"name": "   "}, token=token)
    await check("POST", "/rooms", 429, json={"name": "second"}, token=token)
    await check("GET", "/rooms", 200, token=token)
    await check("GET", "/rooms", 200, path="/rooms?joined=true", token=bob_token)
    await check("GET", "/rooms", 422, path="/rooms?joined=maybe", token=token)
    await check("GET", "/rooms", 400, path="/rooms?joined=%ff", token=token)

    room_path = f"/rooms/{rid}"
    await check("GET", "/rooms/{room_id}", 200, path=room_path, token=bob_token)
    await check("GET", "/rooms/{room_id}", 404, path="/rooms/999", token=token)
    await check("GET", "/rooms/{room_id}/members", 403, path=f"{room_path}/members", token=bob_token)
    await check("POST", "/rooms/{room_id}/join", 200, path=f"{room_path}/join", token=bob_token)
    await check("GET", "/rooms/{room_id}/members", 200, path=f"{room_path}/members", token=bob_token)

    messages = "/rooms/{room_id}/messages"
    mpath = f"{room_path}/messages"
    await check("POST", messages, 201, path=mpath, json={"text": "one", "txn_id": "t1"}, token=token)
    await check("POST", messages, 200, path=mpath, json={"text": "one", "txn_id": "t1"}, token=token)
    await check("POST", messages, 201, path=mpath, json={"text": "two"}, token=token)
    await check("POST", messages, 422, path=mpath, json={"text": "bad\x00"}, token=token)
    await check("POST", messages, 201, path=mpath, json={"text": "three", "txn_id": None}, token=token)
    await check("POST", messages, 429, path=mpath, json={"text": "four"}, token=token)
    page = await check("GET", messages, 200, path=f"{mpath}?limit=2", token=bob_token)
    assert page.json["has_more"] is True
    await check("GET", messages, 200, path=f"{mpath}?after=3&wait=0.05", token=bob_token)
    await check("GET", messages, 422, path=f"{mpath}?before=2&after=1", token=bob_token)
    await check("GET", messages, 422, path=f"{mpath}?wait=1", token=bob_token)
    await check("GET", messages, 400, path=f"{mpath}?limit=%ff", token=bob_token)
    entry = "/rooms/{room_id}/messages/{seq}"
    # seq 1 is bob's join entry; alice's messages are 2, 3 and 4
    await check("POST", messages, 201, path=mpath, json={"text": "bob's"}, token=bob_token)  # seq 5
    await check("PATCH", entry, 200, path=f"{mpath}/5", json={"text": "Bob's", "txn_id": "e1"},
                token=bob_token)
    await check("PATCH", entry, 409, path=f"{mpath}/6", json={"text": "x"}, token=bob_token)
    await check("PATCH", entry, 403, path=f"{mpath}/2", json={"text": "mine"}, token=bob_token)
    await check("PATCH", entry, 429, path=f"{mpath}/2", json={"text": "x"}, token=token)
    await check("DELETE", entry, 403, path=f"{mpath}/3", token=bob_token)
    await check("DELETE", entry, 200, path=f"{mpath}/3", token=token)
    await check("DELETE", entry, 409, path=f"{mpath}/3", token=token)
    await check("DELETE", entry, 404, path=f"{mpath}/99", token=token)
    await check("PUT", "/rooms/{room_id}/read", 200, path=f"{room_path}/read", json={"seq": 2},
                token=bob_token)
    await check("GET", "/search", 200, path="/search?q=one", token=bob_token)
    await check("GET", "/search", 200, path=f"/search?q=t&room_id={rid}&before=99&limit=1", token=token)
    await check("GET", "/search", 422, path="/search?q=", token=token)
    await check("GET", "/search", 400, path="/search?q=%ff", token=token)
    await check("GET", "/search", 404, path="/search?q=one&room_id=999", token=token)
    await sweep(check, rid, token)

    await check("POST", "/rooms/{room_id}/leave", 204, path=f"{room_path}/leave", token=bob_token)
    await check("GET", messages, 403, path=mpath, token=bob_token)
    await check("POST", messages, 403, path=mpath, json={"text": "hi"}, token=bob_token)
    await check("PUT", "/rooms/{room_id}/read", 403, path=f"{room_path}/read", json={"seq": 3},
                token=bob_token)
    await check("GET", "/search", 403, path=f"/search?q=one&room_id={rid}", token=bob_token)

    # v2: changing a room, roles, invites, kicks, bans, direct rooms.
    await check("POST", "/rooms/{room_id}/join", 200, path=f"{room_path}/join", token=bob_token)
    bob_id = (await client.get("/me", token=bob_token)).json["user"]["id"]
    carol = (await check("POST", "/login", 200, json={**alice, "username": "carol"})).json
    carol_token, carol_id = carol["token"], carol["user"]["id"]
    await check("PATCH", "/rooms/{room_id}", 200, path=room_path, json={"topic": "changed"}, token=token)
    await check("PATCH", "/rooms/{room_id}", 403, path=room_path, json={"topic": "mine"}, token=bob_token)
    await check("POST", "/rooms", 201, json={"name": "other", "visibility": "private"}, token=bob_token)
    # a private room's name takes nothing; a public one's does
    await check("PATCH", "/rooms/{room_id}", 200, path=room_path, json={"name": "OTHER"}, token=token)
    await check("POST", "/rooms", 201, json={"name": "third"}, token=carol_token)
    await check("PATCH", "/rooms/{room_id}", 409, path=room_path, json={"name": "Third"}, token=token)
    role, role_path = "/rooms/{room_id}/members/{user_id}/role", f"{room_path}/members/{{}}/role"
    await check("PUT", role, 200, path=role_path.format(bob_id), json={"role": "moderator"}, token=token)
    await check("PUT", role, 403, path=role_path.format(1), json={"role": "member"}, token=bob_token)
    await check("PUT", role, 404, path=role_path.format(999), json={"role": "member"}, token=token)
    invites, ipath = "/rooms/{room_id}/invites", f"{room_path}/invites"
    await check("POST", invites, 201, path=ipath, json={"user_id": carol_id}, token=token)
    await check("POST", invites, 409, path=ipath, json={"user_id": bob_id}, token=token)
    await check("POST", invites, 404, path=ipath, json={"user_id": 999}, token=token)
    await check("POST", invites, 403, path=ipath, json={"user_id": bob_id}, token=carol_token)
    await check("POST", invites, 429, path=ipath, json={"user_id": carol_id}, token=token)  # the third
    assert len((await check("GET", "/invites", 200, token=carol_token)).json["invites"]) == 1
    invite = "/rooms/{room_id}/invites/{user_id}"
    await check("DELETE", invite, 403, path=f"{ipath}/1", token=carol_token)
    await check("DELETE", invite, 204, path=f"{ipath}/{carol_id}", token=carol_token)
    kick, kpath = "/rooms/{room_id}/kick", f"{room_path}/kick"
    await check("POST", kick, 403, path=kpath, json={"user_id": 1}, token=bob_token)
    await check("POST", kick, 204, path=kpath, json={"user_id": bob_id, "reason": "test"}, token=token)
    await check("POST", kick, 404, path=kpath, json={"user_id": bob_id}, token=token)  # not a member
    bans, bpath = "/rooms/{room_id}/bans", f"{room_path}/bans"
    await check("POST", bans, 204, path=bpath, json={"user_id": carol_id}, token=token)
    await check("POST", bans, 403, path=bpath, json={"user_id": 1}, token=bob_token)
    await check("POST", bans, 404, path=bpath, json={"user_id": 999}, token=token)
    await check("POST", "/rooms/{room_id}/join", 403, path=f"{room_path}/join", token=carol_token)
    assert len((await check("GET", bans, 200, path=bpath, token=token)).json["bans"]) == 1
    await check("GET", bans, 403, path=bpath, token=bob_token)
    await check("DELETE", "/rooms/{room_id}/bans/{user_id}", 403, path=f"{bpath}/{carol_id}", token=bob_token)
    await check("DELETE", "/rooms/{room_id}/bans/{user_id}", 204, path=f"{bpath}/{carol_id}", token=token)
    await check("POST", "/direct", 201, json={"user_id": bob_id}, token=token)
    await check("POST", "/direct", 200, json={"user_id": 1}, token=bob_token)
    await check("POST", "/direct", 404, json={"user_id": 999}, token=token)

    await check("POST", "/logout", 204, token=bob_token)
    await check("POST", "/logout", 401, token=bob_token)

    # Last: failed logins also count against the client address.
    await check("POST", "/login", 401, json={**alice, "password": "wrong password"})
    await check("POST", "/login", 401, json={"username": "nobody", "password": "wrong password"})
    await check("POST", "/login", 429, json=alice)

    await check("GET", "/ws", 400)
    upgrade = [("connection", "Upgrade"), ("upgrade", "websocket"), ("sec-websocket-version", "13"),
               ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]
    await check("GET", "/ws", 403, headers=[*upgrade, ("origin", "http://elsewhere.example")])
    await check("GET", "/ws", 426, headers=[*upgrade[:2], ("sec-websocket-version", "8"), upgrade[3]])

    # Every documented (operation, status) but the default and 101 was exercised (those of an
    # account's lifetime and of admins by the next test; /healthz's 503, which needs a stopped
    # writer, by test_store_writer.py::test_healthz_is_503_once_the_writer_has_stopped).
    documented = {(m.upper(), p, status) for m, p, op in operations(check.doc)
                  for status in op["responses"] if status not in ("default", "101")}
    elsewhere = {("GET", "/healthz", "503")}
    assert {op for op in documented if not lifetime_op(*op)} - check.seen - elsewhere == set()


def lifetime_op(method: str, path: str, status: str) -> bool:
    """An answer of an account's lifetime or of the admin calls."""
    return (path.startswith(("/me/", "/admin/")) or (method, path) == ("DELETE", "/me")
            or (method, path, status) in {("POST", "/register", "403"), ("POST", "/login", "403"),
                                          ("POST", "/direct", "409")})


async def test_lifetime_and_admin_answers_match_the_document(
    start_server: StartServer, tmp_path: Path,
) -> None:
    app = await start_server(registration="closed", login_fail_limit=2)
    client, local_client = HTTPClient(app.port), OperatorClient(app.config.db + ".sock")
    doc = await served(client)
    check, local = Checker(doc, client), Checker(doc, local_client)
    root, ann, bob, carl = ({"username": name, "password": PASSWORD}
                            for name in ("root", "ann", "bob", "carl"))

    await check("POST", "/register", 403, json=ann)
    await local("POST", "/admin/users", 201, json={**root, "admin": True})
    admin = (await check("POST", "/login", 200, json=root)).json["token"]
    ids = {}
    for who in (ann, bob, carl):
        made = await check("POST", "/admin/users", 201, json=who, token=admin)
        ids[who["username"]] = made.json["user"]["id"]
    await check("POST", "/admin/users", 409, json=ann, token=admin)
    ann_token = (await check("POST", "/login", 200, json=ann)).json["token"]
    users, rooms = "/admin/users", "/admin/rooms"
    await check("GET", users, 200, path="/admin/users?q=a&limit=1", token=admin)
    await check("GET", users, 403, token=ann_token)
    await check("GET", users, 422, path="/admin/users?limit=0", token=admin)
    await check("GET", users, 400, path="/admin/users?q=%ff", token=admin)
    await check("POST", users, 403, json={"username": "dave", "password": PASSWORD}, token=ann_token)
    await check("GET", rooms, 200, token=admin)
    await check("GET", rooms, 403, token=ann_token)
    await check("GET", rooms, 422, path="/admin/rooms?after=-1", token=admin)
    await check("GET", rooms, 400, path="/admin/rooms?limit=%ff", token=admin)

    password, flag = "/admin/users/{user_id}/password", "/admin/users/{user_id}/admin"
    deactivate = "/admin/users/{user_id}/deactivate"

    def at(template: str, user: str | int) -> str:
        return template.replace("{user_id}", str(ids.get(str(user), user)))

    new = {"new_password": "another long passphrase"}
    await check("PUT", password, 403, path=at(password, "bob"), json=new, token=ann_token)
    await check("PUT", password, 404, path=at(password, 999), json=new, token=admin)
    await check("PUT", password, 204, path=at(password, "bob"), json=new, token=admin)
    await check("PUT", flag, 200, path=at(flag, "ann"), json={"admin": False}, token=admin)
    await check("PUT", flag, 403, path=at(flag, "ann"), json={"admin": True}, token=ann_token)
    await check("PUT", flag, 404, path=at(flag, 999), json={"admin": True}, token=admin)
    await check("PUT", flag, 409, path=at(flag, 1), json={"admin": False}, token=admin)
    await check("POST", deactivate, 403, path=at(deactivate, "bob"), token=ann_token)
    await check("POST", deactivate, 404, path=at(deactivate, 999), token=admin)
    await check("POST", deactivate, 409, path=at(deactivate, 1), json={"erase": False}, token=admin)
    await check("POST", deactivate, 204, path=at(deactivate, "bob"), token=admin)
    await check("POST", "/login", 403, json={**bob, "password": new["new_password"]})
    await check("POST", "/direct", 409, json={"user_id": ids["bob"]}, token=admin)
    backup = str(tmp_path / "backup.db")
    await local("POST", "/admin/backup", 200, json={"path": backup})
    await local("POST", "/admin/backup", 409, json={"path": backup})
    await check("POST", "/admin/backup", 403, json={"path": backup + "2"}, token=admin)

    await check("GET", "/me/sessions", 200, token=ann_token)
    await check("GET", "/me/export", 200, token=ann_token)
    sessions = (await client.get("/me/sessions", token=admin)).json["sessions"]
    end = "/me/sessions/{session_id}"
    await check("DELETE", end, 404, path="/me/sessions/nothing", token=ann_token)
    await check("DELETE", end, 404, path=f"/me/sessions/{sessions[0]['id']}", token=ann_token)
    change = {"password": PASSWORD, "new_password": "a third long passphrase"}
    await check("PUT", "/me/password", 204, json=change, token=ann_token)
    await check("DELETE", "/me", 409, json={"password": PASSWORD}, token=admin)
    close = {"password": change["new_password"], "erase": True}
    await check("DELETE", "/me", 204, json=close, token=ann_token)
    other = (await check("POST", "/login", 200, json=root)).json["token"]
    await check("DELETE", end, 204, path=f"/me/sessions/{sessions[0]['id']}", token=other)

    carl_token = (await check("POST", "/login", 200, json=carl)).json["token"]
    wrong = {"password": "not the password", "new_password": "whatever it is"}
    await check("PUT", "/me/password", 401, json=wrong, token=carl_token)
    await check("DELETE", "/me", 401, json={"password": "not the password"}, token=carl_token)
    await check("PUT", "/me/password", 429, json=wrong, token=carl_token)
    await check("DELETE", "/me", 429, json={"password": "not the password"}, token=carl_token)

    room = (await client.post("/rooms", {"name": "sweep"}, token=other)).json["room"]["id"]
    await sweep(check, room, other)
    documented = {(m.upper(), p, status) for m, p, op in operations(doc)
                  for status in op["responses"] if status not in ("default", "101")}
    assert {op for op in documented if lifetime_op(*op)} - check.seen - local.seen == set()
    await client.aclose()
    await local_client.aclose()
