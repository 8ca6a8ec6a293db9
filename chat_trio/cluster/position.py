"""The supervisor's newest commit number, in one word of shared memory that every worker maps.

The supervisor numbers the commits it feeds to its workers and stores the newest number here
before it acknowledges any write of that commit (cluster/supervisor.py); a worker reads it at the
start of each request to know whether its own state has caught up (store/barrier.py). A mapped
file in the supervisor's private directory, so the per-request read is a memory load: no
syscall, no message.

The word is written and read through a memoryview cast to "Q": one aligned native 8-byte copy,
which compiles to a single store or load, and aligned 64-bit accesses are single-copy atomic on
x86-64 and arm64, so a reader never sees half of an update. Numbers only grow.
"""

from __future__ import annotations

import mmap
import os

WORD = 8  # bytes


class PublishedPosition:
    """The supervisor's side: creates the file (0600) and writes the number."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, WORD)
            self._map = mmap.mmap(fd, WORD)
        finally:
            os.close(fd)
        self.path = path
        self.word = memoryview(self._map).cast("Q")

    def publish(self, position: int) -> None:
        self.word[0] = position

    def close(self) -> None:
        self.word.release()
        self._map.close()


class MappedPosition:
    """A worker's side: the same word, mapped read-only; `word[0]` is the newest number."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, WORD, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self.word = memoryview(self._map).cast("Q")

    def close(self) -> None:
        self.word.release()
        self._map.close()
