"""GET /ws under outside probes: the upgrade handshake checked by the server itself (answers in the
API's error format, slots freed at once), per-user caps (websockets, typing), a token's expiry, the
access log and metrics, and a failing session that must never get HTTP framed onto its stream."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from chat_trio.app import App
from chat_trio.rooms.session import Session
from tests.client import HTTPClient
from tests.helpers import (
    Served,
    StartServed,
    join,
    login,
    make_config,
    make_room,
    register_and_login,
    serve,
)
from tests.rawhttp import exchange, get, only_error, read_until_closed
from tests.ws_client import DEADLINE, connect, raw_handshake, server_frames, upgrade_request, ws_url

# The handshake's checks, the session's refusals, expiry and fan-out hold in every mode: those
# tests are marked and share this module's server of their settings per mode (each user a name of
# its own). The per-user caps count per worker (README), the access log is captured in this
# process and a failing session is patched into it: those run in one process.
SETTINGS = dict(ws_origins="https://x.example", trusted_proxies="127.0.0.2", register_limit=0, login_rate=0)


@pytest.fixture
async def served(shared_served: StartServed) -> Served:
    return await shared_served(**SETTINGS)


def unique(name: str) -> str:
    return f"{name}-{os.urandom(3).hex()}"


def b64(n: int) -> str:
    return base64.b64encode(os.urandom(n)).decode()


def replacing(name: str, value: str) -> dict[str, Any]:
    return dict(drop=(name,), headers=((name, value),))


# name → (request changes, status, code, a word of the message)
REFUSALS: dict[str, tuple[dict[str, Any], int, str, str]] = {
    "key not base64": (replacing("Sec-WebSocket-Key", "no base64"), 400, "bad_request", "Sec-WebSocket-Key"),
    "key of 15 bytes": (replacing("Sec-WebSocket-Key", b64(15)), 400, "bad_request", "Sec-WebSocket-Key"),
    "key of 17 bytes": (replacing("Sec-WebSocket-Key", b64(17)), 400, "bad_request", "Sec-WebSocket-Key"),
    "two keys": (dict(headers=(("Sec-WebSocket-Key", b64(16)),)), 400, "bad_request", "Sec-WebSocket-Key"),
    "no key": (dict(drop=("Sec-WebSocket-Key",)), 400, "bad_request", "Sec-WebSocket-Key"),
    "version 8": (replacing("Sec-WebSocket-Version", "8"), 426, "upgrade_required", "version"),
    "versions 13 and 8": (dict(headers=(("Sec-WebSocket-Version", "8"),)), 426, "upgrade_required",
                          "version"),
    "no version": (dict(drop=("Sec-WebSocket-Version",)), 400, "bad_request", "version"),
    "HTTP/1.0": (dict(version="1.0"), 400, "bad_request", "HTTP/1.1"),
    "Upgrade: h2c": (replacing("Upgrade", "h2c"), 400, "bad_request", "upgrade"),
    "no Connection: Upgrade": (dict(drop=("Connection",)), 400, "bad_request", "upgrade"),
    "Origin of another scheme": (dict(headers=(("Origin", "https://127.0.0.1:{port}"),)),
                                 403, "forbidden", "origin"),
    "Origin of another port": (dict(headers=(("Origin", "http://127.0.0.1"),)), 403, "forbidden", "origin"),
    "Origin null": (dict(headers=(("Origin", "null"),)), 403, "forbidden", "origin"),
}


def refused_request(port: int, name: str) -> bytes:
    changes = dict(REFUSALS[name][0])
    changes["headers"] = tuple((k, v.format(port=port)) for k, v in changes.get("headers", ()))
    return upgrade_request(port, **changes)


@pytest.mark.workers
@pytest.mark.parametrize("name", list(REFUSALS))
async def test_upgrade_refusals_are_api_errors_that_close(served: Served, name: str) -> None:
    """Each refusal is the server's own answer: a reason phrase, the API's error body, the
    connection closed at once (what follows the head may be websocket frames)."""
    _, status, code, word = REFUSALS[name]
    raw, closed = await exchange(served.port, refused_request(served.port, name), timeout=DEADLINE)
    assert closed
    phrase = {400: b"Bad Request", 403: b"Forbidden", 426: b"Upgrade Required"}[status]
    assert raw.startswith(b"HTTP/1.1 %d %s\r\n" % (status, phrase)), raw[:80]
    response = only_error(raw, status, code)
    assert word.lower() in response.json["error"]["message"].lower()
    assert b"sec-websocket-accept" not in raw.lower()
    if "version" in name:  # the one it speaks (RFC 6455 §4.2.2)
        assert response.headers[b"sec-websocket-version"] == b"13"
    if status == 426:  # and the protocol to upgrade to (RFC 9110 §15.5.22)
        assert response.headers[b"upgrade"] == b"websocket"


async def test_refused_upgrades_free_their_slots_at_once(tmp_path: Path) -> None:
    """With two connection slots, refused upgrades one after another each get their own answer,
    never the over-cap 503, and a plain request right after them is served."""
    async with serve(make_config(tmp_path, max_connections=2)) as app:
        with trio.fail_after(15):
            for _ in range(3):
                for name in ("key not base64", "no key", "version 8", "Origin of another port"):
                    raw, closed = await exchange(app.port, refused_request(app.port, name))
                    assert closed
                    only_error(raw, REFUSALS[name][1])
            raw, _ = await exchange(app.port, get("/healthz", "Connection: close"))
            assert raw.startswith(b"HTTP/1.1 200 "), raw[:80]


@pytest.mark.workers
@pytest.mark.parametrize(
    ("origin", "proto", "allowed"),
    [
        ("HTTP://127.0.0.1:{port}", None, True),  # scheme and host compare case-insensitively
        ("https://x.example:443", None, True),  # listed as https://x.example: same default port
        ("http://x.example", None, False),  # listed with https only
        ("https://127.0.0.1:{port}", "https", True),  # a trusted TLS proxy says the scheme
        ("http://127.0.0.1:{port}", "https", False),
        ("http://127.0.0.1:{port}/path", None, False),  # not an origin
        ("http://user@127.0.0.1:{port}", None, False),
    ],
)
async def test_origin_compares_scheme_host_and_port(
    served: Served, origin: str, proto: str | None, allowed: bool
) -> None:
    """With ws_origins="https://x.example" and 127.0.0.2 a trusted proxy (SETTINGS)."""
    client = HTTPClient(served.port)
    token, _ = await register_and_login(client, unique("alice"))
    await client.aclose()
    headers = [("Authorization", f"Bearer {token}"), ("Origin", origin.format(port=served.port))]
    if proto is not None:
        headers.append(("X-Forwarded-Proto", proto))
    stream, status, head, _ = await raw_handshake(served.port, headers=headers)
    await stream.aclose()
    assert status == (101 if allowed else 403), head


# -- the session -----------------------------------------------------------------------------------


@pytest.mark.workers
async def test_binary_first_frame_is_not_auth(served: Served) -> None:
    client = HTTPClient(served.port)
    token, _ = await register_and_login(client, unique("alice"))
    await client.aclose()
    async with connect(served.port, hello=False) as ws:
        await ws.conn.send_message(orjson.dumps({"type": "auth", "token": token}))
        assert await ws.closed() == (1008, [])


@pytest.mark.workers
async def test_socket_closes_4001_when_its_token_expires(shared_served: StartServed) -> None:
    app = await shared_served(**SETTINGS, token_ttl=1.5)
    client = HTTPClient(app.port)
    token, _ = await register_and_login(client, unique("alice"))
    async with connect(app.port, token) as by_header, \
            connect(app.port, token, auth="frame") as by_frame:
        await by_header.barrier()
        await by_frame.barrier()
        assert await by_header.closed(timeout=DEADLINE) == (4001, [])
        assert await by_frame.closed(timeout=DEADLINE) == (4001, [])
    assert (await client.get("/me", token=token)).status == 401
    await client.aclose()


async def _close_reason(port: int, token: str) -> tuple[int, str | None]:
    """Open a socket that authenticates with its first frame; the code and reason it is closed with."""
    async with open_websocket_url(ws_url(port)) as conn:
        await conn.send_message(orjson.dumps({"type": "auth", "token": token}).decode())
        with trio.fail_after(DEADLINE):
            try:
                while True:
                    await conn.get_message()
            except ConnectionClosed as exc:
                assert exc.reason is not None
                return int(exc.reason.code), exc.reason.reason


async def test_websockets_per_user_are_capped(tmp_path: Path) -> None:
    async with serve(make_config(tmp_path, max_websockets_per_user=2)) as app:
        client = HTTPClient(app.port)
        ta, _ = await register_and_login(client, "alice")
        tb, _ = await register_and_login(client, "bobby")
        ta2 = await login(client, "alice")  # the cap is per user, not per token
        async with connect(app.port, ta) as first, connect(app.port, ta2, auth="frame"):
            # one more with the token in the header: refused before the upgrade
            stream, status, head, rest = await raw_handshake(
                app.port, headers=[("Authorization", f"Bearer {ta}")])
            received = [rest]
            await read_until_closed(stream, received)
            await stream.aclose()
            assert status == 429, head
            response = only_error(head + b"\r\n\r\n" + b"".join(received), 429, "rate_limited")
            assert "websockets" in response.json["error"]["message"]
            assert response.json["error"]["retry_after_ms"] > 0 and b"retry-after" in response.headers
            # one more authenticating with its first frame: upgraded, then closed 1008
            assert await _close_reason(app.port, ta2) == (1008, "too many websockets")
            async with connect(app.port, tb) as other:  # other users are not affected
                await other.barrier()
            await first.barrier()
        # closing one gives its place back (the server notices the close a moment later)
        with trio.fail_after(DEADLINE):
            while True:
                stream, status, _, _ = await raw_handshake(
                    app.port, headers=[("Authorization", f"Bearer {ta}")])
                await stream.aclose()
                if status == 101:
                    break
                assert status == 429
                await trio.sleep(0.02)
        await client.aclose()


async def test_typing_is_capped_per_user_across_their_sockets(tmp_path: Path) -> None:
    async with serve(make_config(tmp_path, ws_typing_rate=0.1, ws_typing_burst=3)) as app:
        client = HTTPClient(app.port)
        ta, _ = await register_and_login(client, "alice")
        tb, _ = await register_and_login(client, "bobby")
        room = await make_room(client, ta, "typing")
        await join(client, tb, room["id"])
        async with connect(app.port, tb) as bob, connect(app.port, ta) as a1, \
                connect(app.port, ta) as a2, connect(app.port, ta) as a3:
            await bob.subscribe(room["id"])
            for ws in (a1, a2, a3):
                for _ in range(6):
                    await ws.send({"type": "typing", "room_id": room["id"]})
            for ws in (a1, a2, a3):
                await ws.barrier()  # every typing frame has been handled
            await bob.send({"type": "ping"})
            typing = 0
            while (await bob.recv())["type"] != "pong":
                typing += 1
        assert 1 <= typing <= 4  # the burst of 3, and at most one more refilled meanwhile
        await client.aclose()


# -- accounting and ownership of the stream --------------------------------------------------------


def _ws_requests(metrics: str) -> float:
    """Requests counted for the /ws route in a Prometheus scrape (whatever the status)."""
    total = 0.0
    for line in metrics.splitlines():
        name = line.split("{", 1)[0]  # counters may be exposed with the _total suffix
        if name in ("chat_trio_http_requests", "chat_trio_http_requests_total") and 'route="/ws"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_ws_requests_are_logged_and_counted(
    app: App, client: HTTPClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chat_trio.access")
    token, _ = await register_and_login(client, "alice")
    before = _ws_requests((await client.get("/metrics")).body.decode())
    async with connect(app.port, token) as ws:
        await ws.barrier()
    raw, _ = await exchange(app.port, refused_request(app.port, "no key"))
    only_error(raw, 400)
    with trio.fail_after(DEADLINE):
        while len([r for r in caplog.records if getattr(r, "path", None) == "/ws"]) < 2:
            await trio.sleep(0.01)
    logged = sorted(r.status for r in caplog.records if getattr(r, "path", None) == "/ws")  # type: ignore[attr-defined]
    assert logged == [101, 400]
    assert _ws_requests((await client.get("/metrics")).body.decode()) == before + 2


async def _boom(*_: Any, **__: Any) -> None:
    raise RuntimeError("a bug in the websocket handler")


@pytest.mark.parametrize("where", ["_authenticate", "run"])
async def test_a_failing_session_never_gets_http_on_its_stream(
    app: App, client: HTTPClient, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A bug after the upgrade (inside the session, or anywhere in the handler once it took the
    stream) ends the socket; no HTTP 500 is framed onto it, and the server carries on."""
    monkeypatch.setattr(Session, where, _boom)
    token, _ = await register_and_login(client, "alice")
    stream, status, head, rest = await raw_handshake(app.port, headers=[("Authorization", f"Bearer {token}")])
    assert status == 101, head
    received = [rest]
    with trio.fail_after(DEADLINE):
        await read_until_closed(stream, received)
    await stream.aclose()
    data = b"".join(received)
    assert b"HTTP/1.1" not in data, data
    frames, extra = server_frames(data)
    assert not extra and all(opcode == 0x8 for opcode, _ in frames), frames
    if where == "_authenticate":  # the session itself closes with 1011
        assert [payload[:2] for _, payload in frames] == [b"\x03\xf3"]
    assert (await client.get("/healthz")).status == 200


@pytest.mark.workers
async def test_ping_with_unknown_field_is_refused(served: Served) -> None:
    client = HTTPClient(served.port)
    token, _ = await register_and_login(client, unique("alice"))
    await client.aclose()
    async with connect(served.port, token) as ws:
        error = await ws.request({"type": "ping", "ref": 7, "colour": "red"}, "error")
        assert (error["code"], error["ref"]) == ("validation_failed", 7)
        assert "colour" in error["message"]
        await ws.barrier()


@pytest.mark.workers
async def test_fan_out_and_library_writes_share_one_lock(shared_served: StartServed) -> None:
    """The server's pings (trio-websocket's own writes) interleave with fan-out writes at a high
    rate; the client's parser sees only whole frames, every message once and in order."""
    app = await shared_served(**SETTINGS, heartbeat_s=0.05, send_rate=0, ws_rate=0)
    client = HTTPClient(app.port)
    ta, _ = await register_and_login(client, unique("alice"))
    room = await make_room(client, ta, unique("busy"))
    async with connect(app.port, ta) as ws:
        await ws.subscribe(room["id"])
        for i in range(100):
            await ws.conn.send_message(orjson.dumps(
                {"type": "send", "room_id": room["id"], "text": f"m{i}"}).decode())
        got: dict[str, list[int]] = {"message": [], "ack": []}
        with trio.fail_after(10):
            while min(map(len, got.values())) < 100:
                frame = await ws.recv()
                got[frame["type"]].append(frame["message"]["seq"])
        assert got["message"] == got["ack"] == list(range(1, 101))
        await ws.barrier()
    await client.aclose()

