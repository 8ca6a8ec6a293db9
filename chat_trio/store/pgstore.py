"""Opening the store on PostgreSQL (`--database postgresql://…`): one node of possibly several.

The same `Store`, `State`, `Feed` and queries as on sqlite; what differs is the writer's
transaction (pgwriter.py), the reader pool (pg.py) and `PgNode`: the listener that brings the
other nodes' commits and the ordered entrance every commit passes through (pgfeed.py).
"""

from __future__ import annotations

import secrets
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
import trio

from chat_trio.config import Config
from chat_trio.metrics import Sampled
from chat_trio.store import queries
from chat_trio.store.pg import PgConnection, PgReaderPool, schema_key, unreachable
from chat_trio.store.pgfeed import NOTIFY_LIMIT, Listener, OrderedFeed, channel
from chat_trio.store.pgschema import migrate
from chat_trio.store.pgwriter import PgWriter
from chat_trio.store.records import now_ms
from chat_trio.store.writer import StoreClosed

if TYPE_CHECKING:
    from chat_trio.store.store import Store


class PgNode:
    """This node's part of the feed between nodes."""

    def __init__(self, store: Store, key: int, writer: PgWriter) -> None:
        self.id = secrets.token_hex(8)  # this node, in the notifications it sends besides commits
        self.writer = writer
        self.readers: PgReaderPool = store.readers  # type: ignore[assignment]
        self.ordered = OrderedFeed(store.feed, self.readers)
        self.listener = Listener(store.config.database, key, self.ordered, lambda: writer.pid, self.id)
        writer.on_commit = self.ordered.apply

    def notify(self, conn: PgConnection, body: dict[str, Any]) -> None:
        """Thread: send the other nodes `body` (a JSON object: presence, typing) on
        the feed's channel, within `conn`'s transaction if one is open. Their listeners hand it
        to their hooks."""
        note = orjson.dumps({**body, "node": self.id}).decode()
        if len(note) <= NOTIFY_LIMIT:
            conn.execute("SELECT pg_notify(?, ?)", (self.listener.channel, note))

    async def announce(self, body: dict[str, Any]) -> None:
        """`notify` on a connection of its own, now; dropped while PostgreSQL is unreachable."""
        with suppress(StoreClosed):
            await self.readers.read(partial(self.notify, body=body))

    def check_reachable(self) -> None:
        """StoreClosed (503) while the listening connection is down. It is this node's one
        connection that is always open and always read, so it notices at once when the server
        goes away (the socket reads EOF or a reset) and is made again (backoff up to
        RECONNECT_MAX) once the server answers; the writer's and the readers' connections would
        only find out at their next use. What it cannot see is a path that silently drops
        packets: that shows only when the kernel gives up on the connection."""
        if not self.listener.connected:
            raise unreachable()

    def metrics(self) -> list[Sampled]:
        """For /metrics: the feed between nodes."""
        listener, ordered = self.listener, self.ordered
        return [
            Sampled("chat_trio_pg_listener_connected",
                    "1 while this node listens to the other nodes' commits", lambda: int(listener.connected)),
            Sampled("chat_trio_pg_listener_reconnects", "times the listening connection was lost and made "
                    "again (each followed by a resync)", lambda: listener.reconnects, "counter"),
            Sampled("chat_trio_pg_gaps_filled",
                    "reads that filled a gap in a room's messages from the database",
                    lambda: ordered.catch_ups, "counter"),
        ]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.ordered.run)
            await nursery.start(self.listener.run)
            task_status.started()

    def close(self) -> None:
        self.writer.close()


async def open_node(cls: type[Store], config: Config) -> Store:
    """Migrate (once across nodes), purge expired tokens, load the state; the listener started by
    `Store.run` resyncs whatever commits after this load."""
    dsn = config.database

    def setup() -> tuple[Store, int]:
        conn = PgConnection.connect(dsn)
        try:
            migrate(conn)
            _, key = schema_key(conn)
            queries.delete_expired_tokens(conn, now_ms())
            store = cls(config, None, PgReaderPool(dsn, config.readers))
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            store.state.load(conn)
            conn.execute("COMMIT")
            return store, key
        finally:
            conn.close()

    try:
        store, key = await trio.to_thread.run_sync(setup)
    except psycopg.Error as exc:
        raise RuntimeError(" ".join(str(exc).split()) or type(exc).__name__) from None
    writer = PgWriter(dsn, channel(key), max_batch=config.write_batch, queue_size=config.write_queue)
    store._writer = writer
    store.node = PgNode(store, key, writer)
    return store
