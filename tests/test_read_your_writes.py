"""Read-your-writes across `--workers`: a request sees every commit acknowledged before it arrived,
whichever worker serves it.

Each worker answers reads from its in-memory state, which the supervisor's commit feed keeps
current asynchronously; without the commit-position barrier a request landing on the other worker
right after a write was acknowledged could be answered from before that commit (403 not_member
after a join, a member list without the join, a history without the message). Each test makes the
dependent request on a connection already open to the *other* worker, so nothing (no connection
set-up) gives the feed time to catch up."""

from __future__ import annotations

from pathlib import Path

from tests.client import HTTPClient
from tests.helpers import PASSWORD, history, login, register
from tests.test_workers import client_on, running, two_workers  # noqa: F401  (a fixture)

ROUNDS = 150  # write → dependent read pairs per test; a stale read shows up within a few dozen


async def pinned(port: int, token: str) -> tuple[HTTPClient, HTTPClient]:
    """A keep-alive connection on worker 1 and one on worker 2, both with `token`."""
    return await client_on(port, "1", token), await client_on(port, "2", token)


async def people(port: int, *names: str) -> list[str]:
    c = HTTPClient(port)
    tokens = []
    for name in names:
        await register(c, name)
        tokens.append(await login(c, name))
    await c.aclose()
    return tokens


async def test_join_then_send_and_create_then_members_on_the_other_worker(
        tmp_path: Path, two_workers: int) -> None:  # noqa: F811
    async with running(tmp_path, two_workers, "--send-rate", "0") as server:
        owner, guest = await people(server.port, "owner", "guest")
        o1, o2 = await pinned(server.port, owner)
        g1, g2 = await pinned(server.port, guest)
        stale: list[str] = []
        for i in range(ROUNDS):
            (write_o, read_o), (write_g, read_g) = ((o1, o2), (g1, g2)) if i % 2 else ((o2, o1), (g2, g1))
            created = await write_o.post("/rooms", {"name": f"room {i}"})
            assert created.status == 201, created.body
            room_id = created.json["room"]["id"]
            members = await read_o.get(f"/rooms/{room_id}/members")
            if members.status != 200:
                stale.append(f"{i}: members right after create: {members.status} {members.body!r}")
            joined = await read_g.post(f"/rooms/{room_id}/join")  # on the worker that did not create
            if joined.status != 200:
                stale.append(f"{i}: join right after create: {joined.status} {joined.body!r}")
                continue
            sent = await write_g.post(f"/rooms/{room_id}/messages", {"text": "hello"})
            if sent.status != 201:
                stale.append(f"{i}: send right after join: {sent.status} {sent.body!r}")
            members = await read_o.get(f"/rooms/{room_id}/members")
            ids = {m["user"]["username"] for m in members.json.get("members", [])} \
                if members.status == 200 else set()
            if ids != {"owner", "guest"}:
                stale.append(f"{i}: members right after join: {members.status} {sorted(ids)}")
        for c in (o1, o2, g1, g2):
            await c.aclose()
        assert not stale, f"{len(stale)} stale answers of {ROUNDS} rounds: {stale[:5]}"


async def test_send_then_history_on_the_other_worker(tmp_path: Path, two_workers: int) -> None:  # noqa: F811
    async with running(tmp_path, two_workers, "--send-rate", "0") as server:
        [token] = await people(server.port, "alice")
        c1, c2 = await pinned(server.port, token)
        room = await c1.post("/rooms", {"name": "room"})
        room_id = room.json["room"]["id"]
        stale: list[str] = []
        for i in range(ROUNDS):
            writer, reader = (c1, c2) if i % 2 else (c2, c1)
            sent = await writer.post(f"/rooms/{room_id}/messages", {"text": f"message {i}"})
            assert sent.status == 201, sent.body
            seq = sent.json["message"]["seq"]
            page = await history(reader, token, room_id, limit=1)
            got = [m["seq"] for m in page.json["messages"]] if page.status == 200 else page.status
            if got != [seq]:
                stale.append(f"{i}: newest seq {got}, sent {seq}")
            room = await reader.get(f"/rooms/{room_id}")
            last_seq = room.json["room"]["last_seq"] if room.status == 200 else room.status
            if last_seq != seq:
                stale.append(f"{i}: room last_seq {last_seq}, sent {seq}")
        for c in (c1, c2):
            await c.aclose()
        assert not stale, f"{len(stale)} stale answers of {ROUNDS} rounds: {stale[:5]}"


async def test_logout_then_read_on_the_other_worker(tmp_path: Path, two_workers: int) -> None:  # noqa: F811
    """A token revoked on one worker is refused at once by the other (whose token cache knew it)."""
    async with running(tmp_path, two_workers, "--login-user-limit", "0") as server:
        await people(server.port, "alice")
        a, b = await client_on(server.port, "1"), await client_on(server.port, "2")
        honoured: list[int] = []
        for i in range(ROUNDS // 3):
            writer, reader = (a, b) if i % 2 else (b, a)
            reply = await writer.post("/login", {"username": "alice", "password": PASSWORD})
            assert reply.status == 200, reply.body
            token = reply.json["token"]
            assert (await reader.get("/me", token=token)).status == 200  # now in its token cache
            assert (await writer.post("/logout", token=token)).status == 204
            me = await reader.get("/me", token=token)
            if me.status != 401:
                honoured.append(i)
        await a.aclose()
        await b.aclose()
        assert not honoured, f"a revoked token was honoured in rounds {honoured}"
