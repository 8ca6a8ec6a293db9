"""Accounts over real HTTP: register, login (with its rate limits), logout, /me, token expiry and
revocation. Every exchange of these tests is recorded and checked for leaked passwords/tokens."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from chat_trio.app import App
from chat_trio.security.logins import BACKOFF_MEMORY
from chat_trio.security.ratelimit import Backoff
from tests.client import Reply
from tests.helpers import (
    CALL_OUTCOME,
    PASSWORD,
    USER_KEYS,
    Client,
    Recorder,
    StartServed,
    assert_error,
    db_rows,
    login,
    make_config,
    parse_time,
    register,
    register_and_login,
    serve,
)
from tests.ws_client import connect


@pytest.fixture
def recorder(request: pytest.FixtureRequest) -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    if request.node.stash.get(CALL_OUTCOME, "") != "skipped":  # e.g. no PostgreSQL here
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


# The login policy's failure limits, the registration limits and the token cap are decided for the
# whole server (by the supervisor, or in the database): their tests are marked and run in every
# mode, on one server per settings and mode (each test its own usernames). The tests on a virtual
# clock need an in-process server, and the per-address `attempts` bucket counts per process.
FAILS = dict(login_fail_limit=3, max_tokens_per_user=3)


def assert_rate_limited(reply: Reply) -> None:
    error = assert_error(reply, 429, "rate_limited")
    millis = error["retry_after_ms"]
    assert isinstance(millis, int) and millis >= 1
    header = int(reply.headers[b"retry-after"])
    assert header >= 1 and header == math.ceil(millis / 1000)


@pytest.mark.workers
async def test_a_stranger_guessing_does_not_lock_the_owner_out(
    shared_served: StartServed, recorder: Recorder
) -> None:
    """Failures count per (username, address): the guesser's address is stopped at that account,
    even with the right password, while the owner and every other address keep signing in."""
    app = await shared_served(**FAILS)
    def client_from(address: str) -> Client:
        return Client(app.port, local_address=address, recorder=recorder)

    owner, stranger = client_from("127.0.0.2"), client_from("127.0.0.3")
    await register(owner, "grace")
    await register(owner, "heidi")
    for _ in range(3):
        assert_error(await stranger.post("/login", {"username": "grace", "password": "wrong-one"}),
                     401, "invalid_credentials")
    assert_rate_limited(await stranger.post("/login", {"username": "grace", "password": PASSWORD}))
    assert_rate_limited(await stranger.post("/login", {"username": "GRACE", "password": "wrong-two"}))
    await login(owner, "grace")  # the owner, from their own address
    await login(client_from("127.0.0.4"), "grace")  # or from a new one
    await login(stranger, "heidi")  # the stranger's address, another account


@pytest.mark.workers
async def test_failed_logins_per_address_are_limited(shared_served: StartServed, recorder: Recorder) -> None:
    app = await shared_served(login_fail_address_limit=3)
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


@pytest.mark.workers
async def test_successful_logins_do_not_count(shared_served: StartServed, recorder: Recorder) -> None:
    app = await shared_served(**FAILS)
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


@pytest.mark.workers
async def test_expired_token_is_401(shared_served: StartServed, recorder: Recorder) -> None:
    app = await shared_served(token_ttl=0.5)
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


@pytest.mark.workers
async def test_registrations_per_address_are_limited(shared_served: StartServed, recorder: Recorder) -> None:
    """Each registration costs a password hash, so an address gets register_limit of them per
    window; refusals (taken names, bad input) are answered before and do not count; other
    addresses are not affected; nothing is created by a refused one."""
    app = await shared_served(register_limit=2, register_window=600.0)
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


@pytest.mark.workers
async def test_behind_a_trusted_proxy_limits_count_the_forwarded_client(
    shared_served: StartServed, recorder: Recorder
) -> None:
    """With --trusted-proxies, the address rate limits count is the last X-Forwarded-For entry of
    a request from that proxy (what nginx's $proxy_add_x_forwarded_for appends); from any other
    peer the header is ignored, so a client cannot pick its own address."""
    app = await shared_served(register_limit=1, trusted_proxies="127.0.0.2")
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


# -- login throttling, backoff and token caps (virtual clock: windows pass by jumping it) ------


def login_body(username: str, password: str = PASSWORD) -> dict[str, str]:
    return {"username": username, "password": password}


async def test_login_401_names_the_bearer_scheme(client: Client) -> None:
    await register(client, "olga")
    for body in (login_body("olga", "wrong-one"), login_body("nobody")):
        reply = await client.post("/login", body)
        assert_error(reply, 401, "invalid_credentials")
        assert reply.headers[b"www-authenticate"] == b'Bearer realm="chat_trio"'


async def test_guessing_from_many_addresses_meets_exponential_backoff_not_a_lock(
    tmp_path: Path, recorder: Recorder, mock_clock: trio.testing.MockClock
) -> None:
    """Past login_backoff_after failures of one username (from addresses that never signed in to
    it), each further failure locks new addresses out for 1 s, then 2 s, 4 s...; the owner's own
    address is never locked, and a success ends the backoff."""
    mock_clock.rate = 1.0
    config = make_config(tmp_path, login_backoff_after=3, keepalive_timeout=3600.0)
    with trio.fail_after(30 + 3):  # 30 s of real time, plus the jumps
        async with serve(config) as app:
            def client_from(address: str) -> Client:
                return Client(app.port, local_address=address, recorder=recorder)

            owner = client_from("127.0.0.2")
            await register(owner, "paul")
            await login(owner, "paul")  # 127.0.0.2 is now one of paul's addresses
            guessers = (client_from(f"127.0.1.{n}") for n in range(1, 100))

            async def guess() -> Reply:
                return await next(guessers).post("/login", login_body("paul", "wrong-one"))

            for _ in range(3):  # free: no address reaches its own limit, no backoff yet
                assert_error(await guess(), 401, "invalid_credentials")
            for lock_ms in (1000, 2000, 4000):
                assert_error(await guess(), 401, "invalid_credentials")  # counted, starts a lock
                refused = await guess()
                assert_rate_limited(refused)
                assert lock_ms - 500 < refused.json["error"]["retry_after_ms"] <= lock_ms
                if lock_ms < 4000:
                    mock_clock.jump(lock_ms / 1000)
            # Locked for 4 s: even the right password from a new address waits...
            assert_rate_limited(await next(guessers).post("/login", login_body("paul")))
            await login(owner, "paul")  # ...but the owner's own address is never locked,
            assert_error(await guess(), 401, "invalid_credentials")  # and a success ends the backoff.


async def test_logins_per_address_are_limited_also_successful_ones(
    tmp_path: Path, recorder: Recorder, mock_clock: trio.testing.MockClock
) -> None:
    """Every login costs a password hash, so each address gets a token bucket of them (valid or
    not); other addresses are not affected."""
    mock_clock.rate = 1.0
    with trio.fail_after(30 + 1):  # 30 s of real time, plus the jump
        async with serve(make_config(tmp_path, login_rate=1.0, login_burst=3)) as app:
            here = Client(app.port, local_address="127.0.0.2", recorder=recorder)
            await register(here, "quinn")
            for _ in range(3):
                await login(here, "quinn")
            assert_rate_limited(await here.post("/login", login_body("quinn")))
            assert_rate_limited(await here.post("/login", login_body("quinn", "wrong-one")))
            await login(Client(app.port, local_address="127.0.0.3", recorder=recorder), "quinn")
            mock_clock.jump(1.0)
            await login(here, "quinn")
            assert_rate_limited(await here.post("/login", login_body("quinn")))


async def test_successful_logins_per_user_are_limited(
    tmp_path: Path, recorder: Recorder, mock_clock: trio.testing.MockClock
) -> None:
    """Each login issues a token row: a user gets login_user_limit of them per window, from any
    address; a stranger's failures do not use them up, and other users are not affected."""
    mock_clock.rate = 1.0
    config = make_config(tmp_path, login_user_limit=3, login_user_window=60.0)
    with trio.fail_after(30 + 60):  # 30 s of real time, plus the jump
        async with serve(config) as app:
            def client_from(address: str) -> Client:
                return Client(app.port, local_address=address, recorder=recorder)

            await register(client_from("127.0.0.2"), "rita")
            await register(client_from("127.0.0.2"), "sam")
            for n in range(3):
                assert_error(await client_from("127.0.0.9").post("/login", login_body("rita", "wrong-one")),
                             401, "invalid_credentials")
                await login(client_from(f"127.0.0.{n + 2}"), "rita")
            assert_rate_limited(await client_from("127.0.0.6").post("/login", login_body("rita")))
            await login(client_from("127.0.0.6"), "sam")
            mock_clock.jump(60.0)
            await login(client_from("127.0.0.6"), "rita")


@pytest.mark.workers
async def test_live_tokens_per_user_are_capped_and_the_oldest_is_revoked_with_its_websockets(
    shared_served: StartServed, recorder: Recorder
) -> None:
    with trio.fail_after(30):
        app = await shared_served(**FAILS)
        config = app.config
        client = Client(app.port, recorder=recorder)
        oldest, user = await register_and_login(client, "tess")
        kept = [await login(client, "tess") for _ in range(2)]
        other, _ = await register_and_login(client, "uma")
        async with connect(app.port, oldest) as ws, connect(app.port, kept[0]) as ws_kept:
            kept.append(await login(client, "tess"))  # the fourth: the oldest goes
            assert await ws.closed() == (4001, [])
            await ws_kept.barrier()
        assert_error(await client.get("/me", token=oldest), 401, "unauthorized")
        for token in (*kept, other):
            assert (await client.get("/me", token=token)).status == 200
        rows = db_rows(config.db, "SELECT count(*) FROM tokens WHERE user_id = ?", user["id"])
        assert rows == [(3,)]
        await client.aclose()


async def test_expired_tokens_are_purged_periodically_and_their_websockets_closed(
    tmp_path: Path, recorder: Recorder, mock_clock: trio.testing.MockClock
) -> None:
    """Token expiry is wall-clock time (it is stored); the purge runs on the server's clock."""
    mock_clock.rate = 1.0
    config = make_config(tmp_path, token_ttl=1.0, token_purge_interval=60.0, keepalive_timeout=3600.0)
    with trio.fail_after(30 + 60):  # 30 s of real time, plus the jump
        async with serve(config) as app:
            client = Client(app.port, recorder=recorder)
            token, _ = await register_and_login(client, "vera")
            async with connect(app.port, token) as ws:
                await ws.barrier()
                await trio.sleep(max(0.0, parse_time(
                    (await client.post("/login", login_body("vera"))).json["expires_at"]) - time.time()))
                # The socket closed at its token's expiry (before any purge): waited for before
                # the clock jumps, since a jump would also cut its close handshake short (1006).
                assert (await ws.closed())[0] == 4001
                assert db_rows(config.db, "SELECT count(*) FROM tokens") == [(2,)]  # expired, not purged
                mock_clock.jump(60.0)
                # The purge runs on a reader and the writer after the jump: wait for its deletes.
                while db_rows(config.db, "SELECT count(*) FROM tokens") != [(0,)]:
                    await trio.sleep(0.05)
            await client.aclose()


async def test_backoff_is_capped_and_forgotten_after_a_quiet_day(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The parts of the backoff the HTTP test cannot wait for: the delay stops doubling at its cap,
    and a username's failures are forgotten after a day without one (virtual time: sleeps are
    instant)."""
    backoff = Backoff(free=2, base=1.0, cap=900.0, memory=BACKOFF_MEMORY)
    waits = []
    with trio.fail_after(3 * BACKOFF_MEMORY):  # virtual seconds: the sleeps below, with room
        for _ in range(14):
            backoff.fail("paul")
            waits.append(backoff.retry_after("paul"))
            await trio.sleep(waits[-1])
        assert waits == pytest.approx([0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900])
        assert backoff.retry_after("other") == 0
        await trio.sleep(BACKOFF_MEMORY + 1)
        backoff.fail("paul")
        assert backoff.retry_after("paul") == 0  # counted from zero again
