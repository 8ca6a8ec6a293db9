"""The `--workers N` supervisor in a real process, with stand-in workers (tests/cluster_standin.py)
on real sockets: one reserved port, calls and the feed, presence, merged metrics, respawn, drain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import trio

from chat_trio.cluster.supervisor import merge_expositions
from tests.rawhttp import RawConn, RawResponse, get
from tests.server_process import LISTENING

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
