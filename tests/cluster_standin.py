"""A stand-in `--workers` worker and Commands, to test the supervisor on its own.

Run by the supervisor as `python -m tests.cluster_standin` (cluster/supervisor.WORKER_ARGV):
it says hello, waits for ready, listens on the shared port (SO_REUSEPORT) and answers
- GET /pid: its pid and worker id;
- GET /create_user/{name}: a `create_user` call through the supervisor; the answer says whether
  the commit frame naming that user arrived before the reply (read-your-writes);
- GET /create_room/{name}: a call that the stand-in Commands refuses with 429;
- GET /metrics: the merged exposition of every worker;
- GET /presence/{user}/{online}: a presence delta; GET /online: what it heard from the others.
It exits when the supervisor's socket closes, and drains on SIGTERM like a worker.
"""

from __future__ import annotations

import itertools
import os
import signal
from typing import Any, cast

import orjson
import trio

from chat_trio.api.commands import Commands
from chat_trio.api.context import Context
from chat_trio.cluster import ipc
from chat_trio.cluster.worker import ENV_CONFIG, ENV_ID, ENV_SOCKET
from chat_trio.config import Config
from chat_trio.errors import APIError
from chat_trio.http.router import Route, Router
from chat_trio.http.server import HTTPServer, open_listeners
from chat_trio.http.types import Request, Response, json_response
from chat_trio.logs import setup_logging
from chat_trio.store.changes import UserCreated, decode
from chat_trio.store.records import User


class StandInCommands:
    """Two operations of the Commands protocol, enough to exercise dispatch and errors."""

    def __init__(self, context: Context) -> None:
        self.context = context

    async def create_user(self, username: str, password_hash: str) -> User:
        return await self.context.store.create_user(username, password_hash)

    async def create_room(self, user_id: int, name: str, topic: str) -> int:
        raise APIError(429, "rate_limited", "too many rooms", headers=[(b"retry-after", b"7")],
                       extra={"retry_after_ms": 7000})


def commands(context: Context) -> Commands:
    """Only two of the operations: the others are answered 500 `internal` by the supervisor."""
    return cast(Commands, StandInCommands(context))


class Worker:
    def __init__(self) -> None:
        self.config = Config(**orjson.loads(os.environ[ENV_CONFIG]))
        self.id = int(os.environ[ENV_ID])
        self.events: list[tuple[str, Any]] = []  # ("user", name) per commit, ("reply", id) per reply
        self.replies: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self.ids = itertools.count(1)
        self.online: set[int] = set()
        self.stream: trio.SocketStream | None = None
        self.sending = trio.Lock()  # one send_all at a time on the socket

    async def send(self, message: dict[str, Any]) -> None:
        assert self.stream is not None
        async with self.sending:
            await ipc.send_json(self.stream, message)

    async def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.stream is not None
        request_id = next(self.ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self.replies[request_id] = send
        key = "metrics" if "metrics" in message else "call"
        await self.send({**message, key: request_id})
        with trio.fail_after(5):
            return await receive.receive()

    async def read(self, frames: Any, server: HTTPServer) -> None:
        assert self.stream is not None
        async for kind, payload in frames:
            if kind == ipc.COMMIT:
                self.events += [("user", c.username) for c in decode(payload) if isinstance(c, UserCreated)]
                continue
            msg = ipc.decode_json(payload)
            if "reply" in msg:
                self.events.append(("reply", msg["reply"]))
                self.replies.pop(msg["reply"]).send_nowait(msg)
            elif "metrics_reply" in msg:
                self.replies.pop(msg["metrics_reply"]).send_nowait(msg)
            elif "metrics" in msg:
                text = f"# TYPE standin_up gauge\nstandin_up {self.id}\n"
                await self.send({"metrics_reply": msg["metrics"], "text": text})
            elif "presence" in msg:
                (self.online.add if msg["online"] else self.online.discard)(msg["presence"])
        server.shutdown()  # the supervisor is gone

    async def pid(self, request: Request) -> Response:
        return json_response({"pid": os.getpid(), "worker": self.id})

    async def create_user(self, request: Request) -> Response:
        name = request.params["name"]
        reply = await self.ask({"op": "create_user", "args": {"username": name, "password_hash": "x"}})
        seen = self.events.index(("user", name)) < self.events.index(("reply", reply["reply"]))
        return json_response({"reply": reply, "commit_first": seen})

    async def create_room(self, request: Request) -> Response:
        args = {"user_id": 1, "name": request.params["name"], "topic": ""}
        return json_response(await self.ask({"op": "create_room", "args": args}))

    async def metrics(self, request: Request) -> Response:
        reply = await self.ask({"metrics": 0})
        return Response(200, reply["text"].encode(), [])

    async def presence(self, request: Request) -> Response:
        online = request.params["online"] == "on"
        await self.send({"presence": request.params["user"], "online": online})
        return json_response({})

    async def heard(self, request: Request) -> Response:
        return json_response(sorted(self.online))

    async def run(self) -> None:
        setup_logging(self.config.log_level, self.config.log_format, f"worker {self.id}")
        self.stream = await trio.open_unix_socket(os.environ[ENV_SOCKET])
        await ipc.send_json(self.stream, {"hello": self.id})
        frames = ipc.read_frames(self.stream)
        _, payload = await anext(frames)
        ready = ipc.decode_json(payload)
        assert ready["ready"] is True, ready
        self.online = set(ready["online"])
        routes = [Route("GET", "/pid", self.pid), Route("GET", "/metrics", self.metrics),
                  Route("GET", "/create_user/{name}", self.create_user),
                  Route("GET", "/create_room/{name}", self.create_room),
                  Route("GET", "/presence/{user:int}/{online}", self.presence),
                  Route("GET", "/online", self.heard)]
        listeners = await open_listeners(self.config.host, self.config.port, reuse_port=True)
        server = HTTPServer(self.config, Router(routes), listeners, worker_id=self.id)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.read, frames, server)

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        server.shutdown()
                        return

                nursery.start_soon(stop_on_signal)
                await server.serve()
                nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(Worker().run)
