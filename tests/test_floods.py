"""Floods of misbehaving clients against the real server: slow clients hold connections open
while a normal client is served, and a client that pipelines without reading is dropped without
the server buffering its answers. Every wait is bounded by fail_after; nothing asserts on timing."""

from __future__ import annotations

from pathlib import Path

import trio
from trio.testing import MockClock

from chat_trio.app import App
from tests.client import HTTPClient
from tests.helpers import Client, make_config, make_room, register_and_login, send, serve, server_of
from tests.rawhttp import exchange, get, only_error
from tests.ws_client import connect, small_window_stream

# In one process only: these watch the server's own connection count (server_of), the caps are
# counted per process (README), and the frame flood runs on trio's mock clock.
SLOWLORIS = 200
SLOW_BODY = 100


async def refused_503(port: int) -> None:
    """One connection over a cap: answered 503 `unavailable` in the API format, then closed."""
    raw, closed = await exchange(port, get("/healthz"), timeout=10)
    assert closed, raw[:200]
    only_error(raw, 503, "unavailable")

async def wait_for_connections(app: App, count: int) -> None:
    with trio.fail_after(20):
        while server_of(app).open_connections < count:
            await trio.sleep(0.01)


async def test_slow_clients_do_not_starve_a_normal_one(tmp_path: Path) -> None:
    # Long head/body timeouts: the slow clients stay for the whole test instead of being 408'd.
    config = make_config(tmp_path, head_timeout=120.0, body_timeout=120.0, keepalive_timeout=120.0)
    async with serve(config) as app:
        streams: list[trio.SocketStream] = []
        try:
            with trio.fail_after(30):
                for i in range(SLOWLORIS):  # half a head, never finished
                    stream = await trio.open_tcp_stream("127.0.0.1", app.port)
                    await stream.send_all(b"GET /healthz?slow=%d HTTP/1.1\r\nHost: te" % i)
                    streams.append(stream)
                for _ in range(SLOW_BODY):  # a full head, a few body bytes, then silence
                    stream = await trio.open_tcp_stream("127.0.0.1", app.port)
                    await stream.send_all(b"POST /register HTTP/1.1\r\nHost: test\r\nContent-Type: "
                                          b"application/json\r\nContent-Length: 1000\r\n\r\n{\"us")
                    streams.append(stream)
            await wait_for_connections(app, SLOWLORIS + SLOW_BODY)

            client = HTTPClient(app.port)
            answered = 0
            with trio.fail_after(30):
                token, _ = await register_and_login(client, "normal")
                room = await make_room(client, token, "busy")
                answered += 3
                for i in range(47):
                    if i % 3 == 0:
                        reply = await client.get("/healthz")
                    elif i % 3 == 1:
                        reply = await send(client, token, room["id"], f"hello {i}")
                    else:
                        reply = await client.get(f"/rooms/{room['id']}/messages", token=token)
                    assert reply.status in (200, 201), reply.body
                    answered += 1
            await client.aclose()
            assert answered == 50
            # The slow clients were held open all along (none was dropped to make room).
            assert server_of(app).open_connections >= SLOWLORIS + SLOW_BODY
        finally:
            for stream in streams:
                await stream.aclose()
        with trio.fail_after(10):
            while server_of(app).open_connections:
                await trio.sleep(0.01)


async def test_pipelining_client_that_never_reads_is_dropped_while_others_are_served(tmp_path: Path) -> None:
    """A peer pipelines requests with big answers and never reads. The server answers in order,
    so once the socket buffers are full it stops reading that peer's requests (nothing more is
    buffered in the server) and after send_timeout drops it; other clients are served meanwhile."""
    config = make_config(tmp_path, send_timeout=1.0, max_requests_per_connection=10**6)
    async with serve(config) as app:
        request = b"GET /openapi.json HTTP/1.1\r\nHost: test\r\n\r\n"  # ~20 KB answers
        stream = await small_window_stream(app.port)
        pushed = 0
        dropped = trio.Event()

        async def flood() -> None:
            nonlocal pushed
            try:
                while True:
                    await stream.send_all(request * 100)
                    pushed += len(request) * 100
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                dropped.set()

        served = 0
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                client = HTTPClient(app.port)
                while not dropped.is_set():
                    reply = await client.get("/healthz")
                    assert reply.status == 200
                    served += 1
                    await trio.sleep(0.01)
                await client.aclose()
        await stream.aclose()
        assert served > 0
        # What the peer could push before the server stopped reading is what the kernel buffers
        # hold (a few MB on loopback) plus one read of the server: bounded, not "everything".
        assert pushed < 64 * 1024 * 1024, pushed
        with trio.fail_after(10):
            while server_of(app).open_connections:
                await trio.sleep(0.01)


async def test_websocket_frame_flood_is_rate_limited_and_the_socket_stays_open(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    """Frames beyond ws_rate (burst 2 x rate) answer `error` `rate_limited` and are not processed;
    the socket stays open and is served again once the bucket refills."""
    mock_clock.rate = 1.0
    with trio.fail_after(30 + 10):  # 30 s of real time, plus the jumps
        async with serve(make_config(tmp_path, ws_rate=5.0)) as app:
            client = HTTPClient(app.port)
            token, _ = await register_and_login(client, "flooder")
            room = await make_room(client, token, "flood")
            async with connect(app.port, token) as ws:
                for i in range(40):
                    await ws.send({"type": "send", "room_id": room["id"], "text": f"flood {i}", "ref": i})
                kinds: dict[str, int] = {}
                with trio.fail_after(10):
                    while sum(kinds.values()) < 40:
                        frame = await ws.recv()
                        kind = frame["type"] if frame["type"] != "error" else frame["code"]
                        kinds[kind] = kinds.get(kind, 0) + 1
                assert set(kinds) == {"ack", "rate_limited"}, kinds
                assert 10 <= kinds["ack"] < 40, kinds  # the burst, plus what refilled meanwhile
                # Only the acknowledged sends happened.
                history = await client.get(f"/rooms/{room['id']}/messages?limit=100", token=token)
                assert len(history.json["messages"]) == kinds["ack"]
                with trio.fail_after(10):  # refilled: served again on the same socket
                    while True:
                        await ws.send({"type": "ping"})
                        if (await ws.recv())["type"] == "pong":
                            break
                        mock_clock.jump(0.2)  # the bucket refills on the server's (trio's) clock
            await client.aclose()


async def test_connection_flood_beyond_the_cap_is_refused_and_held_ones_keep_working(tmp_path: Path) -> None:
    """300 clients connect at once to a server capped at 50 connections: the connections it holds
    stay usable, every other one gets 503 and is closed, and once the flood is gone new clients
    are served again."""
    cap, flood = 50, 300
    async with serve(make_config(tmp_path, max_connections=cap, keepalive_timeout=120.0)) as app:
        held = [HTTPClient(app.port) for _ in range(cap)]
        with trio.fail_after(20):
            for client in held:
                assert (await client.get("/healthz")).status == 200  # each holds a slot
        refused = 0

        async def intruder() -> None:
            nonlocal refused
            await refused_503(app.port)
            refused += 1

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(flood):
                    nursery.start_soon(intruder)
        assert refused == flood
        with trio.fail_after(20):
            for client in held:  # the flood took nothing from the held connections
                assert (await client.get("/healthz")).status == 200
            for client in held:
                await client.aclose()
            while server_of(app).open_connections:
                await trio.sleep(0.01)
            fresh = HTTPClient(app.port)
            assert (await fresh.get("/healthz")).status == 200
            await fresh.aclose()


async def test_one_address_flooding_connections_takes_only_its_own_allowance(tmp_path: Path) -> None:
    """One address holds its whole allowance and floods more connections at once: every extra
    one is refused 503, another address is served all along, and when the flood is gone the
    server holds no slot for it."""
    allowance, flood = 40, 200
    config = make_config(tmp_path, max_connections_per_address=allowance, keepalive_timeout=120.0)
    async with serve(config) as app:
        held = [Client(app.port, local_address="127.0.0.1") for _ in range(allowance)]
        with trio.fail_after(20):
            for client in held:
                assert (await client.get("/healthz")).status == 200
        refused = served = 0

        async def intruder() -> None:
            nonlocal refused
            await refused_503(app.port)
            refused += 1

        async def bystander() -> None:
            nonlocal served
            client = Client(app.port, local_address="127.0.0.2")
            for _ in range(20):
                assert (await client.get("/healthz")).status == 200
                served += 1
            await client.aclose()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bystander)
                for _ in range(flood):
                    nursery.start_soon(intruder)
        assert (refused, served) == (flood, 20)
        with trio.fail_after(20):
            for client in held:
                assert (await client.get("/healthz")).status == 200
                await client.aclose()
            while server_of(app).per_address:
                await trio.sleep(0.01)
