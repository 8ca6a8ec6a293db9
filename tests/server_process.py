"""`python -m chat_trio` in a subprocess: for the tests that signal, kill or rlimit the server,
for the synchronous ones (schemathesis, hypothesis) and for the soak script.

It listens on a free loopback port, read from its "listening on" log line; stderr goes to a file
(never an undrained pipe, which would stall the server) so a test can look for errors in it.
Cheap argon2 parameters unless the caller passes others (a later flag wins)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

LISTENING = re.compile(r"listening on http://[^\s:]+:(\d+)")
# Text log lines are "DATE TIME LEVEL logger: message"; ERROR is what "handler failed", "connection
# from ... failed" and "send failed" are logged at (with their traceback on the following lines).
_ERROR_LINE = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) |^Traceback ")


class ServerProcess:
    def __init__(self, tmp: Path, *args: str, db: Path | None = None, log_name: str = "server.log",
                 log_level: str = "info", fd_limit: int | None = None) -> None:
        self.tmp = tmp
        self.db = db or tmp / "chat.db"
        self.log_path = tmp / log_name
        self.port = 0
        argv = [sys.executable, "-m", "chat_trio", "--host", "127.0.0.1", "--port", "0",
                "--db", str(self.db), "--log-level", log_level,
                "--argon2-time-cost", "1", "--argon2-memory-kib", "1024", "--argon2-parallelism", "1",
                *args]

        def limit_fds() -> None:
            if fd_limit is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        self._log_file = self.log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_TRIO_")}
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._log_file, preexec_fn=limit_fds, env=env, cwd=tmp)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def errors(self) -> list[str]:
        """Log lines that show a server-side failure (not a client's fault)."""
        return [line for line in self.log().splitlines() if _ERROR_LINE.match(line)]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _found(self, pattern: str) -> re.Match[str] | None:
        found = re.search(pattern, self.log())
        if found is None and not self.alive():
            raise AssertionError(f"server exited ({self.proc.returncode}):\n{self.log()}")
        return found

    async def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        with trio.fail_after(timeout):
            while not (found := self._found(pattern)):
                await trio.sleep(0.02)
        return found

    async def start(self, timeout: float = 20.0) -> int:
        """Wait until it listens; its port."""
        self.port = int((await self.wait_for_log(LISTENING.pattern, timeout)).group(1))
        return self.port

    def start_sync(self, timeout: float = 20.0) -> int:
        """`start` for synchronous callers."""
        deadline = time.monotonic() + timeout
        while not (found := self._found(LISTENING.pattern)):
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the server did not start:\n{self.log()}")
            time.sleep(0.02)
        self.port = int(found.group(1))
        return self.port

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 10.0) -> int:
        with trio.fail_after(timeout):
            while self.proc.poll() is None:
                await trio.sleep(0.02)
        return self.proc.returncode

    def stop(self) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if it takes more than 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


# -- --workers N: a supervisor and its worker processes ------------------------------------------


@functools.cache
def has_workers_flag() -> bool:
    """Whether this chat_trio knows `--workers` (asked once per test run)."""
    out = subprocess.run([sys.executable, "-m", "chat_trio", "--help"], capture_output=True,
                         text=True, timeout=30, check=False)
    return "--workers" in out.stdout


def workers_args(workers: int) -> tuple[str, ...]:
    """The flags for `workers` processes: none for one (today's single process, unchanged)."""
    return ("--workers", str(workers)) if workers > 1 else ()


def worker_pids(supervisor: int) -> dict[str, int]:
    """The worker processes of a supervisor, by their CHAT_TRIO_WORKER_ID (the id that their
    answers' x-chat-worker header names): its children, read from /proc."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours
        # Fields after the command name (which may hold spaces): state, ppid, ...
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) != supervisor or state == "Z":
            continue
        for var in environ.split(b"\0"):
            if var.startswith(b"CHAT_TRIO_WORKER_ID="):
                found[var.partition(b"=")[2].decode()] = int(entry.name)
    return found


def pid_running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
