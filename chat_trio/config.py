"""The server's settings: one frozen value built once at start and passed down."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


def parse_workers(raw: str) -> int:
    """`--workers`: a count, or `auto` for one per CPU."""
    if raw.strip().lower() == "auto":
        return os.cpu_count() or 1
    return int(raw)


@dataclass(frozen=True, slots=True)
class Config:
    """Every tunable of the server. Each field is also a `--flag` and a `CHAT_TRIO_*` variable."""

    host: str = _opt("127.0.0.1", "address to listen on")
    port: int = _opt(8080, "TCP port (0 picks a free one)")
    db: str = _opt("./chat.db", "sqlite database file")
    database: str = _opt("", "postgresql://user@host/db selects PostgreSQL (several nodes may share it); "
                             "sqlite:///path is the same as --db path; empty: sqlite at --db")
    log_level: str = _opt("info", "debug, info (one access line per request), warning or error",
                          choices=("debug", "info", "warning", "error"))
    log_format: str = _opt("text", "text or json", choices=("text", "json"))
    durability: str = _opt(
        "full",
        "full: a 2xx means the data is on disk (fsync per commit); "
        "normal: survives a process crash but not a power loss",
        choices=("full", "normal"),
    )
    workers: int = _opt(1, "worker processes serving HTTP on the same port; more than 1 adds a supervisor "
                           "that owns the database writer (auto: one per CPU)", parse=parse_workers)

    # HTTP limits
    max_head_bytes: int = _opt(16 * 1024, "largest request head (431 beyond)")
    max_body_bytes: int = _opt(64 * 1024, "largest request body (413 beyond)")
    head_timeout: float = _opt(10.0, "seconds for a request head to arrive after its first byte (408)")
    body_timeout: float = _opt(10.0, "seconds a request body may stay idle (408)")
    min_body_rate: float = _opt(1024.0, "bytes/s a request body must average: the whole body gets "
                                "body_timeout + its size / this rate (408 beyond)")
    keepalive_timeout: float = _opt(30.0, "seconds an idle keep-alive connection stays open")
    send_timeout: float = _opt(10.0, "seconds a client may take to accept a response")
    max_requests_per_connection: int = _opt(1000, "requests served on one connection")
    max_connections: int = _opt(10_000, "open connections; more are answered 503 and closed")
    max_connections_per_address: int = _opt(
        1024, "open connections from one client address (the peer, or the X-Forwarded-For client of a "
        "trusted proxy once its request names it); more are answered 503 and closed")
    shutdown_grace: float = _opt(5.0, "seconds in-flight requests get to finish at shutdown")

    # Accounts
    token_ttl: float = _opt(30 * 86400.0, "token lifetime in seconds")
    argon2_time_cost: int = _opt(3, "argon2id passes")
    argon2_memory_kib: int = _opt(65536, "argon2id memory in KiB")
    argon2_parallelism: int = _opt(4, "argon2id lanes")
    hash_threads: int = _opt(2, "threads that may hash passwords at once")
    login_rate: float = _opt(1.0, "login attempts per second per client address, each a password hash "
                                  "(0: no limit)")
    login_burst: int = _opt(20, "login attempts a client address may burst")
    login_user_limit: int = _opt(20, "successful logins per user per login_user_window (0: no limit)")
    login_user_window: float = _opt(3600.0, "seconds over which successful logins are counted")
    login_fail_limit: int = _opt(10, "failed logins per username from one client address before 429")
    login_fail_address_limit: int = _opt(50, "failed logins per client address, all usernames, before "
                                             "429 (0: no limit)")
    login_fail_window: float = _opt(300.0, "seconds over which failed logins are counted")
    login_backoff_after: int = _opt(100, "failed logins of one username from addresses it never signed "
                                         "in from, before exponential backoff (0: off)")
    login_backoff_max: float = _opt(900.0, "longest login backoff in seconds (it doubles from 1 s)")
    max_tokens_per_user: int = _opt(100, "live tokens per user; a login beyond revokes the oldest "
                                         "(0: no cap)")
    token_purge_interval: float = _opt(600.0, "seconds between purges of expired tokens")
    register_limit: int = _opt(20, "registrations per client address per register_window (0: no limit)")
    register_window: float = _opt(600.0, "seconds over which registrations are counted")
    registration: str = _opt("open", "open: anyone may register; closed: POST /register answers 403 "
                                     "registration_closed and admins create accounts",
                             choices=("open", "closed"))
    send_rate: float = _opt(20.0, "message sends per second per user (0 turns the limit off)")
    send_burst: int = _opt(40, "message sends a user may burst")
    room_create_rate: float = _opt(0.1, "rooms a user may create per second (0 turns the limit off)")
    room_create_burst: int = _opt(20, "rooms a user may create in a burst")
    invite_rate: float = _opt(1.0, "invites a user may send per second (0 turns the limit off)")
    invite_burst: int = _opt(20, "invites a user may send in a burst")

    # Validation
    username_min: int = _opt(3, "shortest username")
    username_max: int = _opt(32, "longest username")
    password_min: int = _opt(8, "shortest password")
    password_max: int = _opt(1024, "longest password")
    room_name_max: int = _opt(64, "longest room name")
    topic_max: int = _opt(256, "longest room topic")
    text_max: int = _opt(4000, "longest message text")
    txn_id_max: int = _opt(64, "longest txn_id")
    reason_max: int = _opt(500, "longest reason given for a kick or ban")

    # Store
    readers: int = _opt(4, "sqlite reader connections")
    search_readers: int = _opt(2, "reader connections searches may hold at once (the rest stay free)")
    write_batch: int = _opt(256, "most writes gathered into one transaction")
    write_queue: int = _opt(4096, "writes waiting for the writer before callers wait")
    recent_cache: int = _opt(200, "newest messages per room kept in memory")
    wal_autocheckpoint: int = _opt(1000, "WAL pages after which a commit copies the WAL into the database")

    # Websocket
    heartbeat_s: float = _opt(30.0, "seconds between websocket pings")
    ws_auth_timeout: float = _opt(10.0, "seconds a websocket has to authenticate")
    ws_max_frame: int = _opt(64 * 1024, "largest inbound websocket message (1009 beyond)")
    ws_queue: int = _opt(1024, "outbound frames buffered per websocket (4008 when full)")
    ws_rate: float = _opt(50.0, "inbound websocket frames per second per connection")
    ws_origins: str = _opt("", "comma-separated extra Origins allowed to open a websocket")
    max_websockets_per_user: int = _opt(32, "open websockets per user; one more is refused with 429 "
                                            "(1008 when the token came in the first frame)")
    ws_typing_rate: float = _opt(1.0, "typing frames per second per user across all their websockets; "
                                      "more are dropped (0 turns the limit off)")
    ws_typing_burst: int = _opt(5, "typing frames a user may burst")

    # Deployment
    trusted_proxies: str = _opt("", "comma-separated addresses of reverse proxies whose X-Forwarded-For "
                                    "names the client (for rate limits and logs)")
    node_heartbeat: float = _opt(5.0, "seconds between a PostgreSQL node's presence heartbeats; a node "
                                      "that stops them has its users shown offline within about two")
    catch_up_timeout: float = _opt(2.0, "seconds a --workers worker holds a request until it has applied "
                                        "every commit acknowledged before the request arrived; 503 beyond")
    admin_socket: str = _opt("", "Unix socket (mode 0600) whose requests are admin requests without a token, "
                                 "for python -m chat_trio admin; empty: the database path + .sock; off: none")

    def __post_init__(self) -> None:
        """Refuse settings that cannot work, with the flag's name (the CLI shows it as a usage
        error). Zero is allowed where it means "off" (send_rate, ws_rate, register_limit, port)."""
        may_be_zero = {"port", "send_rate", "ws_rate", "ws_typing_rate", "register_limit", "username_min",
                       "password_min", "login_rate", "login_user_limit", "login_fail_address_limit",
                       "login_backoff_after", "max_tokens_per_user", "room_create_rate", "invite_rate"}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and (value < 0 or (value == 0 and f.name not in may_be_zero)):
                raise ValueError(f"--{f.name.replace('_', '-')} must be positive (got {value})")
        if self.port > 65535:
            raise ValueError(f"--port must be at most 65535 (got {self.port})")
        try:
            self.proxies()
        except ValueError as exc:
            raise ValueError(f"--trusted-proxies: {exc}") from None
        if self.database.startswith("sqlite:///"):
            object.__setattr__(self, "db", self.database.removeprefix("sqlite:///"))
        elif self.database and not self.postgres:
            raise ValueError("--database must be postgresql://… or sqlite:///path")
        if self.db in ("", ":memory:"):
            raise ValueError("--db must be a file: the server needs a database on disk")

    @property
    def postgres(self) -> bool:
        """Whether `database` selects the PostgreSQL backend."""
        return self.database.startswith(("postgresql://", "postgres://"))

    def admin_socket_path(self) -> str | None:
        """Where the local admin socket listens (None: `--admin-socket off`)."""
        if self.admin_socket == "off":
            return None
        return self.admin_socket or self.db + ".sock"

    def proxies(self) -> frozenset[str]:
        """`trusted_proxies` as normalised addresses (ValueError for one that is not an IP)."""
        addresses = (a.strip() for a in self.trusted_proxies.split(","))
        return frozenset(str(ipaddress.ip_address(a)) for a in addresses if a)
