"""The read barrier: a request waits until this process has applied every commit made before it
arrived, so it never answers from a state older than a write already acknowledged elsewhere.

A process whose state is fed by another's commits (a `--workers` worker, fed by the supervisor)
learns of a commit later than the process that acknowledged it. The writer numbers the commits it
feeds (1, 2, 3, …) and publishes the newest number before it acknowledges anything
(cluster/position.py: a word of shared memory); this process counts the commits it has applied.
A request whose process has applied at least the published number goes on at the cost of one
memory read and one compare; one that arrives behind waits, for `timeout` at most, until the feed
has applied that many, then is refused 503 rather than answered from stale state.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from chat_trio.errors import APIError
from chat_trio.store.changes import Commit


def behind() -> APIError:
    """The answer to a request this process could not catch up for in time (or ever: the feed
    is gone). Nothing was done, so a retry is safe."""
    return APIError(503, "unavailable", "the server is catching up with recent writes; retry",
                    headers=[(b"retry-after", b"1")])


class ReadBarrier:
    def __init__(self, published: Sequence[int], applied: int, timeout: float) -> None:
        """`published[0]`: the number of the newest commit acknowledged anywhere (a word of shared
        memory: reading it is a memory read); `applied`: how many of them this process had
        applied when it started counting."""
        self.published = published
        self.applied = applied
        self.timeout = timeout
        self.closed = False
        self._moved: trio.Event | None = None  # set and dropped by the next commit, while waited on
        self.waits = 0  # requests that had to wait (for /metrics)
        self.refusals = 0  # of those, the ones answered 503

    def current(self) -> bool:
        """Has this process applied every commit published so far? The per-request check."""
        return self.applied >= self.published[0]

    def advance(self, _commit: Commit) -> None:
        """Feed reaction: one more commit applied. Wakes the waiting requests, if any."""
        self.applied += 1
        moved = self._moved
        if moved is not None:
            self._moved = None
            moved.set()

    def close(self) -> None:
        """The feed is gone (the supervisor went away, shutdown): no wait can end well any more,
        so every waiting request, and every later one that is behind, is refused at once."""
        self.closed = True
        moved, self._moved = self._moved, None
        if moved is not None:
            moved.set()

    async def wait(self) -> None:
        """Return once this process has applied every commit published when the call began;
        503 (`behind()`) after `timeout`, or at once if the feed is gone."""
        target = self.published[0]
        self.waits += 1
        with trio.move_on_after(self.timeout):
            while self.applied < target and not self.closed:
                if self._moved is None:
                    self._moved = trio.Event()
                await self._moved.wait()
        if self.applied < target:
            self.refusals += 1
            raise behind()
