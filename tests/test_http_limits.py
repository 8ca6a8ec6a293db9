"""Every HTTP limit with a small configured value, over real sockets; plus fd exhaustion and
graceful shutdown of a real `python -m chat_trio` process."""

from __future__ import annotations

import errno
import signal
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from tests.client import HTTPClient
from tests.helpers import Client, StartServed, StartServer
from tests.rawhttp import RawConn, assert_error_body, exchange, get, only_error, parse_responses, statuses
from tests.server_process import ServerProcess

# The size, framing and per-connection limits hold in every mode (each worker's HTTP server takes
# the supervisor's settings): those tests are marked and share one server per mode with these
# limits, which none of them reaches but the one it tests. The caps on connections count per
# process (README), the slow-client tests run on virtual time, which only an in-process server
# keeps, and the tests of a real process signal or rlimit it: those run in one process.
LIMITS = dict(max_head_bytes=1024, head_timeout=5.0, max_body_bytes=100, body_timeout=30.0,
              max_requests_per_connection=3)


async def limited(shared_served: StartServed) -> int:
    """The port of this module's server with LIMITS, in the test's mode."""
    return (await shared_served(**LIMITS)).port


def padded_head(size: int, *, complete: bool = True) -> bytes:
    """A GET /healthz head of exactly `size` bytes (or its first `size` bytes, unterminated)."""
    start = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Pad: "
    end = b"\r\n\r\n" if complete else b""
    return start + b"a" * (size - len(start) - len(end)) + end


# -- head size ---------------------------------------------------------------------------------


@pytest.mark.workers
@pytest.mark.parametrize("size", [2048, 200_000])
async def test_oversize_head_in_one_write_is_431(shared_served: StartServed, size: int) -> None:
    port = await limited(shared_served)
    head = padded_head(size)
    raw, closed = await exchange(port, head, timeout=3)  # one send_all of the whole head
    assert closed
    only_error(raw, 431, "headers_too_large")


@pytest.mark.workers
async def test_head_just_under_the_limit_is_served(shared_served: StartServed) -> None:
    port = await limited(shared_served)
    raw, _ = await exchange(port, padded_head(900)[:-2] + b"Connection: close\r\n\r\n", timeout=3)
    assert statuses(raw) == [200]


@pytest.mark.workers
async def test_oversize_head_trickled_is_431(shared_served: StartServed) -> None:
    port = await limited(shared_served)
    head = padded_head(3000, complete=False)  # never finished: only the size can end it early
    conn = await RawConn.open(port)
    for i in range(0, len(head), 100):
        try:
            await conn.send(head[i:i + 100])
        except trio.BrokenResourceError:
            break  # the server may answer and close before we are done
        await trio.sleep(0.005)
    reply = await conn.read_response(timeout=3)
    assert reply.status == 431
    assert_error_body(reply, "headers_too_large")
    await conn.read_until_closed(timeout=3)
    await conn.aclose()


# -- body size ---------------------------------------------------------------------------------


@pytest.mark.workers
async def test_content_length_over_limit_is_413_before_the_body(
    shared_served: StartServed
) -> None:
    port = await limited(shared_served)
    conn = await RawConn.open(port)
    await conn.send(b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 101\r\n"
                    b"Content-Type: application/json\r\n\r\n")
    # Only the head was sent: waiting for the body would mean a 408 after 30 s instead.
    reply = await conn.read_response(timeout=5)
    assert reply.status == 413
    assert reply.headers[b"connection"] == b"close"
    assert_error_body(reply, "payload_too_large")
    assert await conn.read_until_closed(timeout=5) == b""
    await conn.aclose()


@pytest.mark.workers
async def test_content_length_over_limit_with_expect_continue(shared_served: StartServed) -> None:
    port = await limited(shared_served)
    raw, closed = await exchange(
        port, b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
        timeout=5)
    assert closed
    assert statuses(raw) == [413]  # no 100 Continue first


@pytest.mark.workers
async def test_expect_continue_within_the_limit(shared_served: StartServed) -> None:
    port = await limited(shared_served)
    conn = await RawConn.open(port)
    await conn.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n"
                    b"Expect: 100-continue\r\n\r\n")
    assert (await conn.read_response()).status == 100
    await conn.send(b"0123456789")
    assert (await conn.read_response()).status == 200
    await conn.aclose()


@pytest.mark.workers
async def test_body_at_the_limit_is_read(shared_served: StartServed) -> None:
    port = await limited(shared_served)
    raw, _ = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n"
                                  b"Connection: close\r\n\r\n" + b"x" * 100, timeout=3)
    assert statuses(raw) == [200]


def _chunked(total: int, piece: int = 30) -> bytes:
    out = b""
    while total > 0:
        n = min(piece, total)
        out += b"%x\r\n%s\r\n" % (n, b"x" * n)
        total -= n
    return out + b"0\r\n\r\n"


@pytest.mark.workers
async def test_chunked_body_over_limit_is_413(shared_served: StartServed) -> None:
    port = await limited(shared_served)
    raw, closed = await exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(130),
        timeout=3)
    assert closed
    only_error(raw, 413, "payload_too_large")


@pytest.mark.workers
async def test_chunked_body_under_limit_is_read(shared_served: StartServed) -> None:
    port = await limited(shared_served)
    raw, _ = await exchange(
        port,
        b"GET /healthz HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + _chunked(100), timeout=3)
    assert statuses(raw) == [200]


@pytest.mark.workers
async def test_huge_chunk_size_is_413_as_data_arrives(shared_served: StartServed) -> None:
    port = await limited(shared_served)
    conn = await RawConn.open(port)
    await conn.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"ffffffff\r\n" + b"x" * 200)
    reply = await conn.read_response(timeout=5)
    assert reply.status == 413
    await conn.aclose()


# -- slow clients ------------------------------------------------------------------------------
# The server's deadlines run on trio's clock and nothing here waits on a thread once the server
# is up, so these run on virtual time (autojump_clock): each wait is as long as in real time,
# but costs nothing. The client that does not read (below) needs the kernel's buffers to fill,
# which they only do in real time.


async def test_head_that_never_completes_is_408(start_server: StartServer, autojump_clock: MockClock) -> None:
    port = (await start_server(head_timeout=0.3)).port
    raw, closed = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: test\r\n", timeout=5)
    assert closed
    only_error(raw, 408, "request_timeout")


async def test_head_trickled_byte_by_byte_is_408(
    start_server: StartServer, autojump_clock: MockClock
) -> None:
    """The head deadline is for the whole head, not per read: a byte every 50 ms keeps every
    single read short but must not keep the connection forever."""
    port = (await start_server(head_timeout=0.3, max_head_bytes=100_000)).port
    conn = await RawConn.open(port)

    async def trickle() -> None:
        await conn.send(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        while True:
            await trio.sleep(0.05)
            try:
                await conn.send(b"a")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async with trio.open_nursery() as inner:
        inner.start_soon(trickle)
        reply = await conn.read_response(timeout=10)
        inner.cancel_scope.cancel()
    assert reply.status == 408
    await conn.aclose()


async def test_idle_body_is_408(start_server: StartServer, autojump_clock: MockClock) -> None:
    port = (await start_server(body_timeout=0.3, head_timeout=30)).port
    raw, closed = await exchange(
        port, b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nabc", timeout=5)
    assert closed
    only_error(raw, 408, "request_timeout")


async def test_idle_keepalive_connection_is_closed_silently(
    start_server: StartServer, autojump_clock: MockClock
) -> None:
    port = (await start_server(keepalive_timeout=0.3)).port
    conn = await RawConn.open(port)
    await conn.send(get("/healthz"))
    assert (await conn.read_response()).status == 200
    assert await conn.read_until_closed(timeout=5) == b""  # EOF, no 408 or other bytes
    await conn.aclose()


async def test_connection_that_never_sends_is_closed_silently(
    start_server: StartServer, autojump_clock: MockClock
) -> None:
    port = (await start_server(keepalive_timeout=0.3)).port
    raw, closed = await exchange(port, b"", timeout=5)
    assert closed
    assert raw == b""


@pytest.mark.workers
async def test_client_that_does_not_read_is_dropped(shared_served: StartServed) -> None:
    """A peer that pipelines requests but never reads the answers fills the socket buffers; the
    server gives up after send_timeout instead of holding the connection forever."""
    port = (await shared_served(send_timeout=0.3, max_requests_per_connection=10**6)).port
    conn = await RawConn.open(port)
    request = get("/does-not-exist/" + "x" * 2000)  # big 404 answers fill the buffers quickly
    with trio.fail_after(20):
        while True:  # keep sending until the server stops reading and closes
            try:
                await conn.send(request * 50)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            # Without reading, the server's replies pile up; once it gives up, our sends fail.
    await conn.aclose()
    raw, _ = await exchange(port, get("/healthz", "Connection: close"))
    assert statuses(raw) == [200]


# -- per-connection and global caps ------------------------------------------------------------
# (--max-connections, like the per-address cap, counts per process: one process here.)


@pytest.mark.workers
async def test_max_requests_per_connection(shared_served: StartServed) -> None:
    port = await limited(shared_served)
    raw, closed = await exchange(port, get("/healthz") * 5, timeout=5)
    assert closed
    responses, rest = parse_responses(raw)
    assert [r.status for r in responses] == [200, 200, 200]
    assert rest == b""
    assert [r.headers.get(b"connection") for r in responses] == [None, None, b"close"]


@pytest.mark.workers
async def test_max_requests_per_connection_one_at_a_time(shared_served: StartServed) -> None:
    port = await limited(shared_served)
    conn = await RawConn.open(port)
    for expected in (None, None, b"close"):
        await conn.send(get("/healthz"))
        reply = await conn.read_response()
        assert reply.status == 200
        assert reply.headers.get(b"connection") == expected
    assert await conn.read_until_closed() == b""
    await conn.aclose()


async def test_max_connections(start_server: StartServer) -> None:
    port = (await start_server(max_connections=2)).port
    first, second = HTTPClient(port), HTTPClient(port)
    assert (await first.get("/healthz")).status == 200
    assert (await second.get("/healthz")).status == 200

    raw, closed = await exchange(port, b"", timeout=5)  # the third: refused without asking
    assert closed
    refused = only_error(raw, 503, "unavailable")
    assert refused.headers[b"connection"] == b"close"

    raw, closed = await exchange(port, get("/healthz"), timeout=5)  # also when it sends a request
    assert closed
    assert statuses(raw) == [503]

    # The first two still work on their own connections.
    first_stream = first.stream
    assert (await first.get("/healthz")).status == 200
    assert (await second.get("/healthz")).status == 200
    assert first.stream is first_stream

    # Once one closes, its slot is free again.
    await first.aclose()
    with trio.fail_after(5):
        while True:
            raw, _ = await exchange(port, get("/healthz", "Connection: close"), timeout=5)
            if statuses(raw) == [200]:
                break
            await trio.sleep(0.01)
    await second.aclose()


@pytest.mark.workers
async def test_many_concurrent_keepalive_clients(shared_served: StartServed) -> None:
    port = await limited(shared_served)
    answered = 0

    async def one(i: int) -> None:
        nonlocal answered
        client = HTTPClient(port)
        try:
            for j in range(3):
                reply = await client.get(f"/healthz?c={i}&r={j}")
                assert reply.status == 200
                assert reply.json == {"status": "ok"}
                answered += 1
        finally:
            await client.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as clients:
            for i in range(300):
                clients.start_soon(one, i)
    assert answered == 900


# -- a real process: fd exhaustion and shutdown ------------------------------------------------


async def test_fd_exhaustion_does_not_kill_the_server(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "--keepalive-timeout", "60", fd_limit=128)
    streams: list[trio.SocketStream] = []
    try:
        port = await server.start()
        with trio.fail_after(30):
            for _ in range(250):  # more connections than the server has descriptors
                try:
                    streams.append(await trio.open_tcp_stream("127.0.0.1", port))
                except OSError as exc:  # a full backlog may refuse some: fine
                    assert exc.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT), exc
            await server.wait_for_log("accept failed")
        assert server.proc.poll() is None, server.log()
        for stream in streams:
            await stream.aclose()
        streams.clear()
        with trio.fail_after(20):
            while True:
                try:
                    raw, _ = await exchange(port, get("/healthz", "Connection: close"), timeout=2)
                except OSError:
                    raw = b""
                if statuses(raw) == [200]:
                    break
                await trio.sleep(0.05)
        assert server.proc.poll() is None, server.log()
    finally:
        for stream in streams:
            await stream.aclose()
        server.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_with_idle_keepalive_connection_exits_cleanly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    server = ServerProcess(tmp_path, "--keepalive-timeout", "60", "--shutdown-grace", "5")
    try:
        port = await server.start()
        idle = await RawConn.open(port)
        await idle.send(get("/healthz"))
        assert (await idle.read_response()).status == 200
        server.signal(signum)
        assert await server.wait(timeout=10) == 0, server.log()
        assert await idle.read_until_closed() == b""
        await idle.aclose()
        log = server.log()
        assert f"{signum.name}: shutting down" in log
        assert "stopped" in log
        assert "Traceback" not in log
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)
    finally:
        server.kill()


async def test_shutdown_refuses_new_connections_and_finishes_in_flight_request(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "--keepalive-timeout", "60", "--shutdown-grace", "10",
                           "--body-timeout", "30")
    try:
        port = await server.start()
        busy = await RawConn.open(port)
        await busy.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n01234")
        await trio.sleep(0.1)  # let the server start reading the body (no assertion on timing)
        server.signal(signal.SIGTERM)
        await server.wait_for_log("SIGTERM: shutting down")
        # New connections are refused while the in-flight request still holds the process up.
        with trio.fail_after(5):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    break
                await stream.aclose()
                await trio.sleep(0.01)
        assert server.proc.poll() is None, server.log()
        # The in-flight request finishes, its answer says the connection closes, then it closes.
        await busy.send(b"56789")
        reply = await busy.read_response()
        assert reply.status == 200
        assert reply.headers[b"connection"] == b"close"
        assert await busy.read_until_closed() == b""
        await busy.aclose()
        assert await server.wait(timeout=10) == 0, server.log()
    finally:
        server.kill()


async def test_shutdown_grace_cancels_a_stuck_request(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "--shutdown-grace", "0.3", "--body-timeout", "60")
    try:
        port = await server.start()
        stuck = await RawConn.open(port)
        await stuck.send(b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n01234")
        await trio.sleep(0.1)
        server.signal(signal.SIGTERM)
        assert await server.wait(timeout=10) == 0, server.log()
        await stuck.read_until_closed()
        await stuck.aclose()
    finally:
        server.kill()


# -- minimum body rate -------------------------------------------------------------------------


async def _trickle(conn: RawConn, data: bytes, pause: float) -> None:
    """Send `data` a piece at a time, each pause well inside body_timeout, until the server closes."""
    try:
        for i in range(len(data)):
            await conn.send(data[i:i + 1])
            await trio.sleep(pause)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def test_body_slower_than_the_minimum_rate_is_408(
    nursery: trio.Nursery, start_server: StartServer, autojump_clock: MockClock
) -> None:
    """A byte every 0.2 s never trips the 1 s idle timeout, but 1000 bytes at 1000 B/s get
    1 + 1000/1000 = 2 s in all, not the 200 s the trickle would take."""
    port = (await start_server(body_timeout=1.0, min_body_rate=1000.0)).port
    conn = await RawConn.open(port)
    await conn.send(b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n")
    started = trio.current_time()
    nursery.start_soon(_trickle, conn, b"x" * 1000, 0.2)
    reply = await conn.read_response(timeout=10)
    assert reply.status == 408
    assert_error_body(reply, "request_timeout")
    assert "bytes/s" in reply.json["error"]["message"]
    assert 1.8 <= trio.current_time() - started < 6
    await conn.aclose()


async def test_chunked_body_slower_than_the_minimum_rate_is_408(
    nursery: trio.Nursery, start_server: StartServer, autojump_clock: MockClock
) -> None:
    """Without a Content-Length the body earns time as it arrives: 1 s + what came / 1000 B/s."""
    port = (await start_server(body_timeout=1.0, min_body_rate=1000.0)).port
    conn = await RawConn.open(port)
    await conn.send(b"POST /healthz HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
    nursery.start_soon(_trickle, conn, b"1\r\nx\r\n" * 1000, 0.05)
    reply = await conn.read_response(timeout=10)
    assert reply.status == 408
    assert_error_body(reply, "request_timeout")
    await conn.aclose()


async def test_body_at_the_minimum_rate_is_read(start_server: StartServer, autojump_clock: MockClock) -> None:
    port = (await start_server(body_timeout=1.0, min_body_rate=1000.0)).port
    conn = await RawConn.open(port)
    await conn.send(b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 2000\r\n\r\n" + b"x" * 1000)
    await trio.sleep(0.8)  # 2000 bytes have 1 + 2 s; this one is well within
    await conn.send(b"x" * 1000)
    reply = await conn.read_response(timeout=5)
    assert reply.status == 405  # the body was read in full, then routed
    await conn.aclose()


# -- connections per client address ------------------------------------------------------------


async def test_one_address_cannot_take_every_connection(start_server: StartServer) -> None:
    """An address holding its whole allowance gets 503 for one more; other addresses keep being
    served, and a slot it frees is its own again."""
    port = (await start_server(max_connections_per_address=3, keepalive_timeout=60.0)).port
    held = [Client(port, local_address="127.0.0.1") for _ in range(3)]
    with trio.fail_after(10):
        for client in held:
            assert (await client.get("/healthz")).status == 200
        raw, closed = await exchange(port, get("/healthz"), timeout=5)
        assert closed
        refused = only_error(raw, 503, "unavailable")
        assert "address" in refused.json["error"]["message"]
        assert refused.headers[b"retry-after"] == b"1"

        other = Client(port, local_address="127.0.0.2")
        assert (await other.get("/healthz")).status == 200
        for client in held:
            assert (await client.get("/healthz")).status == 200
        await other.aclose()

        await held.pop().aclose()
        while statuses((await exchange(port, get("/healthz", "Connection: close"), timeout=5))[0]) != [200]:
            await trio.sleep(0.01)
        for client in held:
            await client.aclose()


async def test_connections_through_a_trusted_proxy_count_for_the_client_it_names(
    start_server: StartServer
) -> None:
    """Behind a proxy every connection comes from its address; the client its requests name in
    X-Forwarded-For is the one that holds the slot."""
    port = (await start_server(max_connections_per_address=2, trusted_proxies="127.0.0.1",
                       keepalive_timeout=60.0)).port

    def forwarded(client: str) -> bytes:
        return get("/healthz", f"X-Forwarded-For: 198.51.100.1, {client}")

    held = [await RawConn.open(port) for _ in range(2)]
    with trio.fail_after(10):
        for conn in held:
            await conn.send(forwarded("203.0.113.7"))
            assert (await conn.read_response()).status == 200
        raw, closed = await exchange(port, forwarded("203.0.113.7"), timeout=5)
        assert closed
        only_error(raw, 503, "unavailable")
        # Another client behind the same proxy, and the proxy's own requests, are served.
        for request in (forwarded("203.0.113.8"), get("/healthz")):
            raw, _ = await exchange(port, request + get("/healthz", "Connection: close"), timeout=5)
            assert statuses(raw) == [200, 200]
    for conn in held:
        await conn.aclose()


async def test_over_cap_503_is_framed_and_counted_like_every_answer(
    start_server: StartServer
) -> None:
    port = (await start_server(max_connections=1)).port
    holder = HTTPClient(port)
    assert (await holder.get("/healthz")).status == 200
    raw, closed = await exchange(port, get("/healthz"), timeout=5)
    assert closed
    refused = only_error(raw, 503, "unavailable")
    assert raw.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert {b"date", b"server", b"content-length", b"connection", b"retry-after"} <= set(refused.headers)
    scrape = (await holder.get("/metrics")).body.decode()
    assert 'chat_trio_http_requests_total{method="-",route="unparsed",status="503"} 1.0' in scrape
    await holder.aclose()
