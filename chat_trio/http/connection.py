"""One HTTP/1.1 connection: h11 events → Request → router → Response, in order, with limits.

Shaped like h11's `examples/trio-server.py`: one task per connection reads a request, answers it,
and starts the next cycle. Pipelined requests are answered in order because one task serves
them one after another. Every wait on the peer has a deadline, so a slow or silent client only
ever costs its own task.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import h11
import trio

from chat_trio.http.messages import Request, Response, error_response, reason
from chat_trio.http.upgrade import SWITCHED

if TYPE_CHECKING:
    from chat_trio.http.server import HTTPServer

log = logging.getLogger("chat_trio.http")
access_log = logging.getLogger("chat_trio.access")

RECEIVE_SIZE = 64 * 1024
_LINGER_BYTES = 256 * 1024


class _Refuse(Exception):
    """Answer with this response, then close the connection."""

    def __init__(self, response: Response) -> None:
        self.response = response


class _Closed(Exception):
    """The peer went away (or was idle too long): close without answering."""


def _head_size(event: h11.Request) -> int:
    """Bytes the request head took on the wire (h11 only limits heads that arrive in pieces)."""
    size = len(event.method) + len(event.target) + 14
    for name, value in event.headers.raw_items():
        size += len(name) + len(value) + 4
    return size


def _framing_error(event: h11.Request) -> str | None:
    """Framing h11 accepts but that lets a front proxy and this server disagree on where the
    body ends (request smuggling, RFC 9112 §6.1 and §6.3); such a request is refused."""
    names = {name for name, _ in event.headers}
    if b"transfer-encoding" in names:
        if b"content-length" in names:
            return "both Content-Length and Transfer-Encoding"
        if event.http_version != b"1.1":
            return f"Transfer-Encoding in an HTTP/{event.http_version.decode()} request"
    return None


class HTTPConnection:
    def __init__(self, stream: trio.SocketStream, server: HTTPServer, client: str) -> None:
        self.stream = stream
        self.server = server
        self.config = server.config
        self.client = client
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_head_bytes)
        self.served = 0

    async def serve(self) -> None:
        try:
            while True:
                try:
                    request = await self._read_request()
                except _Refuse as refusal:
                    await self._send(refusal.response, close=True)
                    await self._linger()
                    return
                if request is None:
                    return
                started = time.perf_counter()
                response = await self.server.dispatch(request)
                if response.status == SWITCHED:  # the handler took the stream over
                    return
                self.served += 1
                close = self.served >= self.config.max_requests_per_connection or (
                    self.server.draining
                )
                await self._send(response, close=close, head_only=request.method == "HEAD")
                if access_log.isEnabledFor(logging.INFO):
                    access_log.info(
                        "%s %s %d %.1fms", request.method, request.path, response.status,
                        (time.perf_counter() - started) * 1000,
                        extra={"method": request.method, "path": request.path,
                               "status": response.status, "client": self.client},
                    )
                if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                    return  # Connection: close, HTTP/1.0, or a declined upgrade
                self.h11.start_next_cycle()
        except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except trio.TooSlowError:
            return  # the client did not accept our response in time
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.stream.aclose()

    # -- reading -----------------------------------------------------------------------------

    async def _receive(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            data = await self.stream.receive_some(RECEIVE_SIZE)
            self.h11.receive_data(data)
            return
        raise trio.TooSlowError

    async def _next_event(self, timeout: float) -> h11.Event | type[h11.NEED_DATA | h11.PAUSED]:
        event = self.h11.next_event()
        while event is h11.NEED_DATA:
            await self._receive(timeout)
            event = self.h11.next_event()
        return event

    async def _wait_first_byte(self) -> bool:
        """Idle keep-alive wait. False when the peer, the timeout or shutdown ends it."""
        if self.server.draining:
            return False
        with trio.move_on_after(self.config.keepalive_timeout) as idle:
            self.server.idle.add(idle)
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            finally:
                self.server.idle.discard(idle)
            if not data:
                return False
            self.h11.receive_data(data)
            return True
        return False

    async def _read_request(self) -> Request | None:
        try:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                if not await self._wait_first_byte():
                    return None
                try:
                    with trio.fail_after(self.config.head_timeout):
                        event = await self._next_event(self.config.head_timeout)
                except trio.TooSlowError:
                    raise _Refuse(error_response(408, "request_timeout",
                                                 "request head took too long")) from None
            if isinstance(event, h11.ConnectionClosed):
                return None
            assert isinstance(event, h11.Request), event
            if _head_size(event) > self.config.max_head_bytes:
                raise _Refuse(error_response(431, "headers_too_large", "request head too large"))
            framing = _framing_error(event)
            if framing is not None:
                raise _Refuse(error_response(400, "bad_request", f"malformed request: {framing}"))
            body = await self._read_body(event)
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            if status == 431:
                raise _Refuse(error_response(431, "headers_too_large",
                                             "request head too large")) from None
            raise _Refuse(error_response(status, None, f"malformed request: {exc}"[:200])) from None
        request = Request(
            method=event.method.decode("ascii", "replace"),
            target=event.target,
            headers=list(event.headers),
            body=body,
            client=self.client,
        )
        # An Upgrade (or CONNECT) request: what follows its head may not be HTTP. Only h11's
        # MIGHT_SWITCH_PROTOCOL says so; next_event() is also PAUSED for a plain request that has
        # a pipelined one behind it, which must not be handed the raw stream.
        if self.h11.their_state is h11.MIGHT_SWITCH_PROTOCOL:  # type: ignore[attr-defined]  # documented, not in __all__
            request.upgrade = (self.stream, self.h11.trailing_data[0])
        return request

    async def _read_body(self, event: h11.Request) -> bytes:
        limit = self.config.max_body_bytes
        for name, value in event.headers:
            if name == b"content-length" and int(value) > limit:
                raise _Refuse(error_response(413, "payload_too_large",
                                             f"body larger than {limit} bytes"))
        if self.h11.they_are_waiting_for_100_continue:
            await self._send_all(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                part = await self._next_event(self.config.body_timeout)
            except trio.TooSlowError:
                raise _Refuse(error_response(408, "request_timeout", "request body stalled")) from None
            if isinstance(part, h11.Data):
                size += len(part.data)
                if size > limit:
                    raise _Refuse(error_response(413, "payload_too_large",
                                                 f"body larger than {limit} bytes"))
                chunks.append(part.data)
            elif isinstance(part, h11.EndOfMessage):
                return b"".join(chunks)
            elif isinstance(part, h11.ConnectionClosed):
                raise _Closed
            else:  # PAUSED: an upgrade request's end; the rest belongs to the new protocol
                return b"".join(chunks)

    # -- writing -----------------------------------------------------------------------------

    async def _send(self, response: Response, *, close: bool, head_only: bool = False) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        headers = [
            (b"date", self.server.date_header()),
            (b"server", b"chat_trio"),
            *response.headers,
        ]
        if response.content_type is not None:
            headers.append((b"content-type", response.content_type))
        if response.status != 204:
            headers.append((b"content-length", str(len(response.body)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        try:
            out = self.h11.send(h11.Response(status_code=response.status, headers=headers,
                                             reason=reason(response.status)))
            if response.body and not head_only:
                out += self.h11.send(h11.Data(data=response.body))
            out += self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            log.exception("could not frame response %d", response.status)
            raise _Closed from None
        await self._send_all(out)

    async def _send_all(self, data: bytes) -> None:
        with trio.fail_after(self.config.send_timeout):
            await self.stream.send_all(data)

    async def _linger(self) -> None:
        """After an error answer, read and discard what the peer still sends for a moment so
        that closing does not reset the connection before the answer is read."""
        try:
            await self.stream.send_eof()
            with trio.move_on_after(0.5):
                received = 0
                while received < _LINGER_BYTES:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        return
                    received += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
