"""The supervisor ↔ worker frame format over real Unix sockets."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import trio

from chat_trio.cluster import ipc
from chat_trio.store.changes import MemberJoined, UserCreated, decode, encode


def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def _collect(stream: trio.SocketStream) -> list[tuple[bytes, bytes]]:
    return [item async for item in ipc.read_frames(stream)]


async def test_commit_and_json_frames_arrive_in_order() -> None:
    left, right = _pair()
    encoded = encode([UserCreated(1, "alice", 5), MemberJoined(2, 1, 6)])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            got: list[tuple[bytes, bytes]] = []

            async def reader() -> None:
                got.extend(await _collect(right))

            nursery.start_soon(reader)
            await ipc.send_json(left, {"hello": 1})
            await ipc.send_commit(left, encoded)
            await ipc.send_json(left, {"reply": 7, "ok": [1, True]})
            await left.aclose()
    assert [kind for kind, _ in got] == [b"J", b"C", b"J"]
    assert ipc.decode_json(got[0][1]) == {"hello": 1}
    assert decode(got[1][1]) == [UserCreated(1, "alice", 5), MemberJoined(2, 1, 6)]
    assert ipc.decode_json(got[2][1]) == {"reply": 7, "ok": [1, True]}


async def test_a_frame_split_across_many_writes_and_a_large_one(tmp_path: Path) -> None:
    """Over a Unix socket listener, byte by byte, then one frame far bigger than a read."""
    path = str(tmp_path / "s")
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(1)
    big = {"text": "x" * 3_000_000}
    with trio.fail_after(10):
        client = await trio.open_unix_socket(path)
        server_sock, _ = await listener.accept()
        server = trio.SocketStream(server_sock)
        got: list[tuple[bytes, bytes]] = []
        async with trio.open_nursery() as nursery:
            async def reader() -> None:
                got.extend(await _collect(server))

            nursery.start_soon(reader)
            for byte in ipc.json_frame({"a": 1}):
                await client.send_all(bytes([byte]))
            await ipc.send_json(client, big)
            await client.aclose()
    listener.close()
    assert [ipc.decode_json(p) for _, p in got] == [{"a": 1}, big]


@pytest.mark.parametrize("raw, problem", [
    (struct.pack(">I", ipc.MAX_FRAME + 1) + b"J", "limit"),
    (struct.pack(">I", 0), "limit"),
    (struct.pack(">I", 10) + b"J{}", "middle of a frame"),
    (struct.pack(">I", 3) + b"X{}", "unknown frame kind"),
])
async def test_oversize_truncated_or_unknown_frames_break_the_connection(raw: bytes, problem: str) -> None:
    left, right = _pair()
    with trio.fail_after(5):
        await left.send_all(raw)
        await left.aclose()
        with pytest.raises(ipc.FrameError, match=problem):
            await _collect(right)


def test_a_frame_over_the_limit_is_refused_before_sending() -> None:
    with pytest.raises(ipc.FrameError):
        ipc.frame(ipc.JSON, b"x" * ipc.MAX_FRAME)


def test_a_json_frame_must_be_an_object() -> None:
    with pytest.raises(ipc.FrameError):
        ipc.decode_json(b"[1]")
    with pytest.raises(ipc.FrameError):
        ipc.decode_json(b"{nope")
