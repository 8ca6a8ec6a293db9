"""Hypothesis fuzzing of the two wire protocols of a real server (a subprocess, so the tests are
plain synchronous sockets): arbitrary bytes — random, or built from pieces of valid requests and
frames — split at arbitrary points. After every example the server must still answer
GET /healthz 200, and its log must show no error (no "handler failed", no "connection from ...
failed", no traceback). Timeouts are short so a half-sent request costs little."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import struct
import time
from collections.abc import Iterator

import hypothesis
import orjson
import pytest
import requests
import trio
from hypothesis import strategies as st

from tests.helpers import MODES, PASSWORD, POSTGRES, WORKERS_2, skip_without_workers, wait_workers_ready
from tests.pg import create_schema, drop_schema
from tests.rawhttp import statuses
from tests.server_process import ServerProcess, workers_args
from tests.ws_client import client_frame, raw_handshake_sync, server_frames

IO_TIMEOUT = 5.0  # seconds any read may take


@pytest.fixture(scope="module", params=MODES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The server in each mode (a subprocess all three: the tests are synchronous): one process,
    `--workers 2`, and one process on PostgreSQL."""
    args = ["--head-timeout", "1", "--body-timeout", "1", "--keepalive-timeout", "1",
            "--ws-auth-timeout", "1", "--send-rate", "0", "--max-body-bytes", "4096"]
    workers, schema = 1, None
    if request.param == WORKERS_2:
        skip_without_workers()
        workers = 2
    if request.param == POSTGRES:
        schema, dsn = create_schema()
        args += ["--database", dsn]
    srv = ServerProcess(tmp_path_factory.mktemp("fuzz"), *workers_args(workers), *args)
    try:
        srv.start_sync()
        trio.run(wait_workers_ready, srv.port, workers)
        yield srv
    finally:
        srv.stop()
        if schema is not None:
            drop_schema(schema)


@pytest.fixture(scope="module")
def token(server: ServerProcess) -> str:
    """A user who is a member of room 1."""
    body = {"username": "fuzzer", "password": PASSWORD}
    assert requests.post(f"{server.url}/register", json=body, timeout=10).status_code == 201
    reply = requests.post(f"{server.url}/login", json=body, timeout=10)
    token = str(reply.json()["token"])
    room = requests.post(f"{server.url}/rooms", json={"name": "fuzz"}, timeout=10,
                         headers={"Authorization": f"Bearer {token}"})
    assert room.status_code == 201 and room.json()["room"]["id"] == 1
    return token


def assert_healthy(server: ServerProcess) -> None:
    assert server.alive(), server.log()
    reply = requests.get(f"{server.url}/healthz", timeout=IO_TIMEOUT)
    assert reply.status_code == 200 and reply.json() == {"status": "ok"}
    assert not server.errors(), server.errors()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_split(sock: socket.socket, data: bytes, cuts: list[int]) -> None:
    """Send `data` in pieces cut at `cuts`, pausing between them so the server reads each piece
    on its own; a reset from the server (it may refuse and close early) ends the sending."""
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    try:
        for start, end in itertools.pairwise(bounds):
            if end > start:
                sock.sendall(data[start:end])
                time.sleep(0.001)
    except (BrokenPipeError, ConnectionResetError):
        pass


def read_until_closed(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything until the server closes; (data, closed). Bounded by IO_TIMEOUT overall."""
    out = b""
    deadline = time.monotonic() + IO_TIMEOUT
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                return out, True
            out += chunk
    except ConnectionResetError:
        return out, True
    except TimeoutError:
        pass
    return out, False


# -- HTTP ----------------------------------------------------------------------------------------

HTTP_PIECES = [
    b"GET /healthz HTTP/1.1\r\n", b"POST /rooms HTTP/1.1\r\n", b"POST /login HTTP/1.1\r\n",
    b"GET /rooms/1/messages?after=0&wait=1 HTTP/1.1\r\n", b"GET /ws HTTP/1.1\r\n", b"HEAD / HTTP/1.0\r\n",
    b"Host: x\r\n", b"Content-Length: 5\r\n", b"Content-Length: 99999999\r\n", b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Expect: 100-continue\r\n", b"Connection: close\r\n",
    b"Connection: Upgrade\r\n", b"Upgrade: websocket\r\n", b"Sec-WebSocket-Version: 13\r\n",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"Content-Type: application/json\r\n",
    b"Authorization: Bearer x\r\n", b"Origin: http://evil\r\n", b"\r\n", b"\r\n\r\n",
    b"5\r\nhello\r\n", b"0\r\n\r\n", b"ffffffffffffffff\r\n", b'{"username":"abc","password":"12345678"}',
    b'{"name":"r"}', b"{", b"\x00", b"\xff\xfe", b" ", b":", b"\n",
]
START_LINES = [b"GET /healthz HTTP/1.1\r\n", b"GET /me HTTP/1.1\r\n", b"POST /login HTTP/1.1\r\n",
               b"POST /rooms/1/messages HTTP/1.1\r\n", b"GET /rooms/1/messages?after=0&wait=1 HTTP/1.1\r\n",
               b"GET /ws HTTP/1.1\r\n", b"HEAD / HTTP/1.0\r\n", b"PUT /rooms HTTP/1.1\r\n",
               b"GET /openapi.json HTTP/1.0\r\n", b"OPTIONS * HTTP/1.1\r\n"]
HEADERS = [p for p in HTTP_PIECES if p.endswith(b"\r\n") and b": " in p]
# Mostly well-formed heads with arbitrary header sets and bodies (so the fuzz gets past the
# request line), sometimes pipelined, plus pure noise and soups of request pieces.
requests_ = st.builds(
    lambda start, headers, body: start + b"Host: x\r\n" + b"".join(headers) + b"\r\n" + body,
    st.sampled_from(START_LINES),
    st.lists(st.one_of(st.sampled_from(HEADERS), st.binary(max_size=12).map(lambda b: b"X-" + b + b"\r\n")),
             max_size=6),
    st.one_of(st.just(b""), st.sampled_from(HTTP_PIECES), st.binary(max_size=64)),
)
http_bytes = st.one_of(
    st.lists(requests_, min_size=1, max_size=3).map(b"".join),
    st.lists(requests_, min_size=1, max_size=3).map(b"".join),
    st.binary(max_size=512),
    st.lists(st.one_of(st.sampled_from(HTTP_PIECES), st.binary(max_size=16)), max_size=24).map(b"".join),
)


@hypothesis.settings(max_examples=100, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(data=http_bytes, cuts=st.lists(st.integers(0, 10_000), max_size=8), abrupt=st.booleans())
def test_arbitrary_http_bytes(server: ServerProcess, data: bytes, cuts: list[int], abrupt: bool) -> None:
    with connect(server.port) as sock:
        send_split(sock, data, cuts)
        if not abrupt:  # half-close, and read whatever the server answers until it closes
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            received, closed = read_until_closed(sock)
            assert closed, f"server kept the connection open after EOF: {received[:200]!r}"
            if received:
                assert received.startswith(b"HTTP/1.1 "), received[:200]
                # 501 is h11's error_status_hint for framing it does not implement (an unknown or
                # repeated Transfer-Encoding): the contract answers h11's hint. Any other 5xx is a bug.
                assert all(s < 500 or s == 501 for s in statuses(received)), received[:500]
                for status in statuses(received):
                    hypothesis.event(f"status {status}")
    assert_healthy(server)


# -- websocket -----------------------------------------------------------------------------------

DOCUMENTED_CLOSE = {1000, 1002, 1003, 1007, 1008, 1009}  # RFC 6455 protocol codes + the contract's
SERVER_FRAME_TYPES = {"hello", "pong", "error", "subscribed", "unsubscribed", "ack", "message", "typing",
                      "gap"}


def handshake(port: int, token: str) -> tuple[socket.socket, bytes]:
    sock = connect(port)
    _, head, rest = raw_handshake_sync(sock, port, headers=[("Authorization", f"Bearer {token}")])
    assert head.startswith(b"HTTP/1.1 101 "), head
    while not server_frames(rest)[0]:  # the hello frame
        rest += sock.recv(65536)
    return sock, rest


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**64) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
ws_objects = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "unsubscribe", "send", "typing", "ping", "auth", "bogus"])},
    optional={"room_id": st.sampled_from([1, 2, 0, -1, "1", None, 2**70]), "after": json_values,
              "text": st.text(max_size=30), "txn_id": json_values, "ref": json_values, "x": json_values},
)
ws_payloads = st.one_of(
    ws_objects.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
)
good_frames = ws_payloads.map(client_frame)
# Any opcode, FIN and RSV bits (possibly invalid).
odd_frames = st.builds(lambda opcode, payload, fin, rsv: client_frame(payload, opcode, fin=fin, rsv=rsv),
                       st.integers(0, 15), ws_payloads, st.booleans(), st.integers(0, 7))
ws_streams = st.lists(st.one_of(good_frames, good_frames, odd_frames, st.binary(min_size=1, max_size=8)),
                      min_size=1, max_size=8).map(b"".join)


@hypothesis.settings(max_examples=50, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(data=ws_streams, cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_arbitrary_websocket_frames(server: ServerProcess, token: str, data: bytes, cuts: list[int]) -> None:
    sock, received = handshake(server.port, token)
    with sock:
        send_split(sock, data, cuts)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        more, closed = read_until_closed(sock)
    assert closed, "server kept the websocket open after EOF"
    frames, _ = server_frames(received + more)
    assert orjson.loads(frames[0][1])["type"] == "hello"
    for opcode, payload in frames:
        assert opcode in (0x1, 0x8, 0x9, 0xA), (opcode, payload)
        hypothesis.event(f"server opcode {opcode}")
        if opcode == 0x1:
            frame = orjson.loads(payload)
            hypothesis.event(f"server frame {frame['type']}")
            assert frame["type"] in SERVER_FRAME_TYPES, frame
        elif opcode == 0x8 and len(payload) >= 2:
            code = struct.unpack("!H", payload[:2])[0]
            hypothesis.event(f"close {code}")
            # The server may also echo the code of a close frame the client sent.
            assert code in DOCUMENTED_CLOSE or (struct.pack("!H", code) in data), (code, payload)
    assert_healthy(server)


def test_the_fuzzed_server_still_works(server: ServerProcess, token: str) -> None:
    """After all that, a normal session still works end to end."""
    headers = {"Authorization": f"Bearer {token}"}
    sent = requests.post(f"{server.url}/rooms/1/messages", json={"text": "still here"}, headers=headers,
                         timeout=IO_TIMEOUT)
    assert sent.status_code == 201, sent.text
    assert_healthy(server)
