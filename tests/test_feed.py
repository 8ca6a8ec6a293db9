"""The change feed: every committed change as a record that survives encoding, one Commit per
transaction in commit order, and a hub that learns of messages, leaves and revocations only
from the feed, whichever transport carried the commit there."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from chat_trio.app import App
from chat_trio.rooms.frames import json_frame
from chat_trio.store.changes import (
    NO_CHANGES,
    Change,
    Changes,
    Commit,
    MemberJoined,
    MemberLeft,
    MessageCommitted,
    ReadMoved,
    RoomCreated,
    TextErased,
    TokenIssued,
    TokensRevoked,
    UserCreated,
    decode,
    encode,
)
from chat_trio.store.records import Message
from chat_trio.store.sqlite import connect, sqlite3
from chat_trio.store.writer import GroupCommitWriter, Pending
from tests.client import HTTPClient
from tests.helpers import join, make_config, make_room, register_and_login, send, serve, store_of
from tests.ws_client import connect as ws_connect

MESSAGE: Message = {
    "id": 7, "room_id": 3, "seq": 42, "author": {"id": 5, "username": "Zoë ☃"},
    "text": "héllo \"quoted\" \\ \u2028 😀", "created_at": "2026-11-30T04:45:13.123Z", "txn_id": None,
    "kind": "text", "edited_at": None, "deleted": False,
}
EVERY_KIND: list[Change] = [
    UserCreated(5, "Zoë ☃", 1_795_000_000_123),
    RoomCreated(3, "général", "", 5, 1_795_000_000_456),
    MemberJoined(3, 5, 1_795_000_000_456),
    MemberLeft(3, 6),
    MessageCommitted(MESSAGE),
    MessageCommitted({**MESSAGE, "seq": 43, "txn_id": "t-1"}),
    TokenIssued(bytes(range(32)), 5, 1_795_086_400_000),
    TokensRevoked((b"\x00" * 32, b"\xff" * 32)),
    TokensRevoked(()),
    ReadMoved(3, 5, 42, 40),
    TextErased(3, (7, 42)),
    TextErased(3, ()),
]


def test_every_change_kind_survives_encode_and_decode() -> None:
    data = encode(EVERY_KIND)
    assert isinstance(data, bytes)
    decoded = decode(data)
    assert decoded == EVERY_KIND
    assert [type(c) for c in decoded] == [type(c) for c in EVERY_KIND]
    # Each message arrives with its websocket frame, the bytes a hub would have built for it.
    frames = [c.frame for c in decoded if isinstance(c, MessageCommitted)]
    assert frames == [json_frame({"type": "message", "message": c.message})
                      for c in EVERY_KIND if isinstance(c, MessageCommitted)]
    bare = data[data.index(b'[["user"'):]  # the list alone, without the frames before it
    assert decode(bare) == EVERY_KIND
    assert decode(bare.decode()) == EVERY_KIND  # a NOTIFY payload arrives as text
    assert decode(encode([])) == []


@pytest.mark.parametrize("data", [b"", b"{}", b'[["nope", 1]]', b"[[]]", b'[["user", 1]]', b"[1]",
                                  b'[["token", "zz", 1, 2]]', b"\x81\x09{}[]", b"\x81\x02{}[]",
                                  b"\x81", b"\x81\x02{}"])
def test_decode_refuses_what_encode_cannot_have_written(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode(data)


async def test_a_batch_is_one_commit_in_order_and_failed_writes_add_nothing(tmp_path: Path) -> None:
    """The writer hands the feed one Commit per transaction, with the changes of the writes that
    succeeded in commit order, before any caller wakes; writes that change nothing add nothing."""
    conn = connect(str(tmp_path / "w.db"))
    conn.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)")
    commits: list[Commit] = []
    pending: list[Pending[int]] = []
    finished_at_commit: list[bool] = []

    def on_commit(commit: Commit) -> None:
        commits.append(commit)
        finished_at_commit.extend(item.finished for item in pending)

    writer = GroupCommitWriter(conn, max_batch=64, queue_size=64, on_commit=on_commit)

    def insert(value: int) -> Callable[[sqlite3.Connection], tuple[int, Changes]]:
        def run(c: sqlite3.Connection) -> tuple[int, Changes]:
            c.execute("INSERT INTO t VALUES (?)", (value,))
            return value, (MemberJoined(1, value, 0), MemberLeft(1, value))
        return run

    gate = threading.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            first = await writer.submit(lambda c: gate.wait(10))  # holds the thread: the rest queue
            await trio.sleep(0.05)
            pending += [await writer.submit_changes(insert(v)) for v in (1, 2, 1, 3)]  # 2nd 1 fails
            unchanged = await writer.submit(lambda c: c.execute("SELECT 1").fetchone())
            gate.set()
            await first.result()
            assert [await item.result() for item in pending[:2]] == [1, 2]
            with pytest.raises(sqlite3.IntegrityError):
                await pending[2].result()
            assert await pending[3].result() == 3
            await unchanged.result()
            nursery.cancel_scope.cancel()
    assert commits == [Commit((MemberJoined(1, 1, 0), MemberLeft(1, 1), MemberJoined(1, 2, 0),
                               MemberLeft(1, 2), MemberJoined(1, 3, 0), MemberLeft(1, 3)))]
    assert finished_at_commit == [False] * 4  # the feed had the commit before any caller woke
    assert NO_CHANGES == ()


async def _forward(app: App, into: App, *, task_status: trio.TaskStatus[list[Commit]]) -> None:
    """A transport like a worker's socket: `app`'s commits, encoded to bytes, through a bounded
    channel and a reader task, decoded and applied to `into`'s feed. Also records them."""
    seen: list[Commit] = []
    send_channel, receive_channel = trio.open_memory_channel[bytes](1000)

    def ship(commit: Commit) -> None:
        seen.append(commit)
        send_channel.send_nowait(encode(commit.changes))

    store_of(app).feed.subscribe(ship)
    task_status.started(seen)
    async for data in receive_channel:
        store_of(into).feed.apply_encoded(data)


async def test_commits_carried_to_another_server_reach_its_subscribers_only_through_the_feed(
    tmp_path: Path,
) -> None:
    """Server B never handles a write: every commit of server A reaches B's feed as encoded
    bytes. B's websocket (authenticated with a token issued on A, subscribed to a room created on
    A) gets A's messages, its subscription ends when its user leaves on A, and it is closed
    with 4001 when its token is logged out on A: handlers never tell the hub, the feed does."""
    config_a = make_config(tmp_path / "a")
    config_b = make_config(tmp_path / "b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with trio.fail_after(30):
        async with serve(config_a) as a, serve(config_b) as b, trio.open_nursery() as nursery:
            seen: list[Commit] = await nursery.start(_forward, a, b)
            client = HTTPClient(a.port)
            token, user = await register_and_login(client, "ada")
            other, _ = await register_and_login(client, "bob")
            room = await make_room(client, other, "relay")
            joiners = [HTTPClient(a.port) for _ in range(2)]
            async with trio.open_nursery() as joins:  # racing joins: the second changes nothing
                for joiner in joiners:
                    joins.start_soon(join, joiner, token, room["id"])
            for joiner in joiners:
                await joiner.aclose()
            async with ws_connect(b.port, token) as ws:
                assert ws.hello["user"]["id"] == user["id"]
                await ws.subscribe(room["id"])
                sent = (await send(client, other, room["id"], "across")).json["message"]
                assert await ws.messages_until(sent["seq"]) == [sent]
                assert (await client.post(f"/rooms/{room['id']}/leave", token=token)).status == 204
                left = (await ws.expect("message"))["message"]  # the leave entry, then the end
                assert (left["kind"], left["seq"], left["text"]) == ("leave", sent["seq"] + 1, "ada left")
                assert await ws.expect("unsubscribed") == {"type": "unsubscribed", "room_id": room["id"],
                                                           "reason": "left"}
                assert (await client.post("/logout", token=token)).status == 204
                assert await ws.closed() == (4001, [])
            nursery.cancel_scope.cancel()
            await client.aclose()
    kinds = [type(change).__name__ for commit in seen for change in commit.changes]
    assert kinds == ["UserCreated", "TokenIssued", "UserCreated", "TokenIssued", "RoomCreated",
                     "MemberJoined", "MemberJoined", "MessageCommitted", "MessageCommitted",
                     "MessageCommitted", "MemberLeft", "TokensRevoked"]
