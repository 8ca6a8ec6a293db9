"""The login policy, after OWASP's Authentication Cheat Sheet ("Login Throttling", "Account
Lockout"): throttle guessing without letting a stranger lock the owner out.

- Every attempt from a client address takes from a token bucket: each one costs a password hash,
  so one address cannot take the hashing threads from everyone else.
- Failures are counted per (username, address) and per address. The first stops one guesser at
  one account; the second stops one address trying many accounts. Neither touches the owner
  signing in from somewhere else.
- Failures per username alone (a guesser with many addresses) only lead to exponential backoff,
  never to a fixed lock, and only for addresses that never signed in to the account: the owner
  keeps signing in from the addresses they used before (OWASP's "trusted device" idea, with the
  address standing in for a device cookie, which an API client may not keep). Only usernames
  that have an account are counted: a name without one protects nothing, and remembering every
  name guessed (for a day) would grow with the guessers' addresses.
- Successful logins per user are limited too: each issues a token row.

A success clears the failures of that (username, address) and the username's backoff, and
remembers the address for the account.
"""

from __future__ import annotations

from chat_trio.config import Config
from chat_trio.security.ratelimit import Backoff, TokenBucket, WindowLimit

BACKOFF_MEMORY = 86400.0  # a username's failures are forgotten after a day without one
KNOWN_ADDRESSES = 8  # per account, the most recent addresses it signed in from


class LoginGuard:
    def __init__(self, config: Config) -> None:
        c = config
        self.attempts = TokenBucket(c.login_rate, c.login_burst)  # per address
        self.successes = WindowLimit(c.login_user_limit, c.login_user_window)  # per username
        self.pair_failures = WindowLimit(c.login_fail_limit, c.login_fail_window)  # (username, address)
        self.address_failures = WindowLimit(c.login_fail_address_limit, c.login_fail_window)
        self.backoff = Backoff(c.login_backoff_after, 1.0, c.login_backoff_max, BACKOFF_MEMORY)
        self._known: dict[str, dict[str, None]] = {}  # username → addresses, oldest first

    def check(self, username: str, address: str) -> float:
        """Seconds the attempt must wait (answer 429), or 0 to go ahead and verify the password."""
        wait = max(
            self.pair_failures.retry_after((username, address)),
            self.address_failures.retry_after(address),
            self.successes.retry_after(username),
            0.0 if self.known(username, address) else self.backoff.retry_after(username),
        )
        return wait or self.attempts.take(address)

    def failed(self, username: str, address: str, *, account: bool) -> None:
        """A wrong password, or (`account` False) a username with no account: the per-username
        backoff only counts names that have one, or each name guessed would be kept a day."""
        self.pair_failures.add((username, address))
        self.address_failures.add(address)
        if account and not self.known(username, address):
            self.backoff.fail(username)

    def succeeded(self, username: str, address: str) -> float:
        """Record a right password; returns the seconds to wait (429) instead when parallel logins
        used up the user's successes while this one was hashing (`check` ran before the hash)."""
        wait = self.successes.retry_after(username)
        if wait:
            return wait
        self.pair_failures.reset((username, address))
        self.backoff.reset(username)
        self.successes.add(username)
        known = self._known.setdefault(username, {})
        known.pop(address, None)
        known[address] = None
        if len(known) > KNOWN_ADDRESSES:
            del known[next(iter(known))]
        return 0.0

    def known(self, username: str, address: str) -> bool:
        return address in self._known.get(username, ())
