"""Accounts over real HTTP: register, login (with its rate limits), logout, /me, token expiry and
revocation. Every exchange of these tests is recorded and checked for leaked passwords/tokens."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from chat_trio.app import App
from tests.client import Reply
from tests.conftest import make_config
from tests.helpers import (
    PASSWORD,
    USER_KEYS,
    Client,
    Recorder,
    assert_error,
    login,
    parse_time,
    register,
    register_and_login,
    serve,
)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.assert_no_leaks()


@pytest.fixture
async def client(app: App, recorder: Recorder) -> AsyncIterator[Client]:
    c = Client(app.port, recorder=recorder)
    yield c
    await c.aclose()


def test_leak_check_itself_catches_leaks() -> None:
    rec = Recorder()
    rec.record({"username": "x", "password": PASSWORD}, Reply(201, {}, b'{"user":{}}'))
    rec.record(None, Reply(200, {}, b'{"token":"tok-123456","expires_at":"","user":{}}'))
    assert rec.leaks() == []
    rec.record(None, Reply(200, {}, b'{"echo":"tok-123456"}'))
    rec.record(None, Reply(422, {}, ('{"error":"' + PASSWORD + '"}').encode()))
    assert len(rec.leaks()) == 2


# -- register -------------------------------------------------------------------------------


async def test_register_answers_201_with_the_user(client: Client) -> None:
    before = time.time()
    reply = await client.post("/register", {"username": "alice", "password": PASSWORD})
    assert reply.status == 201
    assert reply.headers[b"content-type"].startswith(b"application/json")
    assert set(reply.json) == {"user"}
    user = reply.json["user"]
    assert set(user) == USER_KEYS
    assert isinstance(user["id"], int) and user["id"] >= 1
    assert user["username"] == "alice"
    assert before - 1 <= parse_time(user["created_at"]) <= time.time() + 1
    other = await register(client, "bob")
    assert other["id"] != user["id"]


async def test_register_taken_username_is_409_ignoring_case(client: Client) -> None:
    await register(client, "Alice")
    for name in ("Alice", "alice", "ALICE", "aLiCe"):
        reply = await client.post("/register", {"username": name, "password": PASSWORD})
        assert_error(reply, 409, "username_taken")
    await register(client, "Alice2")


async def test_racing_registrations_of_one_name_create_one_user(app: App, recorder: Recorder) -> None:
    clients = [Client(app.port, recorder=recorder) for _ in range(8)]
    replies: list[Reply] = []

    async def attempt(c: Client, name: str) -> None:
        replies.append(await c.post("/register", {"username": name, "password": PASSWORD}))

    async with trio.open_nursery() as nursery:
        for n, c in enumerate(clients):
            nursery.start_soon(attempt, c, "Racer" if n % 2 else "rACER")
    assert sorted(r.status for r in replies) == [201] + [409] * 7
    for reply in replies:
        if reply.status == 409:
            assert_error(reply, 409, "username_taken")
    for c in clients:
        await c.aclose()


async def test_username_boundaries(client: Client) -> None:
    for name in ("abc", "a" * 32, "A.b-c_9", "___", "1.2"):
        assert (await register(client, name))["username"] == name
    for bad in ("ab", "a" * 33, "", "bad name", "bad/name", "a@b.c", "émile", "abc\n", "ab\x00c",
                "\uff21\uff22\uff23", "abc;", 123, ["abc"], None):
        reply = await client.post("/register", {"username": bad, "password": PASSWORD})
        assert_error(reply, 422, "validation_failed", "username")
    assert_error(await client.post("/register", {"password": PASSWORD}), 422, "validation_failed", "username")


async def test_password_boundaries(client: Client) -> None:
    for n, password in enumerate(("p" * 8, "q" * 1024, "é" * 1024, "€ 8 char")):
        await register(client, f"user{n}", password)
        await login(client, f"user{n}", password)  # the accepted password really is the password
    for bad in ("p" * 7, "q" * 1025, "é" * 1025, "", 12345678, None):
        reply = await client.post("/register", {"username": "someone", "password": bad})
        assert_error(reply, 422, "validation_failed", "password")
    # Nothing was created by the refused attempts.
    await register(client, "someone")


async def test_register_rejects_unknown_fields(client: Client) -> None:
    reply = await client.post("/register", {"username": "carol", "password": PASSWORD, "admin": True})
    assert_error(reply, 422, "validation_failed", "admin")
    await register(client, "carol")


@pytest.mark.parametrize("body", [b"[]", b'["carol"]', b'"carol"', b"null", b"1", b"true", b"{bad",
                                  b"", b'{"username": "x"', b"\xff\xfe"])
async def test_register_body_that_is_not_a_json_object_is_invalid_json(client: Client, body: bytes) -> None:
    reply = await client.post("/register", body=body, headers=[("content-type", "application/json")])
    assert_error(reply, 400, "invalid_json")


async def test_register_needs_json_content_type(client: Client) -> None:
    body = b'{"username": "dave", "password": "%s"}' % PASSWORD.encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
        reply = await client.post("/register", body=body, headers=[("content-type", ctype)])
        assert_error(reply, 415, "unsupported_media_type")
    assert_error(await client.post("/register", body=body), 415, "unsupported_media_type")
    reply = await client.post("/register", body=body,
                              headers=[("content-type", "Application/JSON; charset=utf-8")])
    assert reply.status == 201


# -- login ----------------------------------------------------------------------------------


async def test_login_answers_token_expiry_and_user(client: Client) -> None:
    user = await register(client, "erin")
    before = time.time()
    reply = await client.post("/login", {"username": "erin", "password": PASSWORD})
    after = time.time()
    assert reply.status == 200
    body = reply.json
    assert set(body) == {"token", "expires_at", "user"}
    assert body["user"] == user
    assert isinstance(body["token"], str) and len(body["token"]) >= 43
    expires = parse_time(body["expires_at"])  # asserts YYYY-MM-DDTHH:MM:SS.mmmZ
    ttl = 30 * 86400
    assert before + ttl - 1 <= expires <= after + ttl + 1
    second = await login(client, "erin")
    assert second != body["token"]
    me = await client.get("/me", token=body["token"])
    assert me.status == 200 and me.json == {"user": user}


async def test_unknown_user_and_wrong_password_answer_identically(client: Client) -> None:
    await register(client, "frank")
    wrong = await client.post("/login", {"username": "frank", "password": "not the password"})
    unknown = await client.post("/login", {"username": "nobody", "password": "not the password"})
    assert_error(wrong, 401, "invalid_credentials")
    assert wrong.status == unknown.status
    assert wrong.body == unknown.body
    assert wrong.headers.get(b"www-authenticate") == unknown.headers.get(b"www-authenticate")


def assert_rate_limited(reply: Reply) -> None:
    error = assert_error(reply, 429, "rate_limited")
    millis = error["retry_after_ms"]
    assert isinstance(millis, int) and millis >= 1
    header = int(reply.headers[b"retry-after"])
    assert header >= 1 and header == math.ceil(millis / 1000)


async def test_failed_logins_per_username_are_limited(tmp_path: Path, recorder: Recorder) -> None:
    async with serve(make_config(tmp_path, login_fail_limit=3)) as app:
        def client_from(address: str) -> Client:
            return Client(app.port, local_address=address, recorder=recorder)

        setup = client_from("127.0.0.1")
        await register(setup, "grace")
        await register(setup, "heidi")
        # One failure each from three addresses: no address reaches its own limit...
        for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            reply = await client_from(address).post("/login", {"username": "grace", "password": "wrong-one"})
            assert_error(reply, 401, "invalid_credentials")
        # ...but the username did, whatever the address and even with the right password.
        fresh = client_from("127.0.0.5")
        assert_rate_limited(await fresh.post("/login", {"username": "grace", "password": PASSWORD}))
        assert_rate_limited(await fresh.post("/login", {"username": "GRACE", "password": PASSWORD}))
        # Another user from that address is not affected.
        await login(fresh, "heidi")


async def test_failed_logins_per_address_are_limited(tmp_path: Path, recorder: Recorder) -> None:
    async with serve(make_config(tmp_path, login_fail_limit=3)) as app:
        setup = Client(app.port, recorder=recorder)
        await register(setup, "ivan")
        attacker = Client(app.port, local_address="127.0.0.2", recorder=recorder)
        for name in ("ivan-not", "ivan", "nobody"):  # three different usernames
            reply = await attacker.post("/login", {"username": name, "password": "wrong-one"})
            assert_error(reply, 401, "invalid_credentials")
        assert_rate_limited(await attacker.post("/login", {"username": "ivan", "password": PASSWORD}))
        assert_rate_limited(await attacker.post("/login", {"username": "other", "password": PASSWORD}))
        # "ivan" failed only once, and another address is not limited.
        await login(Client(app.port, local_address="127.0.0.3", recorder=recorder), "ivan")


async def test_successful_logins_do_not_count(tmp_path: Path, recorder: Recorder) -> None:
    async with serve(make_config(tmp_path, login_fail_limit=3)) as app:
        client = Client(app.port, recorder=recorder)
        await register(client, "judy")
        for _ in range(6):
            await login(client, "judy")
        for _ in range(2):
            assert_error(await client.post("/login", {"username": "judy", "password": "wrong-one"}),
                         401, "invalid_credentials")
        await login(client, "judy")


# -- logout, /me, expiry --------------------------------------------------------------------


async def test_me(client: Client) -> None:
    token, user = await register_and_login(client, "kate")
    reply = await client.get("/me", token=token)
    assert reply.status == 200 and reply.json == {"user": user}
    for headers in ([], [("authorization", "Bearer not-a-token")], [("authorization", f"Basic {token}")],
                    [("authorization", "Bearer")], [("authorization", token)],
                    [("authorization", "Bearer " + "x" * 300)]):
        reply = await client.get("/me", headers=headers)
        assert_error(reply, 401, "unauthorized")


async def test_logout_stops_that_token_only(client: Client) -> None:
    token, user = await register_and_login(client, "leo")
    other = await login(client, "leo")
    assert (await client.get("/me", token=token)).status == 200  # cached before logout
    reply = await client.post("/logout", token=token)
    assert reply.status == 204 and reply.body == b""
    assert_error(await client.get("/me", token=token), 401, "unauthorized")
    assert_error(await client.get("/rooms", token=token), 401, "unauthorized")
    assert_error(await client.post("/logout", token=token), 401, "unauthorized")
    me = await client.get("/me", token=other)
    assert me.status == 200 and me.json == {"user": user}
    assert_error(await client.post("/logout"), 401, "unauthorized")


async def test_expired_token_is_401(tmp_path: Path, recorder: Recorder) -> None:
    async with serve(make_config(tmp_path, token_ttl=0.5)) as app:
        client = Client(app.port, recorder=recorder)
        await register(client, "mia")
        reply = await client.post("/login", {"username": "mia", "password": PASSWORD})
        token, expires = reply.json["token"], parse_time(reply.json["expires_at"])
        assert (await client.get("/me", token=token)).status == 200
        await trio.sleep(max(0.0, expires - time.time()) + 0.05)
        assert_error(await client.get("/me", token=token), 401, "unauthorized")
        assert_error(await client.get("/rooms", token=token), 401, "unauthorized")


async def test_revoked_token_stays_revoked_across_restart(tmp_path: Path, recorder: Recorder) -> None:
    config = make_config(tmp_path)
    async with serve(config) as app:
        client = Client(app.port, recorder=recorder)
        revoked, user = await register_and_login(client, "nina")
        kept = await login(client, "nina")
        assert (await client.post("/logout", token=revoked)).status == 204
        assert_error(await client.get("/me", token=revoked), 401, "unauthorized")
        await client.aclose()
    async with serve(config) as app:
        client = Client(app.port, recorder=recorder)
        assert_error(await client.get("/me", token=revoked), 401, "unauthorized")
        assert (await client.get("/me", token=kept)).json == {"user": user}
        await login(client, "nina")
        await client.aclose()


async def test_registrations_per_address_are_limited(tmp_path: Path, recorder: Recorder) -> None:
    """Each registration costs a password hash, so an address gets register_limit of them per
    window; refusals (taken names, bad input) are answered before and do not count; other
    addresses are not affected; nothing is created by a refused one."""
    async with serve(make_config(tmp_path, register_limit=2, register_window=600.0)) as app:
        here = Client(app.port, local_address="127.0.0.2", recorder=recorder)
        await register(here, "kim")
        assert_error(await here.post("/register", {"username": "kim", "password": PASSWORD}),
                     409, "username_taken")  # answered before the limit: not counted
        await register(here, "lee")
        assert_rate_limited(await here.post("/register", {"username": "mia", "password": PASSWORD}))
        other = Client(app.port, local_address="127.0.0.3", recorder=recorder)
        await register(other, "ned")
        assert_error(await other.post("/login", {"username": "mia", "password": PASSWORD}),
                     401, "invalid_credentials")  # the refused registration created nothing


async def test_behind_a_trusted_proxy_limits_count_the_forwarded_client(
    tmp_path: Path, recorder: Recorder
) -> None:
    """With --trusted-proxies, the address rate limits count is the last X-Forwarded-For entry of
    a request from that proxy (what nginx's $proxy_add_x_forwarded_for appends); from any other
    peer the header is ignored, so a client cannot pick its own address."""
    config = make_config(tmp_path, register_limit=1, trusted_proxies="127.0.0.2")
    async with serve(config) as app:
        proxy = Client(app.port, local_address="127.0.0.2", recorder=recorder)

        async def register_via(client: Client, name: str, forwarded: str) -> Reply:
            body = {"username": name, "password": PASSWORD}
            return await client.post("/register", body, headers=[("x-forwarded-for", forwarded)])

        assert (await register_via(proxy, "amy", "198.51.100.7, 10.0.0.1")).status == 201
        assert_rate_limited(await register_via(proxy, "bea", "203.0.113.9, 10.0.0.1"))  # same last hop
        assert (await register_via(proxy, "cat", "10.0.0.2")).status == 201  # another client
        assert (await register_via(proxy, "dot", "not an address")).status == 201  # the proxy's own
        assert_rate_limited(await register_via(proxy, "eve", "garbage"))
        spoofer = Client(app.port, local_address="127.0.0.3", recorder=recorder)  # not trusted
        assert (await register_via(spoofer, "fay", "10.0.0.3")).status == 201
        assert_rate_limited(await register_via(spoofer, "gus", "10.0.0.4"))  # still 127.0.0.3


def test_trusted_proxies_must_be_addresses(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--trusted-proxies"):
        make_config(tmp_path, trusted_proxies="127.0.0.1, proxy.example")
