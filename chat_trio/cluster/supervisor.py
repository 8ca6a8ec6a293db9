"""The `--workers N` supervisor: the only sqlite writer, the sequencer, and its workers' keeper.

It reserves the port (so every worker's SO_REUSEPORT listener, respawned ones included, gets the
same one), opens the Store (migrations, group-commit writer, purge task), serves its workers on a
private Unix socket, and spawns N worker processes (`python -m chat_trio.cluster.worker`), each
told its id, the IPC path and the Config. It serves no HTTP itself.

Per worker connection (frames in cluster/ipc.py):
- every commit goes out as one C frame, encoded once for all workers, in commit order;
- calls `{"call", "op", "args"}` run through a `Commands` (api/commands.py), each in its own task
  so a worker's calls pipeline; the reply goes out on the same ordered queue as the commits, after
  the C frame of the commit that made it (the writer tells the feed before it wakes the caller);
- presence deltas are summed over workers: each worker hears when a user comes online or goes
  offline on *the others*; a worker that goes away takes its users offline;
- typing frames are relayed to the other workers; /metrics asks every worker and merges;
- whether its store accepts writes goes to every worker when it changes (`health_frame`; to a
  worker that connects while it does not, right after `ready`): a worker's /healthz answers
  from that, so health checks never load the writer's process.

A worker's outbound queue is bounded: the writer never waits for a slow worker. A worker whose
queue is full is disconnected (logged); it exits, is respawned, and its clients resume.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing, suppress
from functools import partial
from typing import Any

import orjson
import prometheus_client
import trio
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from chat_trio.api.commands import Commands
from chat_trio.api.context import Context
from chat_trio.app import running_store
from chat_trio.cluster import ipc
from chat_trio.cluster.nodes import NodeLink, linked_nodes
from chat_trio.cluster.position import PublishedPosition
from chat_trio.cluster.remote import begin_call, health_frame
from chat_trio.cluster.worker import ENV_CONFIG, ENV_ID, ENV_SOCKET
from chat_trio.config import Config
from chat_trio.http.server import _where, open_listeners
from chat_trio.metrics import Registry, Sampled
from chat_trio.rooms.hub import Hub
from chat_trio.store.changes import Commit, encode
from chat_trio.store.records import JSON

log = logging.getLogger("chat_trio.supervisor")

# How a worker is started; tests point it at a stand-in.
WORKER_ARGV = [sys.executable, "-m", "chat_trio.cluster.worker"]

OUTBOUND_BYTES = 64 * 1024 * 1024  # bytes queued to one worker before it is cut off
SENDS_IN_FLIGHT = 4096  # a worker's sends awaiting their commit before its calls wait
HELLO_TIMEOUT = 10.0
METRICS_TIMEOUT = 2.0
RESPAWN_FIRST, RESPAWN_MAX = 0.1, 5.0
YOUNG = 10.0  # a worker that dies sooner than this after its start backs off longer

CommandsFactory = Callable[[Context], Commands]


def local_commands(context: Context) -> Commands:
    """The in-process Commands the supervisor serves its workers with (api/commands.py)."""
    return context.commands


class WorkerLink:
    """One connected worker: its ordered outbound queue, its online users, its pending scrapes."""

    def __init__(self, worker_id: int, stream: trio.SocketStream) -> None:
        self.id = worker_id
        self.stream = stream
        # Bounded by bytes queued (checked in `offer`), not by frames: a commit may be large.
        self.outbox, self._outbox_out = trio.open_memory_channel[bytes](math.inf)
        self.queued = 0
        self.cut_off = False
        self.online: set[int] = set()
        self.scope = trio.CancelScope()
        self.scrapes: dict[int, trio.MemorySendChannel[str]] = {}
        # Replies to sends, awaited in order by one task (they finish in the order queued).
        self.sends, self.answers = trio.open_memory_channel[Callable[[], Awaitable[Any]]](SENDS_IN_FLIGHT)

    def offer(self, data: bytes) -> None:
        """Queue a frame without waiting; a worker that cannot keep up is disconnected."""
        if self.cut_off:
            return
        if self.queued + len(data) > OUTBOUND_BYTES:
            log.warning("worker %d is %d bytes behind; disconnecting it (it restarts and its "
                        "clients resume)", self.id, self.queued)
            self.cut_off = True
            self.scope.cancel()
            return
        try:
            self.outbox.send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        self.queued += len(data)

    def send(self, obj: Any) -> None:
        self.offer(ipc.json_frame(obj))

    async def pump(self) -> None:
        """Write the queue to the socket, in order: whatever is queued goes out in one write."""
        async for data in self._outbox_out:
            batch = ipc.drain(data, self._outbox_out)
            await self.stream.send_all(batch)
            self.queued -= len(batch)


@dataclasses.dataclass
class OtherNodes:
    """The users online on other nodes of the same PostgreSQL, as if on one more worker."""

    id: int = 0
    online: set[int] = dataclasses.field(default_factory=set)


class Supervisor:
    def __init__(self, config: Config, commands: CommandsFactory | None = None) -> None:
        self.config = config
        self._commands_factory = commands or local_commands
        self.commands: Commands | None = None
        self.port = 0
        self.links: dict[int, WorkerLink] = {}
        self.online_count: dict[int, int] = {}  # user id → number of workers they are online on
        self.nodes: NodeLink | None = None  # on PostgreSQL: presence and typing to other nodes
        self.other_nodes = OtherNodes()
        self.processes: dict[int, trio.Process] = {}
        self.stopping = False
        self.socket_path = ""  # set once its workers can connect to it
        # Commits fed to the workers so far, published for their read barriers (store/barrier.py).
        self.position = 0
        self.published: PublishedPosition | None = None
        self._ready = trio.Event()
        self._stop = trio.Event()
        self._seen: set[int] = set()
        self._scrape_ids = itertools.count(1)
        self.registry = Registry()
        self.health: JSON = {"health": None}  # the last health_frame sent to the workers

    # -- life cycle --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        """Reserve the port, open the store, serve and keep the workers until `stop()`."""
        c = self.config
        reserved = await open_listeners(c.host, c.port, reuse_port=True, listen=False)
        try:
            self.port = reserved[0].getsockname()[1]
            self.config = dataclasses.replace(c, port=self.port)
            async with running_store(self.config, Hub()) as context, linked_nodes(
                    context.store, c.node_heartbeat, self._presence_elsewhere,
                    self._typing_elsewhere) as nodes:
                self.commands = self._commands_factory(context)
                self.nodes = nodes
                directory = await trio.to_thread.run_sync(tempfile.mkdtemp, None, "chat_trio-")
                try:
                    self.published = await trio.to_thread.run_sync(
                        PublishedPosition, os.path.join(directory, "position"))
                    context.store.feed.subscribe(self.broadcast)
                    check = context.store.check_writable
                    context.store.watch_writable(partial(self._health_changed, check))
                    self._health_changed(check)
                    self._register_metrics(context)
                    await self._serve(os.path.join(directory, "ipc.sock"), reserved, task_status)
                finally:
                    # Unset first: the store goes on committing until it closes (purges, other
                    # nodes' commits on PostgreSQL), and `broadcast` must not publish into a
                    # released mapping.
                    published, self.published = self.published, None
                    if published is not None:
                        published.close()
                    await trio.to_thread.run_sync(shutil.rmtree, directory, True)
        finally:
            for sock in reserved:
                sock.close()

    async def _serve(self, path: str, reserved: list[socket.socket],
                     task_status: trio.TaskStatus[Supervisor]) -> None:
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with listener:
            await listener.bind(path)
            os.chmod(path, 0o600)
            listener.listen(256)
            self.socket_path = path
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._accept, listener, nursery)
                for worker_id in range(1, self.config.workers + 1):
                    nursery.start_soon(self._keep_worker, worker_id)
                with trio.move_on_after(HELLO_TIMEOUT * 3):
                    await self._ready.wait()
                    await self._answering(reserved[0].getsockname())
                for sock in reserved:
                    log.info("listening on http://%s (%d workers)", _where(sock.family, sock.getsockname()),
                             self.config.workers)
                task_status.started(self)
                await self._stopped()
                nursery.cancel_scope.cancel()

    async def _answering(self, address: Any) -> None:
        """Wait until some worker accepts on the port: "listening on" means connectable."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address[0], address[0])
        while not self.stopping:
            try:
                probe = await trio.open_tcp_stream(host, address[1])
            except OSError:
                await trio.sleep(0.02)
                continue
            await probe.aclose()
            return

    async def _stopped(self) -> None:
        """Wait for `stop()`, then for the workers to drain (SIGKILL past the grace period)."""
        await self._stop.wait()
        for proc in self.processes.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.config.shutdown_grace + 5):
            for proc in list(self.processes.values()):
                await proc.wait()
        for worker_id, proc in self.processes.items():
            if proc.returncode is None:
                log.warning("worker %d did not stop in time; killing it", worker_id)
                proc.kill()
                await proc.wait()

    def stop(self) -> None:
        """Drain: the workers stop serving and exit, then the writer stops and the store closes."""
        self.stopping = True
        self._stop.set()
        self._ready.set()  # stop waiting for workers that have not said hello yet

    # -- workers -----------------------------------------------------------------------------

    def _worker_env(self, worker_id: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in (ENV_CONFIG, ENV_ID, ENV_SOCKET)}
        env[ENV_CONFIG] = orjson.dumps(dataclasses.asdict(self.config)).decode()
        env[ENV_ID] = str(worker_id)
        env[ENV_SOCKET] = self.socket_path
        return env

    async def _keep_worker(self, worker_id: int) -> None:
        """Run worker `worker_id`; respawn it when it exits unexpectedly, backing off (0.1 s
        doubling to 5 s) while it keeps dying young."""
        delay = RESPAWN_FIRST
        while not self.stopping:
            started = trio.current_time()
            try:
                proc = await trio.lowlevel.open_process(WORKER_ARGV, env=self._worker_env(worker_id))
            except OSError as exc:
                what = f"could not start ({exc.strerror or exc})"
            else:
                self.processes[worker_id] = proc
                try:
                    code = await proc.wait()
                finally:
                    if proc.returncode is None:  # the supervisor itself is being cancelled
                        with trio.CancelScope(shield=True):
                            proc.kill()
                            await proc.wait()
                what = f"(pid {proc.pid}) exited with {code}"
            if self.stopping:
                return
            if trio.current_time() - started >= YOUNG:
                delay = RESPAWN_FIRST
            log.warning("worker %d %s; starting it again in %.1f s", worker_id, what, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, RESPAWN_MAX)

    async def _accept(self, listener: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            sock, _ = await listener.accept()
            nursery.start_soon(self._connection, trio.SocketStream(sock))

    async def _connection(self, stream: trio.SocketStream) -> None:
        """One worker's connection, from hello to close. A protocol error ends only this one."""
        link: WorkerLink | None = None
        try:
            async with stream, aclosing(ipc.read_frames(stream)) as frames:
                with trio.fail_after(HELLO_TIMEOUT):
                    kind, payload = await anext(frames)
                hello = ipc.decode_json(payload) if kind == ipc.JSON else {}
                worker_id = hello.get("hello")
                if (not isinstance(worker_id, int) or not 1 <= worker_id <= self.config.workers
                        or worker_id in self.links):
                    raise ipc.FrameError(f"expected a hello from a new worker, got {hello!r:.100}")
                link = WorkerLink(worker_id, stream)
                self._join(link)
                with link.scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(link.pump)
                        nursery.start_soon(self._answer_sends, link)
                        await self._read(link, frames, nursery)
                        nursery.cancel_scope.cancel()
        except (ipc.FrameError, trio.TooSlowError, StopAsyncIteration) as exc:
            log.error("worker connection dropped: %s", exc or "closed before its hello")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            # A worker that breaks the protocol loses its connection, never the supervisor.
            log.exception("worker %s: connection failed", "?" if link is None else link.id)
        finally:
            if link is not None:
                self._leave(link)

    def _join(self, link: WorkerLink) -> None:
        """Subscribe it to the feed, then tell it who is online elsewhere and how many commits
        came before its subscription (where its read barrier starts counting): `ready` is its
        first frame, and every commit after its subscription follows it."""
        self.links[link.id] = link
        assert self.published is not None  # mapped before any worker can connect
        link.send({"ready": True, "online": sorted(self.online_count), "position": self.position,
                   "position_file": self.published.path})
        if self.health["health"] is not None:
            link.send(self.health)
        self._seen.add(link.id)
        if len(self._seen) == self.config.workers:
            self._ready.set()
        log.info("worker %d connected", link.id)

    def _leave(self, link: WorkerLink) -> None:
        if self.links.get(link.id) is link:
            del self.links[link.id]
        for user_id in list(link.online):
            self._presence(link, user_id, False)
        for reply in link.scrapes.values():
            reply.close()
        link.outbox.close()
        if not self.stopping:
            log.warning("worker %d disconnected", link.id)

    async def _read(self, link: WorkerLink, frames: AsyncGenerator[tuple[bytes, bytes]],
                    nursery: trio.Nursery) -> None:
        async for kind, payload in frames:
            if kind != ipc.JSON:
                raise ipc.FrameError("a worker sent a commit frame")
            msg = ipc.decode_json(payload)
            if "call" in msg:
                await self._call(link, msg, nursery)
            elif "presence" in msg:
                self._presence(link, int(msg["presence"]), bool(msg.get("online")))
            elif "typing" in msg:
                relay = {"typing": msg["typing"], "user": msg.get("user"), "from": link.id}
                for other in list(self.links.values()):
                    if other is not link:
                        other.send(relay)
                if self.nodes is not None and isinstance(msg.get("user"), dict):
                    self.nodes.typing(int(msg["typing"]), msg["user"])
            elif "metrics_reply" in msg:
                waiting = link.scrapes.pop(msg["metrics_reply"], None)
                if waiting is not None:
                    waiting.send_nowait(str(msg.get("text", "")))
            elif "metrics" in msg:
                nursery.start_soon(self._scrape_for, link, msg["metrics"])
            else:
                log.warning("worker %d sent an unknown message: %.100r", link.id, msg)

    # -- the feed ----------------------------------------------------------------------------

    def broadcast(self, commit: Commit) -> None:
        """Feed reaction: number the commit and publish its number (before the writer wakes
        anyone, so before any of its writes is acknowledged), then encode it once and queue it
        to every worker."""
        self.position += 1
        if self.published is not None:
            self.published.publish(self.position)
        data = ipc.commit_frame(encode(commit.changes))
        for link in list(self.links.values()):
            link.offer(data)

    def _health_changed(self, check: Callable[[], None]) -> None:
        """Store reaction: its writer stopped, or its database went away or came back; each
        worker hears the new answer once, on its ordered queue."""
        frame = health_frame(check)
        if frame != self.health:
            self.health = frame
            for link in list(self.links.values()):
                link.send(frame)

    # -- calls -------------------------------------------------------------------------------

    async def _call(self, link: WorkerLink, msg: dict[str, Any], nursery: trio.Nursery) -> None:
        """Start one call in the order the worker sent it (a send is queued to the writer here,
        so its messages get increasing seqs); its answer, like every call's, is awaited in its
        own task and queued behind the commit that made it."""
        assert self.commands is not None  # set before any worker is accepted
        reply = await begin_call(self.commands, msg)
        if msg.get("op") == "submit_message":
            # Sends commit in the order they were queued, so one task answers them in that
            # order, without a task of its own each (the queue is bounded: the read waits). No
            # scheduler pass while there is room, so the writer takes every send read so far
            # as one batch.
            try:
                link.sends.send_nowait(reply)
            except trio.WouldBlock:
                await link.sends.send(reply)
        else:
            nursery.start_soon(self._answer, link, reply)

    @staticmethod
    async def _answer(link: WorkerLink, reply: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        link.send(await reply())

    @staticmethod
    async def _answer_sends(link: WorkerLink) -> None:
        async for reply in link.answers:
            link.send(await reply())
            while True:  # the rest of the batch, without a scheduler pass each
                try:
                    reply = link.answers.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                link.send(await reply())

    # -- presence ----------------------------------------------------------------------------

    def _presence_elsewhere(self, user_id: int, online: bool) -> None:
        """The other PostgreSQL nodes (cluster/nodes.py): they count as one more worker."""
        self._presence(self.other_nodes, user_id, online)

    def _typing_elsewhere(self, room_id: int, user: JSON) -> None:
        for link in list(self.links.values()):
            link.send({"typing": room_id, "user": user, "from": 0})

    def _presence(self, origin: WorkerLink | OtherNodes, user_id: int, online: bool) -> None:
        """Worker `origin` says `user_id` came online (first socket) or went offline (last).
        Each other worker hears of a change of "online on some worker other than me", and the
        other nodes of one of "online on this node"."""
        if online == (user_id in origin.online):
            return
        if self.nodes is not None and origin is not self.other_nodes:
            others = user_id in self.other_nodes.online
            here_before = self.online_count.get(user_id, 0) - others > 0
            here_after = self.online_count.get(user_id, 0) + (1 if online else -1) - others > 0
            if here_before != here_after:
                self.nodes.presence(user_id, here_after)
        before = self.online_count.get(user_id, 0)
        after = before + (1 if online else -1)
        if online:
            origin.online.add(user_id)
        else:
            origin.online.discard(user_id)
        if after:
            self.online_count[user_id] = after
        else:
            self.online_count.pop(user_id, None)
        for link in list(self.links.values()):
            if link is origin:
                continue
            mine = user_id in link.online
            if (before - mine > 0) != (after - mine > 0):
                link.send({"presence": user_id, "online": after - mine > 0})

    # -- metrics -----------------------------------------------------------------------------

    def _register_metrics(self, context: Context) -> None:
        store = context.store
        self.registry.add(store.writer.batch_sizes)
        for metric in (
            Sampled("chat_trio_messages_committed", "messages committed since start",
                    lambda: store.messages_committed, "counter"),
            Sampled("chat_trio_store_commits", "transactions committed by the writer",
                    lambda: store.writer.commits, "counter"),
            Sampled("chat_trio_store_queue_depth", "writes waiting for the writer",
                    lambda: store.writer.queued),
            Sampled("chat_trio_workers_connected", "workers connected to the supervisor",
                    lambda: len(self.links)),
            *([] if store.node is None else store.node.metrics()),
        ):
            self.registry.add(metric)

    async def _scrape_for(self, asker: WorkerLink, request_id: Any) -> None:
        asker.send({"metrics_reply": request_id, "text": await self.scrape()})

    async def scrape(self) -> str:
        """Every worker's exposition and the supervisor's own, merged with a `worker` label."""
        texts: dict[str, str] = {"supervisor": self.registry.render().decode()}

        async def ask(link: WorkerLink) -> None:
            send, receive = trio.open_memory_channel[str](1)
            scrape_id = next(self._scrape_ids)
            link.scrapes[scrape_id] = send
            link.send({"metrics": scrape_id})
            with trio.move_on_after(METRICS_TIMEOUT):
                with suppress(trio.EndOfChannel):
                    texts[str(link.id)] = await receive.receive()
            link.scrapes.pop(scrape_id, None)

        async with trio.open_nursery() as nursery:
            for link in list(self.links.values()):
                nursery.start_soon(ask, link)
        return merge_expositions(texts)


class _Merged(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_expositions(texts: dict[str, str]) -> str:
    """Prometheus text expositions, by worker label value, as one with `worker` on every sample."""
    merged: dict[str, Metric] = {}
    for worker in sorted(texts, key=lambda w: (not w.isdigit(), int(w) if w.isdigit() else 0, w)):
        for family in text_string_to_metric_families(texts[worker]):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type,
                                                    family.unit)
            for sample in family.samples:
                into.samples.append(sample._replace(labels={**sample.labels, "worker": worker}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(merged.values()))
    return prometheus_client.generate_latest(registry).decode()


async def main(config: Config) -> None:
    """Supervise until SIGTERM/SIGINT, then drain the workers and stop."""
    supervisor = Supervisor(config)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await nursery.start(supervisor.run)
            async for signum in signals:
                log.info("%s: stopping the workers", signal.Signals(signum).name)
                supervisor.stop()
                break
    log.info("stopped")
