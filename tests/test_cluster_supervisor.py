"""The `--workers N` supervisor in a real process, with stand-in workers (tests/cluster_standin.py)
on real sockets: one reserved port, calls and the feed, presence, merged metrics, respawn, drain."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast
from unittest.mock import ANY

import orjson
import pytest
import trio

import chat_trio.cluster.supervisor as supervisor_module
from chat_trio.cluster import ipc
from chat_trio.cluster.position import MappedPosition
from chat_trio.cluster.supervisor import Supervisor, merge_expositions
from chat_trio.store.changes import Commit, UserCreated, decode
from chat_trio.store.store import Store
from chat_trio.store.writer import StoreClosed
from tests.cluster_standin import commands as standin_commands
from tests.helpers import make_config
from tests.rawhttp import RawConn, RawResponse, get
from tests.server_process import LISTENING
from tests.test_store_writer import lose_connection

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ("import sys, chat_trio.cluster.supervisor as s, tests.cluster_standin as w; "
          "s.WORKER_ARGV = [sys.executable, '-m', 'tests.cluster_standin']; s.local_commands = w.commands; "
          "from chat_trio.cli import main; main(sys.argv[1:])")


class Cluster:
    def __init__(self, tmp: Path, *args: str) -> None:
        self.log_path = tmp / "server.log"
        self._log = self.log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_TRIO_")}
        env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "--host", "127.0.0.1", "--port", "0", "--db", str(tmp / "chat.db"),
             "--argon2-time-cost", "1", "--argon2-memory-kib", "1024", "--argon2-parallelism", "1", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log, env=env, cwd=tmp)
        self.port = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for_log(self, pattern: str, timeout: float = 20.0) -> None:
        import re

        with trio.fail_after(timeout):
            while not re.search(pattern, self.log()):
                assert self.proc.poll() is None, self.log()
                await trio.sleep(0.05)

    async def start(self) -> int:
        await self.wait_for_log("supervisor.*" + LISTENING.pattern)
        import re

        found = re.search(r"supervisor\] chat_trio.supervisor: " + LISTENING.pattern, self.log())
        assert found is not None, self.log()
        self.port = int(found.group(1))
        return self.port

    async def get(self, path: str) -> RawResponse:
        conn = await RawConn.open(self.port)
        try:
            await conn.send(get(path))
            return await conn.read_response()
        finally:
            await conn.aclose()

    async def get_json(self, path: str) -> Any:
        reply = await self.get(path)
        assert reply.status == 200, reply
        return orjson.loads(reply.body)

    async def pids(self) -> dict[int, int]:
        """worker id → pid, by asking until both workers have answered."""
        found: dict[int, int] = {}
        while len(found) < 2:
            body = await self.get_json("/pid")
            found[body["worker"]] = body["pid"]
        return found

    async def wait(self, timeout: float = 20.0) -> int:
        with trio.fail_after(timeout):
            while self.proc.poll() is None:
                await trio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


async def test_two_workers_share_one_port_survive_kill_9_and_drain_on_sigterm(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "--workers", "2")
    try:
        with trio.fail_after(60):
            port = await cluster.start()
            assert port > 0
            before = await cluster.pids()
            assert sorted(before) == [1, 2]
            os.kill(before[1], signal.SIGKILL)
            await cluster.wait_for_log(rf"worker 1 \(pid {before[1]}\) exited with -9; starting it again "
                                       r"in 0\.1 s")
            while (after := await cluster.pids())[1] == before[1]:
                await trio.sleep(0.05)
            assert after[2] == before[2] and after[1] != before[1]
            cluster.proc.send_signal(signal.SIGTERM)
            assert await cluster.wait() == 0
            for pid in after.values():  # every worker is gone too
                status = Path(f"/proc/{pid}/status")
                assert not status.exists() or "zombie" in status.read_text()
        log = cluster.log()
        assert "[worker 1]" in log and "[worker 2]" in log and "[supervisor]" in log
        assert "Traceback" not in log, log
    finally:
        cluster.kill()


async def test_calls_feed_presence_and_metrics_through_the_supervisor(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "--workers", "2")
    try:
        with trio.fail_after(60):
            await cluster.start()
            await cluster.pids()
            for name in ("alice", "bob", "carol"):
                body = await cluster.get_json(f"/create_user/{name}")
                assert body["reply"]["ok"]["username"] == name
                assert body["commit_first"] is True  # the commit came before the reply
            refused = (await cluster.get_json("/create_room/x"))["error"]
            assert refused == {"status": 429, "code": "rate_limited", "message": "too many rooms",
                               "headers": [["retry-after", "7"]], "extra": {"retry_after_ms": 7000}}
            # user 7 comes online through whichever worker answers: the other one hears of it.
            reply = await cluster.get("/presence/7/on")
            origin = int(reply.headers[b"x-chat-worker"])
            while True:
                heard = await cluster.get("/online")
                if int(heard.headers[b"x-chat-worker"]) != origin and orjson.loads(heard.body) == [7]:
                    break
                await trio.sleep(0.02)
            text = (await cluster.get("/metrics")).body.decode()
            assert 'standin_up{worker="1"} 1.0' in text and 'standin_up{worker="2"} 2.0' in text
            assert 'chat_trio_store_commits_total{worker="supervisor"}' in text
            cluster.proc.send_signal(signal.SIGINT)
            assert await cluster.wait() == 0
    finally:
        cluster.kill()


async def test_a_supervisor_that_cannot_open_its_store_says_why_and_exits_1(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "--workers", "2", "--db", str(tmp_path / "missing" / "chat.db"))
    try:
        assert await cluster.wait() == 1
        lines = cluster.log().strip().splitlines()
        assert len(lines) == 1 and "cannot open the database" in lines[0], lines
    finally:
        cluster.kill()


def test_merged_metrics_name_their_worker() -> None:
    text = merge_expositions({
        "2": "# TYPE hits counter\nhits_total{route=\"/a\"} 3.0\n",
        "1": "# TYPE hits counter\nhits_total{route=\"/a\"} 1.0\n# TYPE up gauge\nup 1.0\n",
        "supervisor": "# TYPE up gauge\nup 1.0\n",
    })
    assert text.count("# TYPE hits_total counter") + text.count("# TYPE hits counter") == 1
    assert 'hits_total{route="/a",worker="1"} 1.0' in text
    assert 'hits_total{route="/a",worker="2"} 3.0' in text
    assert 'up{worker="supervisor"} 1.0' in text and 'up{worker="1"} 1.0' in text


# -- in process: the supervisor's side of the socket, with the test playing worker 1 ---------------


@contextlib.asynccontextmanager
async def _supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Supervisor]:
    """A Supervisor of one worker whose process never connects (it sleeps), so the test can
    connect as that worker itself."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    monkeypatch.setattr(supervisor_module, "WORKER_ARGV", sleeper)
    sup = Supervisor(make_config(tmp_path, workers=1), commands=standin_commands)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        while not (sup.socket_path and os.path.exists(sup.socket_path)):
            await trio.sleep(0.01)
        try:
            yield sup
        finally:
            sup.stop()


async def _hello(sup: Supervisor, worker_id: int = 1) -> tuple[trio.SocketStream, Any]:
    stream = await trio.open_unix_socket(sup.socket_path)
    await ipc.send_json(stream, {"hello": worker_id})
    frames = ipc.read_frames(stream)
    kind, payload = await anext(frames)
    ready = ipc.decode_json(payload)
    assert kind == ipc.JSON and ready["ready"] is True and ready["online"] == [], ready
    # Where its read barrier starts: the commits fed so far, as published in shared memory.
    published = MappedPosition(ready["position_file"])
    assert ready["position"] == sup.position == published.word[0]
    published.close()
    return stream, frames


async def _closed(frames: Any) -> None:
    """Read until the supervisor closes the connection."""
    with contextlib.suppress(ipc.FrameError, trio.BrokenResourceError):
        async for _ in frames:
            pass


async def test_the_ipc_socket_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(20):
        async with _supervisor(tmp_path, monkeypatch) as sup:
            assert stat.S_IMODE(os.stat(sup.socket_path).st_mode) == 0o600
            assert stat.S_IMODE(os.stat(os.path.dirname(sup.socket_path)).st_mode) == 0o700


async def test_a_worker_that_does_not_read_is_cut_off_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervisor_module, "OUTBOUND_BYTES", 4 * 1024 * 1024)
    with trio.fail_after(20):
        async with _supervisor(tmp_path, monkeypatch) as sup:
            stream, frames = await _hello(sup)
            big = Commit((UserCreated(1, "x" * 1024 * 1024, 0),))
            for _ in range(40):  # 40 MiB at once: the writer never waits for the socket
                sup.broadcast(big)
            await _closed(frames)
            await stream.aclose()
            assert "worker 1 is" in caplog.text and "bytes behind; disconnecting it" in caplog.text
            while sup.links:
                await trio.sleep(0.01)
            # The worker may come back (as a respawned one would).
            stream, frames = await _hello(sup)
            await stream.aclose()


async def test_each_worker_hears_when_the_writer_stops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's /healthz answers from what its supervisor tells it, never by asking: when the
    supervisor's writer stops, each connected worker gets one `health` frame with the 503 to
    answer, and a worker that connects afterwards gets it right after `ready`."""
    with trio.fail_after(20):
        async with _supervisor(tmp_path, monkeypatch) as sup:
            stream, frames = await _hello(sup)
            store: Store = cast(Any, sup.commands).context.store
            with pytest.raises(StoreClosed):
                await store.writer.write(lose_connection)
            kind, payload = await anext(frames)
            told = ipc.decode_json(payload)
            assert kind == ipc.JSON and list(told) == ["health"]
            assert (told["health"]["status"], told["health"]["code"]) == (503, "unavailable")
            assert "writer has stopped" in told["health"]["message"]
            await stream.aclose()
            while sup.links:
                await trio.sleep(0.01)
            stream, frames = await _hello(sup)  # as a respawned worker would
            assert ipc.decode_json((await anext(frames))[1]) == told
            await stream.aclose()


async def test_a_worker_that_breaks_the_protocol_loses_only_its_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(20):
        async with _supervisor(tmp_path, monkeypatch) as sup:
            for hello in ({"hello": 2}, {"hello": "1"}, {"nope": 1}):  # not one of its workers
                stream = await trio.open_unix_socket(sup.socket_path)
                await ipc.send_json(stream, hello)
                await _closed(ipc.read_frames(stream))
                await stream.aclose()
            stream, frames = await _hello(sup)
            twin = await trio.open_unix_socket(sup.socket_path)  # the same id twice
            await ipc.send_json(twin, {"hello": 1})
            await _closed(ipc.read_frames(twin))
            # An unknown operation, or a digest that is not hex, is an error reply, not a crash.
            await ipc.send_json(stream, {"call": 1, "op": "__init__", "args": {}})
            await ipc.send_json(stream, {"call": 2, "op": "revoke_token", "args": {"digest": "zz"}})
            await ipc.send_json(stream, {"call": 3, "op": "join", "args": {}})  # not served here
            replies = [ipc.decode_json((await anext(frames))[1]) for _ in range(3)]  # any order
            assert sorted(reply["reply"] for reply in replies) == [1, 2, 3]
            for reply in replies:
                assert (reply["error"]["status"], reply["error"]["code"]) == (500, "internal")
            await ipc.send_json(stream, {"presence": "not a user", "online": True})
            await _closed(frames)
            await stream.aclose()
            stream, frames = await _hello(sup)  # and the supervisor still serves
            await ipc.send_json(stream, {"call": 4, "op": "create_user",
                                         "args": {"username": "dora", "password_hash": "h"}})
            kind, payload = await anext(frames)
            assert kind == ipc.COMMIT and decode(payload)[0] == UserCreated(1, "dora", ANY)
            _, payload = await anext(frames)
            assert ipc.decode_json(payload)["ok"]["username"] == "dora"
            await stream.aclose()
