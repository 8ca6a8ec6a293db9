"""argon2id hashing in worker threads, bounded by its own limiter so logins cannot starve
the store's threads (or the CPU) of everything else, and taken in turns per client address so
one address sending many logins at once cannot queue everyone else behind all of them."""

from __future__ import annotations

import argon2
import trio
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from chat_trio.config import Config
from chat_trio.security.ratelimit import OneAtATime


class Passwords:
    def __init__(self, config: Config) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_kib,
            parallelism=config.argon2_parallelism,
            type=argon2.Type.ID,
        )
        self.limiter = trio.CapacityLimiter(config.hash_threads)
        self.turns = OneAtATime()  # per client address: one hash at a time
        # Verified against when the user does not exist, so that both cases cost one hash.
        self._dummy = self._hasher.hash("not a real password, only spends the same time")

    async def hash(self, password: str, client: str) -> str:
        async with self.turns.turn(client):
            return await trio.to_thread.run_sync(self._hasher.hash, password, limiter=self.limiter)

    def hash_here(self, password: str) -> str:
        """Hash on the calling thread: for the admin command line, which has no event loop."""
        return self._hasher.hash(password)

    async def verify(self, stored: str | None, password: str, client: str) -> bool:
        """True if `password` matches `stored`; with `stored=None` still spends one hash.
        `client` (an address) waits for its own previous hash to finish first."""
        def check() -> bool:
            try:
                return bool(self._hasher.verify(stored or self._dummy, password)) and stored is not None
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        async with self.turns.turn(client):
            return await trio.to_thread.run_sync(check, limiter=self.limiter)

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)
