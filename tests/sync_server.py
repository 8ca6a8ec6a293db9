"""`python -m chat_trio` in a subprocess for synchronous tests (schemathesis, hypothesis) and the
soak script: started on a free loopback port read from its "listening on" log line, stderr kept
in a file so a test can look for errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

_LISTENING = re.compile(r"listening on http://[^\s:]+:(\d+)")
# Text log lines are "DATE TIME LEVEL logger: message"; ERROR is what "handler failed", "connection
# from ... failed" and "send failed" are logged at (with their traceback on the following lines).
_ERROR_LINE = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) |^Traceback ")


class Server:
    def __init__(self, tmp: Path, *args: str, log_level: str = "info") -> None:
        self.tmp = tmp
        self.db = tmp / "chat.db"
        self.log_path = tmp / "server.log"
        self._log = self.log_path.open("wb")
        argv = [sys.executable, "-m", "chat_trio", "--host", "127.0.0.1", "--port", "0",
                "--db", str(self.db), "--log-level", log_level,
                "--argon2-time-cost", "1", "--argon2-memory-kib", "1024", "--argon2-parallelism", "1",
                *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_TRIO_")}
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._log, env=env, cwd=tmp)
        deadline = time.monotonic() + 15
        while not (found := _LISTENING.search(self.log())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start:\n" + self.log())
            time.sleep(0.02)
        self.port = int(found.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def errors(self) -> list[str]:
        """Log lines that show a server-side failure (not a client's fault)."""
        return [line for line in self.log().splitlines() if _ERROR_LINE.match(line)]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
