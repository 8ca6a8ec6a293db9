"""One worker of a `--workers N` server: `python -m chat_trio.cluster.worker`, spawned by the
supervisor (cluster/supervisor.py) with its Config as JSON in CHAT_TRIO_WORKER_CONFIG, its
number in CHAT_TRIO_WORKER_ID and the supervisor's Unix socket in CHAT_TRIO_WORKER_SOCKET.

It runs the single process's stack (HTTP listener, hub, handlers) on its own SO_REUSEPORT
listener with a read-only store: every write and every server-wide limit goes to the supervisor
(`RemoteCommands`), and every commit comes back from it as a C frame that one reader task
applies to the store's feed in commit order (state, then hub), so each of its subscribers sees
each seq once, in order. Start-up: connect, say hello, wait for ready (the supervisor has
subscribed it to the feed), load the state from sqlite, apply the commits buffered meanwhile
(`State.apply` skips what the load saw), then listen. GET /healthz answers from what the
supervisor last said of its writer and database (a `health` frame when that changes), with no
round trip. If the supervisor goes away the worker shuts down and exits (503 from /healthz
meanwhile); SIGTERM drains like the single process.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
from typing import Any

import orjson
import trio

from chat_trio.api.context import Context
from chat_trio.app import _startup_failure, http_server
from chat_trio.cluster import ipc
from chat_trio.cluster.position import MappedPosition
from chat_trio.cluster.remote import RemoteCommands, unavailable
from chat_trio.config import Config
from chat_trio.http.server import HTTPServer, StartupError, open_listeners
from chat_trio.logs import setup_logging
from chat_trio.metrics import Sampled
from chat_trio.rooms.hub import Hub
from chat_trio.security.passwords import Passwords
from chat_trio.store.barrier import ReadBarrier
from chat_trio.store.records import JSON
from chat_trio.store.sqlite import sqlite3
from chat_trio.store.store import Store

log = logging.getLogger("chat_trio.cluster")

# How the supervisor hands a worker its settings (the Config as JSON), its id and its IPC socket.
ENV_CONFIG = "CHAT_TRIO_WORKER_CONFIG"
ENV_ID = "CHAT_TRIO_WORKER_ID"
ENV_SOCKET = "CHAT_TRIO_WORKER_SOCKET"
SCRAPE_TIMEOUT = 5.0  # seconds GET /metrics waits for the supervisor's merge (it asks each worker for 2)
OUTBOX = 4096  # frames queued for the supervisor; calls wait when it is full, relays drop


# -- the link to the supervisor -----------------------------------------------------------------

class Link:
    """The worker's outbound frames, written by one task in the order they were queued."""

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self._stream = stream
        self._out, self._queue = trio.open_memory_channel[bytes](OUTBOX)

    async def send(self, obj: JSON) -> None:
        """Queue a frame, waiting while the queue is full (calls: backpressure, order kept);
        503 once the link is down."""
        data = ipc.json_frame(obj)
        try:
            try:
                self._out.send_nowait(data)  # the common case: no scheduler pass of its own
            except trio.WouldBlock:
                await self._out.send(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise unavailable() from None

    def send_nowait(self, obj: JSON) -> bool:
        """Queue a frame if there is room (relays from the hub, which must not block)."""
        try:
            self._out.send_nowait(ipc.json_frame(obj))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def run(self) -> None:
        """Write the queued frames (all that wait, in one write). A broken socket ends it
        quietly: the reader task sees the same end and shuts the worker down; frames still
        queued are dropped."""
        async with self._queue:
            try:
                async for data in self._queue:
                    await self._stream.send_all(ipc.drain(data, self._queue))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.warning("the supervisor link broke while sending (%s)", exc)


class HubRelay:
    """What this worker's hub tells the other workers, through the supervisor."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def presence(self, user_id: int, online: bool) -> None:
        if not self.link.send_nowait({"presence": user_id, "online": online}):
            log.warning("presence of user %d not relayed: the supervisor link is full", user_id)

    def typing(self, room_id: int, user: JSON) -> None:
        self.link.send_nowait({"typing": room_id, "user": user})  # ephemeral: dropped when full


# -- the worker -------------------------------------------------------------------------------

class Worker:
    def __init__(self, config: Config, worker_id: int, store: Store, stream: trio.SocketStream) -> None:
        self.config = config
        self.worker_id = worker_id
        self.store = store
        self.stream = stream
        self.link = Link(stream)
        self.commands = RemoteCommands(self.link)
        self.hub = Hub()
        self.hub.relay = HubRelay(self.link)
        self.server: HTTPServer | None = None
        self.context: Context | None = None
        self.ready = trio.Event()
        self._buffered: list[bytes] | None = []  # commits that arrive before the state is loaded
        self._online_at_start: list[int] = []
        self._position_at_start = 0  # commits fed before this worker subscribed
        self._position_file = ""  # where the supervisor publishes its newest commit's number
        self.position: MappedPosition | None = None
        self.barrier: ReadBarrier | None = None
        self._scrapes: dict[int, trio.MemorySendChannel[str]] = {}  # GET /metrics waiting for the merge
        self._scrape_ids = itertools.count(1)
        self.port = 0

    # -- frames from the supervisor -------------------------------------------------------

    async def read_loop(self, cancel: trio.CancelScope) -> None:
        """Apply commits in order and route the J frames; on EOF shut down."""
        try:
            async for kind, payload in ipc.read_frames(self.stream):
                if kind == ipc.COMMIT:
                    self._commit(payload)
                elif kind == ipc.JSON:
                    self._message(orjson.loads(payload))
                else:
                    raise ipc.FrameError(f"unknown frame kind {kind!r}")
            log.warning("the supervisor closed the connection: shutting down")
        except (ipc.FrameError, trio.BrokenResourceError, ValueError, KeyError, TypeError) as exc:
            log.error("the supervisor link broke (%s): shutting down", exc)
        finally:
            self.commands.connection_lost()
            if self.barrier is not None:
                self.barrier.close()  # requests waiting to catch up are answered 503 now
            if self.server is None:  # not serving yet: nothing to drain
                cancel.cancel()
            else:
                self.shutdown()

    async def scrape_all(self) -> bytes:
        """GET /metrics on a worker: the supervisor's merge of every process's exposition (this
        worker's own alone if the supervisor does not answer in time)."""
        send, receive = trio.open_memory_channel[str](1)
        scrape_id = next(self._scrape_ids)
        self._scrapes[scrape_id] = send
        try:
            await self.link.send({"metrics": scrape_id})
            with trio.move_on_after(SCRAPE_TIMEOUT):
                return (await receive.receive()).encode()
        finally:
            self._scrapes.pop(scrape_id, None)
        assert self.context is not None
        return self.context.metrics.render()

    def _commit(self, payload: bytes) -> None:
        if self._buffered is not None:
            self._buffered.append(payload)
        else:
            self.store.feed.apply_encoded(payload)

    def _message(self, frame: Any) -> None:
        if not isinstance(frame, dict):
            raise ipc.FrameError("a J frame must hold a JSON object")
        if "reply" in frame:
            self.commands.on_reply(frame)
        elif "health" in frame:
            self.commands.on_health(frame["health"])
        elif "presence" in frame:
            self.hub.set_online_elsewhere(int(frame["presence"]), bool(frame.get("online")))
        elif "typing" in frame:
            self.hub.remote_typing(int(frame["typing"]), frame["user"])
        elif "metrics_reply" in frame:
            waiting = self._scrapes.pop(frame["metrics_reply"], None)
            if waiting is not None:
                waiting.send_nowait(str(frame.get("text", "")))
        elif "metrics" in frame:
            text = b"" if self.context is None else self.context.metrics.render()
            self.link.send_nowait({"metrics_reply": frame["metrics"], "text": text.decode()})
        elif "ready" in frame:
            self._online_at_start = [int(u) for u in frame.get("online") or []]
            self._position_at_start = int(frame.get("position") or 0)
            self._position_file = str(frame.get("position_file") or "")
            self.ready.set()
        else:
            log.warning("an unknown frame from the supervisor: %.200r", frame)

    # -- start and stop ---------------------------------------------------------------------

    async def start(self) -> None:
        """Handshake, load the state, catch up with the buffered commits, then count every
        commit applied for the read barrier (it starts at the supervisor's count at `ready`
        plus those buffered; the load saw every commit before `ready`)."""
        await self.link.send({"hello": self.worker_id})
        await self.ready.wait()
        if self._position_file:
            self.position = await trio.to_thread.run_sync(MappedPosition, self._position_file)
        await self.store.load_remote()
        buffered, self._buffered = self._buffered or [], None
        for payload in buffered:
            self.store.feed.apply_encoded(payload)
        if self.position is not None:
            self.barrier = ReadBarrier(self.position.word, self._position_at_start + len(buffered),
                                       self.config.catch_up_timeout)
            self.store.feed.subscribe(self.barrier.advance)
        for user_id in self._online_at_start:
            self.hub.set_online_elsewhere(user_id, True)
        self.hub.state = self.store.state
        self.store.feed.subscribe(self.hub.react)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """The HTTP stack, as App runs it, until `shutdown()` has drained it."""
        listeners = await open_listeners(self.config.host, self.config.port, reuse_port=True)
        passwords = await trio.to_thread.run_sync(Passwords, self.config)
        self.context = context = Context(self.config, self.store, self.hub, passwords, self.commands,
                                         scrape_all=self.scrape_all, barrier=self.barrier)
        self.server = http_server(context, listeners, self.worker_id)
        barrier = self.barrier
        if barrier is not None:
            context.metrics.add(Sampled("chat_trio_catch_up_waits", "requests and websocket frames "
                                        "that waited for this worker to apply commits published "
                                        "before they arrived", lambda: barrier.waits, "counter"))
            context.metrics.add(Sampled("chat_trio_catch_up_refusals", "of those, the ones refused "
                                        "503 (not caught up within --catch-up-timeout)",
                                        lambda: barrier.refusals, "counter"))
        await self.server.serve(task_status=task_status)

    def shutdown(self) -> None:
        """Stop accepting, close websockets (1001), let in-flight requests finish."""
        self.hub.shutdown()
        if self.server is not None:
            self.server.shutdown()


async def run_worker(config: Config, worker_id: int, socket_path: str) -> None:
    worker: Worker | None = None
    try:
        store = await Store.open_remote(config)
    except sqlite3.Error as exc:
        raise StartupError(f"cannot open the database {config.db}: {exc}") from None
    try:
        try:
            stream = await trio.open_unix_socket(socket_path)
        except OSError as exc:
            raise StartupError(f"cannot reach the supervisor at {socket_path}: "
                               f"{exc.strerror or exc}") from None
        async with stream, trio.open_nursery() as nursery:
            worker = Worker(config, worker_id, store, stream)
            nursery.start_soon(worker.link.run)
            nursery.start_soon(worker.read_loop, nursery.cancel_scope)
            nursery.start_soon(_signals, worker, nursery.cancel_scope)
            await worker.start()
            await nursery.start(_serve_then_stop, worker, nursery.cancel_scope)
    finally:
        if worker is not None and worker.position is not None:
            worker.position.close()  # every task that reads it has ended
        with trio.CancelScope(shield=True):
            await store.close()


async def _serve_then_stop(worker: Worker, stop: trio.CancelScope,
                           *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve HTTP; once it has drained (after `shutdown()`), stop the link tasks too."""
    await worker.serve(task_status=task_status)
    stop.cancel()


async def _signals(worker: Worker, stop: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("%s: shutting down", signal.Signals(signum).name)
            if worker.server is None:  # still starting: nothing to drain
                stop.cancel()
            else:
                worker.shutdown()
            return


def main() -> None:
    config = Config(**orjson.loads(os.environ[ENV_CONFIG]))
    worker_id = int(os.environ[ENV_ID])
    socket_path = os.environ[ENV_SOCKET]
    setup_logging(config.log_level, config.log_format, f"worker {worker_id}")
    try:
        trio.run(run_worker, config, worker_id, socket_path)
    except BaseException as exc:
        failure = _startup_failure(exc)
        if failure is None:
            raise
        log.critical("worker %d: %s", worker_id, failure)
        sys.exit(1)
    log.info("worker %d stopped", worker_id)


if __name__ == "__main__":
    main()
