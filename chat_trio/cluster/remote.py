"""`RemoteCommands`: a worker's `context.commands`, each call a J frame to the supervisor.

A call is `{"call": id, "op": name, "args": {...}}` (token digests as hex); the answer is
`{"reply": id, "ok": result}` or `{"reply": id, "error": {status, code, message, headers,
extra}}`, re-raised here as the same APIError. The supervisor sends the commit a write made (a C
frame) before its reply on the same ordered stream, so when a call returns its effect is already
in this worker's state (read-your-writes). Calls still waiting when the connection drops fail
with 503 unavailable. Whether the supervisor accepts writes is not a call: it sends
`{"health": null | error}` (`health_frame`) when that changes, and the worker's /healthz answers
from the last one it got.

The supervisor's side of the same encoding is `begin_call`: it starts one call in arrival order
and returns what to await for its reply frame.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import trio

from chat_trio.api.commands import Commands
from chat_trio.errors import APIError
from chat_trio.store.records import JSON, Message, User

log = logging.getLogger("chat_trio.cluster")

Finish = Callable[[], Awaitable[tuple[Message, bool]]]


class Sender(Protocol):
    async def send(self, obj: JSON) -> None:
        """Queue one J frame for the supervisor, in call order (waits while the queue is full)."""


def unavailable() -> APIError:
    return APIError(503, "unavailable", "the server is restarting; retry",
                    headers=[(b"retry-after", b"1")])


# -- errors and results across the socket ---------------------------------------------------

def encode_error(exc: APIError) -> JSON:
    return {"status": exc.status, "code": exc.code, "message": exc.message,
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in exc.headers],
            "extra": exc.extra}


def health_frame(check: Callable[[], None]) -> JSON:
    """What the supervisor tells its workers of `check()` (Store.check_writable): `{"health":
    null}` while it passes, else the 503 it raised, for their /healthz to answer."""
    try:
        check()
    except APIError as exc:
        return {"health": encode_error(exc)}
    return {"health": None}


def decode_error(err: Any) -> APIError:
    if not isinstance(err, dict) or not isinstance(err.get("status"), int):
        log.error("the supervisor sent a malformed error: %.200r", err)
        return APIError(500, "internal", "internal server error")
    headers = [(str(n).encode("latin-1"), str(v).encode("latin-1")) for n, v in err.get("headers") or []]
    return APIError(err["status"], err.get("code"), err.get("message") or "", headers, err.get("extra") or {})


_DIGEST_ARGS = frozenset({"digest", "keep"})


def _decode_args(args: JSON) -> JSON:
    if _DIGEST_ARGS.isdisjoint(args):  # most calls: nothing to convert, no copy
        return args
    return {k: bytes.fromhex(v) if k in _DIGEST_ARGS and v is not None else v for k, v in args.items()}


def _encode_args(args: JSON) -> JSON:
    if _DIGEST_ARGS.isdisjoint(args):
        return args
    return {k: v.hex() if isinstance(v, bytes) else v for k, v in args.items()}


# -- the worker's side ------------------------------------------------------------------------

class _Call:
    """One call's answer. Its caller parks on it directly (no Event and parking lot per call):
    `finish` wakes the task waiting, if any; a cancelled wait just stops waiting, and the
    answer, when it comes, is kept for no one."""

    __slots__ = ("done", "error", "task", "value")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: APIError | None = None
        self.task: trio.lowlevel.Task | None = None

    def finish(self, value: Any, error: APIError | None) -> None:
        self.value, self.error, self.done = value, error, True
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        self.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class RemoteCommands:
    """Commands carried out by the supervisor. `on_reply` is fed by the worker's reader task."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._ids = itertools.count(1)
        self._pending: dict[int, _Call] = {}
        self._lost = False
        self._unwritable: Any = None  # the supervisor's last word: None, or the error to answer

    async def _send(self, op: str, args: JSON) -> _Call:
        if self._lost:
            raise unavailable()
        call_id = next(self._ids)
        call = self._pending[call_id] = _Call()
        try:
            await self._sender.send({"call": call_id, "op": op, "args": _encode_args(args)})
        except BaseException:
            self._pending.pop(call_id, None)
            raise
        return call

    async def _result(self, call: _Call) -> Any:
        await call.wait()
        if call.error is not None:
            raise call.error
        return call.value

    async def _call(self, op: str, **args: Any) -> Any:
        return await self._result(await self._send(op, args))

    def on_reply(self, frame: JSON) -> None:
        call = self._pending.pop(frame.get("reply"), None)  # type: ignore[arg-type]
        if call is None:
            log.warning("a reply to no pending call: %.200r", frame)
            return
        if "error" in frame:
            call.finish(None, decode_error(frame["error"]))
        else:
            call.finish(frame.get("ok"), None)

    def on_health(self, error: Any) -> None:
        """A `health_frame` from the supervisor: it accepts writes (None) or not (the error)."""
        self._unwritable = error

    def connection_lost(self) -> None:
        """The supervisor is gone: every waiting call, and every later one, fails with 503."""
        self._lost = True
        pending, self._pending = self._pending, {}
        for call in pending.values():
            call.finish(None, unavailable())

    # -- the Commands protocol ------------------------------------------------------------

    async def check_writable(self) -> None:
        """What the supervisor last said of its writer and database (it says so when that
        changes), so a flood of health checks never reaches the writer's process; 503 once it
        is gone. A fresh error each time: one raised again and again would grow its traceback."""
        if self._lost:
            raise unavailable()
        if self._unwritable is not None:
            raise decode_error(self._unwritable)

    async def allow_registration(self, client: str) -> None:
        await self._call("allow_registration", client=client)

    async def create_user(self, username: str, password_hash: str, admin: bool = False) -> User:
        user: User = await self._call("create_user", username=username, password_hash=password_hash,
                                      admin=admin)
        return user

    async def login_allowed(self, username: str, client: str) -> None:
        await self._call("login_allowed", username=username, client=client)

    async def login_failed(self, username: str, client: str, has_account: bool) -> None:
        await self._call("login_failed", username=username, client=client, has_account=has_account)

    async def login_succeeded(self, username: str, client: str) -> None:
        await self._call("login_succeeded", username=username, client=client)

    async def rehash_password(self, user_id: int, password_hash: str) -> None:
        await self._call("rehash_password", user_id=user_id, password_hash=password_hash)

    async def create_token(self, digest: bytes, user_id: int, client: str = "",
                           verified: str | None = None) -> int:
        return int(await self._call("create_token", digest=digest, user_id=user_id, client=client,
                                    verified=verified))

    async def revoke_token(self, digest: bytes) -> None:
        await self._call("revoke_token", digest=digest)

    async def set_password(self, user_id: int, password_hash: str, keep: bytes | None = None) -> None:
        await self._call("set_password", user_id=user_id, password_hash=password_hash, keep=keep)

    async def end_session(self, user_id: int, session_id: str) -> bool:
        return bool(await self._call("end_session", user_id=user_id, session_id=session_id))

    async def touch_token(self, digest: bytes) -> None:
        """Queued, not awaited: a last-seen time is not worth a round trip."""
        await self._send("touch_token", {"digest": digest})

    async def set_admin(self, user_id: int, admin: bool) -> User:
        user: User = await self._call("set_admin", user_id=user_id, admin=admin)
        return user

    async def deactivate(self, user_id: int, erase: bool) -> None:
        await self._call("deactivate", user_id=user_id, erase=erase)

    async def create_room(self, user_id: int, name: str, topic: str, visibility: str = "public") -> int:
        return int(await self._call("create_room", user_id=user_id, name=name, topic=topic,
                                    visibility=visibility))

    async def join(self, room_id: int, user_id: int) -> None:
        await self._call("join", room_id=room_id, user_id=user_id)

    async def leave(self, room_id: int, user_id: int) -> None:
        await self._call("leave", room_id=room_id, user_id=user_id)

    async def update_room(self, user_id: int, room_id: int, name: str | None, topic: str | None,
                          visibility: str | None) -> None:
        await self._call("update_room", user_id=user_id, room_id=room_id, name=name, topic=topic,
                         visibility=visibility)

    async def invite(self, user_id: int, room_id: int, target_id: int) -> None:
        await self._call("invite", user_id=user_id, room_id=room_id, target_id=target_id)

    async def uninvite(self, user_id: int, room_id: int, target_id: int) -> None:
        await self._call("uninvite", user_id=user_id, room_id=room_id, target_id=target_id)

    async def kick(self, user_id: int, room_id: int, target_id: int, reason: str | None) -> None:
        await self._call("kick", user_id=user_id, room_id=room_id, target_id=target_id, reason=reason)

    async def ban(self, user_id: int, room_id: int, target_id: int, reason: str | None) -> None:
        await self._call("ban", user_id=user_id, room_id=room_id, target_id=target_id, reason=reason)

    async def unban(self, user_id: int, room_id: int, target_id: int) -> None:
        await self._call("unban", user_id=user_id, room_id=room_id, target_id=target_id)

    async def set_role(self, user_id: int, room_id: int, target_id: int, role: str) -> None:
        await self._call("set_role", user_id=user_id, room_id=room_id, target_id=target_id, role=role)

    async def open_direct(self, user_id: int, other_id: int) -> bool:
        return bool(await self._call("open_direct", user_id=user_id, other_id=other_id))

    async def submit_message(self, user_id: int, room_id: int, text: str, txn_id: str | None) -> Finish:
        """Returns as soon as the call is queued, so a websocket's pipelined sends reach the
        supervisor (and get their seqs) in the order they were made."""
        call = await self._send("submit_message",
                                {"user_id": user_id, "room_id": room_id, "text": text, "txn_id": txn_id})

        async def finish() -> tuple[Message, bool]:
            message, created = await self._result(call)
            return message, bool(created)

        return finish

    async def edit_message(self, user_id: int, room_id: int, seq: int, text: str,
                           txn_id: str | None) -> Message:
        entry: Message = await self._call("edit_message", user_id=user_id, room_id=room_id, seq=seq,
                                          text=text, txn_id=txn_id)
        return entry

    async def delete_message(self, user_id: int, room_id: int, seq: int) -> Message:
        entry: Message = await self._call("delete_message", user_id=user_id, room_id=room_id, seq=seq)
        return entry

    async def mark_read(self, user_id: int, room_id: int, seq: int) -> int:
        return int(await self._call("mark_read", user_id=user_id, room_id=room_id, seq=seq))


# -- the supervisor's side --------------------------------------------------------------------

_OPS = frozenset({"allow_registration", "create_user", "login_allowed", "login_failed",
                  "login_succeeded", "rehash_password", "create_token", "revoke_token",
                  "create_room", "join", "leave", "submit_message", "update_room", "invite",
                  "uninvite", "kick", "ban", "unban", "set_role", "open_direct",
                  "set_password", "end_session", "touch_token", "set_admin", "deactivate", "mark_read",
                  "edit_message", "delete_message"})


async def begin_call(commands: Commands, frame: JSON) -> Callable[[], Awaitable[JSON]]:
    """Start one call from a worker, in the order calls arrive, and return what to await for its
    reply frame. Only a `submit_message` does work here (it is queued to the writer, so sends
    keep their order); every other op runs when the returned function is awaited, so a slow one
    does not hold up the calls behind it."""
    call_id, op, args = frame.get("call"), frame.get("op"), frame.get("args")
    if op not in _OPS or not isinstance(args, dict):
        error = encode_error(_internal())
        log.error("a worker sent an unknown call: %.200r", frame)
        return _constant({"reply": call_id, "error": error})
    method = getattr(commands, op, None)
    if method is None:
        log.error("a worker called %s, which this supervisor does not serve", op)
        return _constant({"reply": call_id, "error": encode_error(_internal())})
    try:
        decoded = _decode_args(args)
        if op == "submit_message":
            finish = await method(**decoded)
        else:
            finish = partial(method, **decoded)  # runs when the reply is awaited
    except APIError as exc:
        return _constant({"reply": call_id, "error": encode_error(exc)})
    except (TypeError, ValueError):
        log.exception("a worker's call had bad arguments: %.200r", frame)
        return _constant({"reply": call_id, "error": encode_error(_internal())})

    async def reply() -> JSON:
        try:
            result = await finish()
        except APIError as exc:
            return {"reply": call_id, "error": encode_error(exc)}
        except Exception:
            log.exception("a worker's %s call failed", op)
            return {"reply": call_id, "error": encode_error(_internal())}
        if isinstance(result, tuple):
            result = list(result)
        return {"reply": call_id, "ok": result}

    return reply


def _internal() -> APIError:
    return APIError(500, "internal", "internal server error")


def _constant(reply: JSON) -> Callable[[], Awaitable[JSON]]:
    async def answer() -> JSON:
        return reply

    return answer
