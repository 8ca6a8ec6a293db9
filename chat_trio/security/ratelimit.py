"""In-memory rate limits: events counted in a sliding window (failed logins, registrations),
token buckets (sends, logins, room creation) and exponential backoff (failed logins per account).

All of them read `trio.current_time()`, so tests drive them with a virtual clock. All are bounded
in memory: entries that no longer limit anything are pruned as new keys come in.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

import trio

_PRUNE_EVERY = 1024
Key = Hashable  # an address, a username, a user id, or a tuple of them


def client_network(address: str) -> str:
    """What per-address limits count a client as: an IPv4 address as it is, an IPv6 one by its
    /64. An IPv6 host is given at least a /64 and may send from any address in it, so counted
    address by address it would get a fresh allowance for every request."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return f"{ipaddress.IPv6Address(int(ip) >> 64 << 64)}/64"


class WindowLimit:
    """At most `limit` events per key within `window` seconds; then callers must wait.
    A limit of 0 turns it off."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[Key, deque[float]] = {}
        self._adds = 0

    def retry_after(self, key: Key) -> float:
        """Seconds until `key` may try again; 0 if it may now."""
        times = self._events.get(key)
        if not times or self.limit <= 0:
            return 0.0
        now = trio.current_time()
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.window - now

    def add(self, key: Key) -> None:
        if self.limit <= 0:
            return
        now = trio.current_time()
        self._events.setdefault(key, deque(maxlen=self.limit)).append(now)
        self._adds += 1
        if self._adds % _PRUNE_EVERY == 0:
            horizon = now - self.window
            for k in [k for k, t in self._events.items() if not t or t[-1] <= horizon]:
                del self._events[k]

    def reset(self, key: Key) -> None:
        self._events.pop(key, None)


class TokenBucket:
    """`rate` actions per second per key with bursts of `burst`; rate 0 means unlimited."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[Key, tuple[float, float]] = {}  # key → (tokens, last refill)
        self._takes = 0

    def take(self, key: Key) -> float:
        """Take one token; returns 0 on success or the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = trio.current_time()
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


def backoff_delay(failures: int, free: int, base: float, cap: float) -> float:
    """How long the `failures`-th failure locks a key under Backoff(free, base, cap): nothing for
    the first `free`, then `base`, doubling, at most `cap` seconds."""
    if failures <= free:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - free - 1, 64))


class Backoff:
    """Exponential backoff per key: the first `free` failures cost nothing; each one after that
    locks the key for `base * 2**n` seconds (n = failures beyond `free`, at most `cap` seconds).
    A key's count is forgotten after `memory` seconds without a failure, or by `reset`.
    `free` 0 turns it off.

    Unlike a fixed lock, a guesser gets ever fewer tries (about one per `cap` once it is
    reached), while a lock never lasts longer than `cap`."""

    def __init__(self, free: int, base: float, cap: float, memory: float) -> None:
        self.free = free
        self.base = base
        self.cap = cap
        self.memory = memory
        self._state: dict[Key, tuple[int, float, float]] = {}  # key → (failures, last, locked until)
        self._fails = 0

    def retry_after(self, key: Key) -> float:
        state = self._state.get(key)
        if state is None or self.free <= 0:
            return 0.0
        return max(0.0, state[2] - trio.current_time())

    def fail(self, key: Key) -> None:
        if self.free <= 0:
            return
        now = trio.current_time()
        failures, last, until = self._state.get(key, (0, now, now))
        if now - last > self.memory:
            failures, until = 0, now
        failures += 1
        if failures > self.free:
            until = now + backoff_delay(failures, self.free, self.base, self.cap)
        self._state[key] = (failures, now, until)
        self._fails += 1
        if self._fails % _PRUNE_EVERY == 0:
            for k in [k for k, (_, t, _u) in self._state.items() if now - t > self.memory]:
                del self._state[k]

    def reset(self, key: Key) -> None:
        self._state.pop(key, None)


class OneAtATime:
    """At most one holder per key; the others wait their turn, in order. A key takes memory only
    while someone holds or waits for it, so it cannot grow with the number of keys ever seen."""

    def __init__(self) -> None:
        self._locks: dict[Key, tuple[trio.StrictFIFOLock, list[int]]] = {}  # key → (lock, [users])

    @asynccontextmanager
    async def turn(self, key: Key) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (trio.StrictFIFOLock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
