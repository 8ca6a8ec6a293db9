"""The change feed between PostgreSQL nodes: NOTIFY out, LISTEN in, each message once and in order.

Every node's writer notifies its commits' change records (`payloads`) on the schema's channel,
inside the transaction, so they are delivered only after COMMIT and in commit order. Every node
runs one `Listener`, which always drains its connection (a stalled listener would fill the
server's notify queue, and then every NOTIFY fails at commit) and hands each payload to the
node's `OrderedFeed`, as the node's own writer hands it each commit it makes.

`OrderedFeed` is the one entrance to the node's `Feed` (store/feed.py). A room's messages reach
it from two sources (this node's commits, applied at once for read-your-writes, and the other
nodes' notifications) and may come out of order, twice, or not at all (a notification that was
late, lost with a listener's connection, or too large to carry): a message at or below the room's
last applied seq is dropped, the next one is applied, one further ahead is held until the gap
fills. A gap still open after `GAP_WAIT`, a pointer to a message too large to notify, and every
room after a listener reconnect are filled from the database (`catch_up`). Other changes (users,
rooms, memberships, tokens) are idempotent and applied as they come.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
import psycopg
import trio

from chat_trio.store import queries
from chat_trio.store.changes import (
    Change,
    Commit,
    MemberLeft,
    MessageCommitted,
    RoomCreated,
    TokensRevoked,
    decode,
)
from chat_trio.store.feed import Feed
from chat_trio.store.pg import PgConnection, PgReaderPool
from chat_trio.store.records import entry_json
from chat_trio.store.state import State
from chat_trio.store.writer import StoreClosed

log = logging.getLogger("chat_trio.store")

NOTIFY_LIMIT = 7900  # bytes of one NOTIFY payload (the server's limit is 8000)
GAP_WAIT = 0.2  # seconds a gap may stay open, waiting for its late notification, before a read
CATCH_UP_CHUNK = 1000  # messages read per query when filling a gap
RECONNECT_FIRST, RECONNECT_MAX = 0.1, 2.0  # seconds between attempts to listen again, doubling


def channel(key: int) -> str:
    """The NOTIFY channel of the schema with this key (pg.schema_key)."""
    return f"chat_trio_{key}"


def payloads(changes: list[Change]) -> list[str]:
    """A commit's changes as NOTIFY payloads of at most NOTIFY_LIMIT bytes, in order: JSON lists
    of change records (the `decode` format); a message too large for one payload goes as the
    pointer `{"seqs": [room_id, seq]}`, which receivers resolve by reading the database."""
    out: list[str] = []
    parts: list[bytes] = []
    size = 2

    def flush() -> None:
        nonlocal size
        if parts:
            out.append((b"[" + b",".join(parts) + b"]").decode())
            parts.clear()
            size = 2

    for change in changes:
        records: list[Any]
        if isinstance(change, TokensRevoked) and len(change.digests) > 50:
            d = change.digests
            records = [TokensRevoked(d[i:i + 50]).pack() for i in range(0, len(d), 50)]
        else:
            records = [change.pack()]
        for record in records:
            data = orjson.dumps(record)
            if len(data) + 2 > NOTIFY_LIMIT:
                assert isinstance(change, MessageCommitted)
                flush()
                pointer = {"seqs": [change.message["room_id"], change.message["seq"]]}
                out.append(orjson.dumps(pointer).decode())
                continue
            if size + len(data) + 1 > NOTIFY_LIMIT:
                flush()
            parts.append(data)
            size += len(data) + 1
    flush()
    return out


class OrderedFeed:
    """The node's entrance to its Feed (see the module docstring)."""

    def __init__(self, feed: Feed, readers: PgReaderPool) -> None:
        self.feed = feed
        self.state = feed.state
        self.readers = readers
        self._held: dict[int, dict[int, MessageCommitted]] = {}  # room → seq → message ahead of a gap
        self._due: dict[int, float] = {}  # room → when its gap is filled from the database
        self._target: dict[int, int] = {}  # room → a seq known to be committed there
        self._wake = trio.Event()
        self.catch_ups = 0  # gaps filled from the database (a figure for the tests and /metrics)

    # -- the two sources ---------------------------------------------------------------------

    def apply(self, commit: Commit) -> None:
        """A commit: this node's (right after COMMIT) or another node's (from its notification)."""
        ready: list[Change] = []
        applied: dict[int, int] = {}  # room → its last seq once `ready` is applied
        for change in commit.changes:
            if isinstance(change, MessageCommitted):
                self._message(change, ready, applied)
            else:
                ready.append(change)
        if ready:
            self.feed.apply(Commit(tuple(ready)))

    def behind(self, room_id: int, seq: int, now: bool = False) -> None:
        """`seq` is committed in the room: read up to it from the database (after GAP_WAIT unless
        `now`) if it has not arrived by then."""
        room = self.state.rooms.get(room_id)
        if room is not None and seq <= room.last_seq:
            return
        self._target[room_id] = max(seq, self._target.get(room_id, 0))
        due = trio.current_time() + (0 if now else GAP_WAIT)
        self._due[room_id] = min(due, self._due.get(room_id, math.inf))
        self._wake.set()

    def _message(self, change: MessageCommitted, ready: list[Change], applied: dict[int, int]) -> None:
        message = change.message
        room_id, seq = message["room_id"], message["seq"]
        room = self.state.rooms.get(room_id)
        if room is None and not any(isinstance(c, RoomCreated) and c.id == room_id for c in ready):
            self.behind(room_id, seq, now=True)  # a room this node has not heard of: it resyncs
            return
        expected = applied.get(room_id, 0 if room is None else room.last_seq) + 1
        if seq < expected:
            return
        if seq > expected:
            self._held.setdefault(room_id, {})[seq] = change
            self.behind(room_id, seq)
            return
        ready.append(change)
        held = self._held.get(room_id)
        while held and (following := held.pop(seq + 1, None)) is not None:
            ready.append(following)
            seq += 1
        applied[room_id] = seq
        if held is not None and not held:
            del self._held[room_id]
            self._due.pop(room_id, None)
            self._target.pop(room_id, None)

    # -- filling gaps from the database ------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background task: fill each room's gap once it is due."""
        task_status.started()
        while True:
            now = trio.current_time()
            due = [room_id for room_id, at in self._due.items() if at <= now]
            if not due:
                self._wake = trio.Event()
                with trio.move_on_at(min(self._due.values(), default=math.inf)):
                    await self._wake.wait()
                continue
            for room_id in due:
                try:
                    await self.catch_up(room_id)
                except StoreClosed:
                    log.warning("could not read room %d's missing messages; retrying", room_id)
                    self._due[room_id] = trio.current_time() + GAP_WAIT
                except Exception:
                    log.exception("could not read room %d's missing messages; retrying", room_id)
                    self._due[room_id] = trio.current_time() + RECONNECT_MAX
                    await trio.sleep(0)

    async def catch_up(self, room_id: int) -> None:
        """Read the room's entries after its last applied seq up to its target and apply them."""
        if room_id not in self.state.rooms:
            await self.resync()
        target = self._target.get(room_id, 0)
        # The room is looked up again after every wait: a resync meanwhile replaces its object.
        while (room := self.state.rooms.get(room_id)) is not None and room.last_seq < target:
            first = room.last_seq + 1
            rows = await self.readers.read(
                partial(queries.messages_between, room_id=room_id, first=first,
                        last=first + CATCH_UP_CHUNK - 1))
            if (room := self.state.rooms.get(room_id)) is None or room.last_seq + 1 != first:
                continue  # a notification filled part of it meanwhile
            if not rows:
                break
            if any(row[3] not in self.state.users or (row[8] is not None and row[8] not in self.state.users)
                   for row in rows):
                await self.resync()  # an author or subject this node has not heard of yet
                continue
            self.catch_ups += 1
            self.apply(Commit(tuple(MessageCommitted(entry_json(row, self.state.users)) for row in rows)))
        if room is None or room.last_seq >= self._target.get(room_id, 0):
            self._due.pop(room_id, None)
            self._target.pop(room_id, None)
            held = self._held.pop(room_id, {})
            if room is not None:
                self.apply(Commit(tuple(c for s, c in sorted(held.items()) if s > room.last_seq)))
        else:  # not all there yet (its target grew meanwhile): again shortly, not in a tight loop
            self._due[room_id] = trio.current_time() + GAP_WAIT

    async def resync(self) -> None:
        """After a listener reconnect (or at start): load the state afresh from one snapshot and
        take it in place of this node's, keeping each known room's last applied seq and recent
        entries, then fill every room that is behind from the database (so the hub delivers what
        was missed, in order). Members who left meanwhile have their subscriptions ended, and the
        websockets of tokens revoked meanwhile are closed (4001)."""
        fresh = State(self.state.recent_cache)
        cached = list(self.state.tokens)  # the tokens in use here (open websockets' among them)
        live = await self.readers.read(partial(_load_snapshot, fresh, cached))
        state = self.state
        left = [MemberLeft(room.id, user_id) for room in state.rooms.values() for user_id in room.members
                if user_id not in (fresh.rooms[room.id].members if room.id in fresh.rooms else ())]
        if left:
            self.feed.apply(Commit(tuple(left)))
        behind = {room.id: room.last_seq for room in fresh.rooms.values()}
        for room in fresh.rooms.values():  # a room new to this node has no subscribers here yet
            if (known := state.rooms.get(room.id)) is not None:
                # (and its text count at that seq: the entries after it are applied again)
                room.last_seq, room.recent, room.text_count = known.last_seq, known.recent, known.text_count
        state.take(fresh)
        state.show_deleted()  # the kept entries may predate deletes whose records were missed
        # Tokens revoked meanwhile close their websockets (4001); the others are read again on
        # their next use (the revocation counter is bumped either way).
        self.feed.apply(Commit((TokensRevoked(tuple(d for d in cached if d not in live)),)))
        for room_id, last_seq in behind.items():
            self.behind(room_id, last_seq, now=True)


def _load_snapshot(state: State, tokens: list[bytes], conn: PgConnection) -> set[bytes]:
    """Thread: fill `state` from one snapshot; which of `tokens` still exist in it."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        state.load(conn)
        if not tokens:
            return set()
        rows = conn.execute("SELECT hash FROM tokens WHERE hash = ANY(?)", (tokens,)).fetchall()
        return {bytes(row[0]) for row in rows}
    finally:
        conn.execute("COMMIT")


class Listener:
    """The node's LISTEN connection, Trio-native: psycopg's libpq socket with
    `trio.lowlevel.wait_readable`, then `consume_input()` / `notifies()`. It reconnects with
    backoff when the connection drops and resyncs after each (re)connect, since notifications
    sent meanwhile are lost. `own_pid()` names this node's writer connection, whose
    notifications are skipped: the writer applied them already."""

    def __init__(self, dsn: str, key: int, ordered: OrderedFeed, own_pid: Callable[[], int],
                 node_id: str = "") -> None:
        self.dsn = dsn
        self.channel = channel(key)
        self.ordered = ordered
        self.own_pid = own_pid
        self.connected = False
        self.on_connected: Callable[[], None] | None = None  # told when `connected` changes
        self.reconnects = 0
        self.node_id = node_id  # the node's notes other than commits carry it: skipped here
        # Who hears the notifications that are not commits (JSON objects: presence, typing).
        self.hooks: list[Callable[[dict[str, Any]], None]] = []

    def receive(self, payload: str) -> None:
        """One NOTIFY payload: a commit of another node's, a pointer to a message too large to
        carry (`{"seqs": [room, seq]}`), or something for the hooks."""
        if not payload.startswith("{"):
            self.ordered.apply(Commit(tuple(decode(payload))))
            return
        note = orjson.loads(payload)
        if not isinstance(note, dict):
            raise ValueError("a notification object must be a JSON object")
        if "seqs" in note:
            room_id, seq = note["seqs"]
            self.ordered.behind(int(room_id), int(seq), now=True)
            return
        if note.get("node") == self.node_id:
            return
        for hook in self.hooks:
            hook(note)

    def _connect(self) -> PgConnection:
        conn = PgConnection.connect(self.dsn)
        conn.raw.execute(f"LISTEN {self.channel}")
        return conn

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        delay = RECONNECT_FIRST
        started = False
        while True:
            try:
                conn = await trio.to_thread.run_sync(self._connect)
            except psycopg.Error as exc:
                log.warning("cannot listen for other nodes' commits (%s); retrying in %.1f s",
                            str(exc).strip() or type(exc).__name__, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            delay = RECONNECT_FIRST
            try:
                self._set_connected(True)
                await self.ordered.resync()
                if not started:
                    started = True
                    task_status.started()
                await self._drain(conn)
            except (psycopg.Error, OSError, StoreClosed) as exc:
                self.reconnects += 1
                log.warning("lost the connection that listens for other nodes' commits (%s); "
                            "reconnecting", str(exc).strip() or type(exc).__name__)
            finally:
                self._set_connected(False)
                conn.close()

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            if self.on_connected is not None:
                self.on_connected()

    async def _drain(self, conn: PgConnection) -> None:
        pgconn = conn.raw.pgconn
        fd = pgconn.socket
        while True:
            await trio.lowlevel.wait_readable(fd)
            pgconn.consume_input()
            while (note := pgconn.notifies()) is not None:
                if note.be_pid == self.own_pid():
                    continue
                try:
                    self.receive(note.extra.decode())
                except (ValueError, TypeError, KeyError):
                    log.exception("a notification that is not a commit was ignored")
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise psycopg.OperationalError("the connection was closed")
