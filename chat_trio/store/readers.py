"""A small pool of read-only connections, each used by one worker thread at a time.

WAL lets these read while the writer commits. The limiter bounds how many threads read at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from chat_trio.store.sqlite import connect, sqlite3

T = TypeVar("T")


class ReaderPool:
    def __init__(self, path: str, size: int) -> None:
        self._free = [connect(path, readonly=True) for _ in range(size)]
        self._all = list(self._free)
        self.limiter = trio.CapacityLimiter(size)

    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        async with self.limiter:
            conn = self._free.pop()
            try:
                return await trio.to_thread.run_sync(query, conn)
            finally:
                self._free.append(conn)

    def close(self) -> None:
        for conn in self._all:
            conn.close()
