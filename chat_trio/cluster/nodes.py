"""What the nodes on one PostgreSQL share besides the feed: presence and typing.

`NodeLink` is the hub's `Relay` (rooms/hub.py) towards the other nodes, as a worker's is towards
its supervisor:

- presence: each node keeps a row per user online on it (`presence`) under its row in `nodes`,
  whose `seen_at` it refreshes every `node_heartbeat` seconds, and reads which users are online on
  the nodes seen within the last `STALE_AFTER` heartbeats. A change on a node is written at once
  and announced with a NOTIFY, so the others read it then rather than at their next heartbeat;
  a node that dies stops refreshing, and its users are offline everywhere within about two
  heartbeats. A node that stops cleanly deletes its row (its users go offline at once).
- typing: coalesced into at most one NOTIFY per node every `TYPING_EVERY` seconds.

Both ride on the feed's channel as JSON objects (PgNode.notify; pgfeed.Listener's hooks).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

import trio

from chat_trio.store.pg import PgConnection
from chat_trio.store.records import JSON, now_ms
from chat_trio.store.store import Store
from chat_trio.store.writer import StoreClosed

log = logging.getLogger("chat_trio.nodes")

STALE_AFTER = 2.5  # heartbeats without one after which a node's users count as offline
TYPING_EVERY = 0.1  # seconds: at most one typing NOTIFY per node this often
FORGET_AFTER = 20  # heartbeats after which a dead node's rows are deleted


class NodeLink:
    def __init__(self, store: Store, heartbeat: float, on_presence: Callable[[int, bool], None],
                 on_typing: Callable[[int, JSON], None]) -> None:
        assert store.node is not None
        self.pg = store.node
        self.id = store.node.id
        self.readers = store.node.readers
        self.heartbeat = heartbeat
        self.on_presence = on_presence
        self.on_typing = on_typing
        self.online: set[int] = set()  # users with a websocket on this node
        self.elsewhere: set[int] = set()  # users online on another live node
        self._written: set[int] = set()  # this node's presence rows
        self._typing: dict[tuple[int, int], JSON] = {}
        self._presence_changed = trio.Event()
        self._typed = trio.Event()
        store.node.listener.hooks.append(self.receive)

    # -- the hub's Relay ---------------------------------------------------------------------

    def presence(self, user_id: int, online: bool) -> None:
        if online:
            self.online.add(user_id)
        else:
            self.online.discard(user_id)
        self._presence_changed.set()

    def typing(self, room_id: int, user: JSON) -> None:
        self._typing[(room_id, int(user["id"]))] = user
        self._typed.set()

    # -- from the other nodes ----------------------------------------------------------------

    def receive(self, note: dict[str, Any]) -> None:
        if "typing" in note:
            for room_id, user in note["typing"]:
                self.on_typing(int(room_id), user)
        elif "presence" in note:
            self._presence_changed.set()  # read the change now, not at the next heartbeat

    # -- tasks -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await self._sync()
            nursery.start_soon(self._keep_presence)
            nursery.start_soon(self._send_typing)
            task_status.started()

    async def _keep_presence(self) -> None:
        while True:
            with trio.move_on_after(self.heartbeat):
                await self._presence_changed.wait()
            await self._sync()

    async def _sync(self) -> None:
        self._presence_changed = trio.Event()
        try:
            elsewhere = await self.readers.read(partial(self._write_and_read, set(self.online)))
        except StoreClosed:
            return  # PostgreSQL is down: try again at the next heartbeat
        for user_id in elsewhere - self.elsewhere:
            self.on_presence(user_id, True)
        for user_id in self.elsewhere - elsewhere:
            self.on_presence(user_id, False)
        self.elsewhere = elsewhere

    def _write_and_read(self, online: set[int], conn: PgConnection) -> set[int]:
        """Thread: this node's heartbeat and presence rows, and who is online on the others."""
        now = now_ms()
        beat = int(self.heartbeat * 1000)
        conn.execute("BEGIN")
        try:
            conn.execute("INSERT INTO nodes (node, seen_at) VALUES (?, ?)"
                         " ON CONFLICT (node) DO UPDATE SET seen_at = excluded.seen_at", (self.id, now))
            added, removed = online - self._written, self._written - online
            if removed:
                conn.execute("DELETE FROM presence WHERE node = ? AND user_id = ANY(?)",
                             (self.id, list(removed)))
            if added:
                conn.execute("INSERT INTO presence (node, user_id) SELECT ?, unnest(?::bigint[])"
                             " ON CONFLICT DO NOTHING", (self.id, list(added)))
            if added or removed:
                self.pg.notify(conn, {"presence": True})
            conn.execute("DELETE FROM nodes WHERE seen_at < ?", (now - FORGET_AFTER * beat,))
            rows = conn.execute(
                "SELECT DISTINCT p.user_id FROM presence p JOIN nodes n ON n.node = p.node"
                " WHERE p.node <> ? AND n.seen_at > ?", (self.id, now - int(STALE_AFTER * beat))).fetchall()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._written = online
        return {row[0] for row in rows}

    async def _send_typing(self) -> None:
        while True:
            await self._typed.wait()
            self._typed = trio.Event()
            pending = [[room_id, user] for (room_id, _), user in self._typing.items()]
            self._typing.clear()
            await self.pg.announce({"typing": pending})  # a burst too large to carry is dropped
            await trio.sleep(TYPING_EVERY)

    async def close(self) -> None:
        """Stopping cleanly: this node's users go offline on the others at once."""

        def leave(conn: PgConnection) -> None:
            conn.execute("DELETE FROM nodes WHERE node = ?", (self.id,))
            self.pg.notify(conn, {"presence": True})

        with trio.CancelScope(shield=True), trio.move_on_after(2), suppress(StoreClosed):
            await self.readers.read(leave)


@asynccontextmanager
async def linked_nodes(store: Store, heartbeat: float, on_presence: Callable[[int, bool], None],
                       on_typing: Callable[[int, JSON], None]) -> AsyncIterator[NodeLink | None]:
    """A running NodeLink on a PostgreSQL node (None on sqlite, which has no other nodes)."""
    if store.node is None:
        yield None
        return
    link = NodeLink(store, heartbeat, on_presence, on_typing)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        try:
            yield link
        finally:
            nursery.cancel_scope.cancel()
            await link.close()
