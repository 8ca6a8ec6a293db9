"""In-memory rate limits: events counted in a sliding window (failed logins, registrations) and
token buckets (sends).

Both are bounded in memory: entries that no longer limit anything are pruned as new keys come in.
"""

from __future__ import annotations

import time
from collections import deque

_PRUNE_EVERY = 1024


class WindowLimit:
    """At most `limit` events per key within `window` seconds; then callers must wait.
    A limit of 0 turns it off."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = {}
        self._adds = 0

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again; 0 if it may now."""
        times = self._events.get(key)
        if not times or self.limit <= 0:
            return 0.0
        now = time.monotonic()
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.window - now

    def add(self, key: str) -> None:
        if self.limit <= 0:
            return
        self._events.setdefault(key, deque(maxlen=self.limit)).append(time.monotonic())
        self._adds += 1
        if self._adds % _PRUNE_EVERY == 0:
            horizon = time.monotonic() - self.window
            for k in [k for k, t in self._events.items() if not t or t[-1] <= horizon]:
                del self._events[k]

    def reset(self, key: str) -> None:
        self._events.pop(key, None)


class TokenBucket:
    """`rate` actions per second per key with bursts of `burst`; rate 0 means unlimited."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[int, tuple[float, float]] = {}  # key → (tokens, last refill)
        self._takes = 0

    def take(self, key: int) -> float:
        """Take one token; returns 0 on success or the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens - 1.0, now)
        self._takes += 1
        if self._takes % _PRUNE_EVERY == 0:
            full = self.burst / self.rate
            for k in [k for k, (_, t) in self._buckets.items() if now - t >= full]:
                del self._buckets[k]
        return 0.0
