"""The login policy (security/logins.py) kept in PostgreSQL, for nodes sharing one database.

A node's memory would give a guesser a fresh allowance on every node started or restarted after
its guesses: here each counter is a row, so every node decides on all the nodes' attempts. The
same rules as LoginGuard, in the tables of the other shared limits (queries.py): the attempt
bucket per address and the backoff per username are `limits` rows, the failures and successes
counted in a window are `limit_events` rows (both purged a day after their last use, with the
other limits), and the addresses an account signed in from are `login_addresses` rows (at most
KNOWN_ADDRESSES per account, as in memory).
"""

from __future__ import annotations

from chat_trio.config import Config
from chat_trio.security.logins import BACKOFF_MEMORY, KNOWN_ADDRESSES
from chat_trio.security.ratelimit import backoff_delay
from chat_trio.store.db import Connection
from chat_trio.store.queries import Limited, Limits, locked_bucket, save_bucket, take_token

BACKOFF_MEMORY_MS = int(BACKOFF_MEMORY * 1000)


def _pair(username: str, address: str) -> str:
    return f"login-fail:{username}@{address}"


def _window_wait(conn: Connection, key: str, limit: int, window: float, now: int) -> float:
    """Seconds until `key` may have another event, as WindowLimit.retry_after: the `limit`-th
    newest event within the window leaves it then (0: fewer than `limit` in it, or no limit)."""
    if limit <= 0:
        return 0.0
    window_ms = int(window * 1000)
    row = conn.execute("SELECT at FROM limit_events WHERE key = ? AND at > ?"
                       " ORDER BY at DESC LIMIT 1 OFFSET ?", (key, now - window_ms, limit - 1)).fetchone()
    return 0.0 if row is None else max(0.0, (row[0] + window_ms - now) / 1000)


def _add_event(conn: Connection, key: str, limit: int, window: float, now: int) -> None:
    """Count an event of `key` (and forget its events older than the window)."""
    if limit > 0:
        conn.execute("DELETE FROM limit_events WHERE key = ? AND at <= ?", (key, now - int(window * 1000)))
        conn.execute("INSERT INTO limit_events (key, at) VALUES (?, ?)", (key, now))


def _known(conn: Connection, username: str, address: str) -> bool:
    return conn.execute("SELECT 1 FROM login_addresses WHERE username = ? AND address = ?",
                        (username, address)).fetchone() is not None


def _backoff_wait(conn: Connection, config: Config, username: str, now: int) -> float:
    """Seconds the username's backoff still locks addresses it does not know (Backoff.retry_after)."""
    row = conn.execute("SELECT tokens, at FROM limits WHERE key = ?",
                       (f"login-backoff:{username}",)).fetchone()
    if row is None or config.login_backoff_after <= 0:
        return 0.0
    failures, at = int(row[0]), int(row[1])
    if failures <= config.login_backoff_after:
        return 0.0
    return max(0.0, at / 1000 + backoff_delay(failures, config.login_backoff_after, 1.0,
                                              config.login_backoff_max) - now / 1000)


def check_limits(config: Config, address: str) -> Limits:
    """The limit rows `check` locks: the address's attempt bucket (a new one is full)."""
    return ((f"login:{address}", float(config.login_burst)),) if config.login_rate > 0 else ()


def failed_limits(config: Config, username: str, address: str, account: bool) -> Limits:
    """The limit rows `failed` locks: those of the windows it counts in (their events are written
    under them) and the username's backoff."""
    c = config
    keys = [_pair(username, address)] if c.login_fail_limit > 0 else []
    keys += [f"login-fail:{address}"] if c.login_fail_address_limit > 0 else []
    keys += [f"login-backoff:{username}"] if account and c.login_backoff_after > 0 else []
    return tuple((key, 0.0) for key in keys)


def succeeded_limits(username: str, address: str) -> Limits:
    """The limit rows `succeeded` locks: the user's successes (and known addresses), and the
    failures and backoff it clears."""
    return tuple((key, 0.0) for key in (f"login-ok:{username}", _pair(username, address),
                                        f"login-backoff:{username}"))


def check(conn: Connection, config: Config, username: str, address: str, now: int) -> None:
    """LoginGuard.check: Limited if the attempt must wait; else it takes one from the address's
    attempt bucket."""
    c = config
    wait = max(
        _window_wait(conn, _pair(username, address), c.login_fail_limit, c.login_fail_window, now),
        _window_wait(conn, f"login-fail:{address}", c.login_fail_address_limit, c.login_fail_window, now),
        _window_wait(conn, f"login-ok:{username}", c.login_user_limit, c.login_user_window, now),
        0.0 if _known(conn, username, address) else _backoff_wait(conn, config, username, now),
    )
    if wait:
        raise Limited(wait)
    if c.login_rate > 0:
        take_token(conn, f"login:{address}", c.login_rate, c.login_burst, now)


def failed(conn: Connection, config: Config, username: str, address: str, account: bool, now: int) -> None:
    """LoginGuard.failed: a wrong password, or (`account` False) a username without an account."""
    c = config
    _add_event(conn, _pair(username, address), c.login_fail_limit, c.login_fail_window, now)
    _add_event(conn, f"login-fail:{address}", c.login_fail_address_limit, c.login_fail_window, now)
    if account and c.login_backoff_after > 0 and not _known(conn, username, address):
        key = f"login-backoff:{username}"
        failures, at = locked_bucket(conn, key, 0, now)  # a row per username, locked: nodes take turns
        save_bucket(conn, key, (0 if now - at > BACKOFF_MEMORY_MS else failures) + 1, now)


def succeeded(conn: Connection, config: Config, username: str, address: str, now: int) -> None:
    """LoginGuard.succeeded: Limited when parallel logins used up the user's successes while this
    one was hashing; else its failures and backoff are cleared and the address remembered."""
    c = config
    locked_bucket(conn, f"login-ok:{username}", 0, now)  # a row per username, locked: an exact count
    wait = _window_wait(conn, f"login-ok:{username}", c.login_user_limit, c.login_user_window, now)
    if wait:
        raise Limited(wait)
    conn.execute("DELETE FROM limit_events WHERE key = ?", (_pair(username, address),))
    conn.execute("DELETE FROM limits WHERE key = ?", (f"login-backoff:{username}",))
    _add_event(conn, f"login-ok:{username}", c.login_user_limit, c.login_user_window, now)
    conn.execute("INSERT INTO login_addresses (username, address, at) VALUES (?, ?, ?)"
                 " ON CONFLICT (username, address) DO UPDATE SET at = excluded.at", (username, address, now))
    conn.execute("DELETE FROM login_addresses WHERE username = ? AND address NOT IN (SELECT address"
                 " FROM login_addresses WHERE username = ? ORDER BY at DESC LIMIT ?)",
                 (username, username, KNOWN_ADDRESSES))
