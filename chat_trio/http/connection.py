"""One HTTP/1.1 connection: h11 events → Request → router → Response, in order, with limits.

Shaped like h11's `examples/trio-server.py`: one task per connection reads a request, answers it,
and starts the next cycle. Pipelined requests are answered in order because one task serves
them one after another.

Every wait on the peer has a deadline, so a slow or silent client only ever costs its own task.
The deadlines share one cancel scope per connection (`_timer`) whose deadline moves with the
phase: idle keep-alive, request head, request body, sending. Opening a fresh `move_on_after`
for each of those waits costs more than parsing the request; moving a deadline is nearly free.
When the timer fires, the phase says what to do: close silently when idle or sending, 408 when
a head or body stalled.

The hot path talks to the non-blocking socket directly with trio's `wait_readable`: one
scheduler pass per request instead of the three that `SocketStream` spends (a failed recv, a
wait, and a checkpoint after each recv and send). The stream is kept for closing and for
handing an upgraded connection to another protocol.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import socket
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING

import h11
import trio

from chat_trio.http.types import Headers, Request, Response, Upgrade, error_response, reason
from chat_trio.http.upgrade import SWITCHED
from chat_trio.security.ratelimit import client_network

if TYPE_CHECKING:
    from chat_trio.http.server import HTTPServer

log = logging.getLogger("chat_trio.http")

RECEIVE_SIZE = 64 * 1024
_LINGER_BYTES = 256 * 1024
_NEVER = math.inf

IDLE, HEAD, BODY, SEND = "idle", "head", "body", "send"

TOO_MANY_FROM_ADDRESS = error_response(503, "unavailable", "too many connections from your address",
                                       [(b"retry-after", b"1")])


class _Refuse(Exception):
    """Answer with this response, then close the connection."""

    def __init__(self, response: Response) -> None:
        self.response = response


class _Closed(Exception):
    """The peer went away: close without answering."""


def _inspect(event: h11.Request, max_head: int, max_body: int) -> tuple[Headers, int | None]:
    """The request's headers (names lower-cased) and its Content-Length, after the checks h11
    leaves to us: an HTTP major version other than 1 (505; h11 parses any digit.digit), the head's
    size (h11 only limits heads that arrive in pieces, see h11 issue #182), framing that lets a
    front proxy and this server disagree on where the body ends (request smuggling, RFC 9112
    §6.1 and §6.3), and a declared body over the limit (refused before reading it).

    A Content-Length h11 accepted is plain digits (it refuses signs, lists and, through
    Python's int-digits limit, numbers of thousands of digits), so `int()` cannot fail here."""
    if not event.http_version.startswith(b"1."):
        raise _Refuse(error_response(505, "http_version_not_supported", "this server speaks HTTP/1.1"))
    headers = [(name.lower(), value) for name, value in event.headers.raw_items()]
    size = len(event.method) + len(event.target) + 14
    chunked = False
    length: int | None = None
    for name, value in headers:
        size += len(name) + len(value) + 4
        if name == b"transfer-encoding":
            chunked = True
        elif name == b"content-length":
            length = int(value)
            if length > max_body:
                raise _Refuse(error_response(413, "payload_too_large", f"body larger than {max_body} bytes"))
    if size > max_head:
        raise _Refuse(error_response(431, "headers_too_large", "request head too large"))
    if chunked and length is not None:
        raise _Refuse(error_response(400, "bad_request",
                                     "malformed request: both Content-Length and Transfer-Encoding"))
    if chunked and event.http_version != b"1.1":
        raise _Refuse(error_response(400, "bad_request", "malformed request: Transfer-Encoding in an "
                                     f"HTTP/{event.http_version.decode()} request"))
    return headers, length


_REPR = re.compile(r":\s*(?:bytearray\(|b'|b\")")


def _protocol_error(exc: h11.RemoteProtocolError) -> Response:
    """h11's refusal in the API's error format. Its message is kept (it says what is wrong) but
    cut before any repr of the offending bytes (`illegal request line: bytearray(b'...')`)."""
    status = exc.error_status_hint
    if status == 431:
        return error_response(431, "headers_too_large", "request head too large")
    detail = _REPR.split(str(exc), 1)[0].strip() or "cannot parse the request"
    if not detail.isprintable():
        detail = "cannot parse the request"
    return error_response(status, None, f"malformed request: {detail}"[:200])


def _forwarded_for(headers: Headers) -> str | None:
    """The client a trusted proxy names: the last address of the last X-Forwarded-For header
    (the one the proxy appended itself; earlier ones are whatever the client claimed)."""
    value = None
    for name, v in headers:
        if name == b"x-forwarded-for":
            value = v
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value.rsplit(b",", 1)[-1].strip().decode("ascii")))
    except (ValueError, UnicodeDecodeError):
        return None


class HTTPConnection:
    def __init__(
        self, sock: socket.socket, stream: trio.SocketStream, server: HTTPServer, client: str
    ) -> None:
        self.sock = sock  # the same non-blocking socket the stream wraps
        self.stream = stream
        self.server = server
        self.config = server.config
        self.client = client
        self.behind_proxy = client in server.trusted_proxies
        self.address: str | None = None  # the client_network whose connection slot this holds
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_head_bytes)
        self.served = 0
        self._timer = trio.CancelScope()
        self._phase = IDLE
        self._slow_body = False  # the body's deadline is its minimum rate, not its idle timeout

    async def serve(self) -> None:
        try:
            with self._timer:
                await self._serve_requests()
            if self._timer.cancelled_caught and self._phase in (HEAD, BODY):
                message = ("request head took too long" if self._phase == HEAD
                           else f"request body slower than {self.config.min_body_rate:g} bytes/s"
                           if self._slow_body else "request body stalled")
                with trio.move_on_after(self.config.send_timeout):
                    await self._answer_and_close(error_response(408, "request_timeout", message))
        except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.stream.aclose()

    async def _serve_requests(self) -> None:
        while True:
            try:
                request = await self._read_request()
            except _Refuse as refusal:
                await self._answer_and_close(refusal.response)
                return
            if request is None:
                return
            started = time.perf_counter()
            response = await self.server.dispatch(request)
            if request.stream_taken:  # the handler owns the stream, even if it failed
                self.server.finished(request, SWITCHED, time.perf_counter() - started)
                return
            self.served += 1
            close = self.served >= self.config.max_requests_per_connection or self.server.draining
            await self._write(self._frame(response, close=close, head_only=request.method == "HEAD"))
            if response.stream is not None:
                await self._stream(response.stream, head_only=request.method == "HEAD")
            self.server.finished(request, response.status, time.perf_counter() - started)
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return  # Connection: close, HTTP/1.0, or a declined upgrade
            self.h11.start_next_cycle()

    async def refuse(self, response: Response) -> None:
        """Answer before reading any request (a connection cap is full), then close."""
        try:
            with trio.move_on_after(1):
                await self._answer_and_close(response)
        except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.stream.aclose()

    async def _answer_and_close(self, response: Response) -> None:
        """A refusal by the HTTP layer: counted, framed like every answer, and the connection
        closed after it."""
        self.server.refused(response.status, self.client)
        await self._write(self._frame(response, close=True))
        await self._linger()

    def _hold(self, client: str | None) -> None:
        """Count a trusted proxy's connection against the client its request names (None: it
        names none), so one client behind the proxy cannot take every slot either."""
        key = None if client is None else client_network(client)
        if key == self.address:
            return
        if not self.server.claim(key):
            raise _Refuse(TOO_MANY_FROM_ADDRESS)
        self.server.release(self.address)
        self.address = key

    # -- reading -----------------------------------------------------------------------------

    async def _recv(self) -> bytes:
        """Wait until readable, then read; b"" when the peer closed or reset."""
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            try:
                return self.sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                return b""

    async def _receive(self) -> None:
        self.h11.receive_data(await self._recv())

    async def _wait_first_byte(self) -> bool:
        """Idle keep-alive wait; the timer (or shutdown, through `server.idle`) may end it.
        False when the peer closed instead."""
        if self.server.draining:
            return False
        self._phase = IDLE
        self._timer.deadline = trio.current_time() + self.config.keepalive_timeout
        self.server.idle.add(self._timer)
        try:
            data = await self._recv()
        finally:
            self.server.idle.discard(self._timer)
        self._timer.deadline = _NEVER
        if not data:
            return False
        self.h11.receive_data(data)
        return True

    async def _read_request(self) -> Request | None:
        try:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:  # pipelined: let other tasks run between requests
                await trio.lowlevel.checkpoint()
            else:
                if not await self._wait_first_byte():
                    return None
                event = self.h11.next_event()
                if event is h11.NEED_DATA:  # the head came in pieces: it has head_timeout in all
                    self._phase = HEAD
                    self._timer.deadline = trio.current_time() + self.config.head_timeout
                    while event is h11.NEED_DATA:
                        await self._receive()
                        event = self.h11.next_event()
                    self._timer.deadline = _NEVER
            if isinstance(event, h11.ConnectionClosed):
                return None
            assert isinstance(event, h11.Request), event
            headers, length = _inspect(event, self.config.max_head_bytes, self.config.max_body_bytes)
            body = await self._read_body(length)
        except h11.RemoteProtocolError as exc:
            raise _Refuse(_protocol_error(exc)) from None
        client = self.client
        if self.behind_proxy:
            forwarded = _forwarded_for(headers)
            self._hold(forwarded)
            client = forwarded or client
        request = Request(event.method.decode("ascii", "replace"), event.target, headers, body, client,
                          operator=self.server.operator)
        # An Upgrade (or CONNECT) request: what follows its head may not be HTTP. Only h11's
        # MIGHT_SWITCH_PROTOCOL says so; next_event() is also PAUSED for a plain request that has
        # a pipelined one behind it, which must not be handed the raw stream.
        if self.h11.their_state is h11.MIGHT_SWITCH_PROTOCOL:  # type: ignore[attr-defined]  # documented, not in __all__
            request.upgrade = Upgrade(self.stream, self.sock, self.h11.trailing_data[0], event.http_version,
                                      self.server.answer_headers)
        return request

    async def _read_body(self, length: int | None) -> bytes:
        """The whole body, within two deadlines: no read waits more than body_timeout, and the
        body as a whole must keep up with min_body_rate (as Apache's mod_reqtimeout MinRate), so
        a client trickling a byte per almost-body_timeout cannot hold its slot for days. With a
        Content-Length the budget is fixed up front; a chunked body earns time as it arrives."""
        if self.h11.they_are_waiting_for_100_continue:
            await self._write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        limit = self.config.max_body_bytes
        rate = self.config.min_body_rate
        started = trio.current_time()
        chunks: list[bytes] = []
        size = 0
        while True:
            part = self.h11.next_event()
            if part is h11.NEED_DATA:
                self._phase = BODY
                now = trio.current_time()
                budget = started + self.config.body_timeout + (size if length is None else length) / rate
                self._slow_body = budget < now + self.config.body_timeout
                self._timer.deadline = min(now + self.config.body_timeout, budget)
                await self._receive()
                self._timer.deadline = _NEVER
            elif isinstance(part, h11.Data):
                size += len(part.data)
                if size > limit:
                    raise _Refuse(error_response(413, "payload_too_large", f"body larger than {limit} bytes"))
                chunks.append(part.data)
            elif isinstance(part, h11.ConnectionClosed):
                raise _Closed
            else:  # EndOfMessage, or PAUSED after an upgrade request (the rest is not HTTP)
                return b"".join(chunks)

    # -- writing -----------------------------------------------------------------------------

    def _frame(self, response: Response, *, close: bool, head_only: bool = False) -> bytes:
        """The response's bytes on the wire, framed by h11 (which also tracks keep-alive)."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return b""
        headers = [(b"date", self.server.date_header()), (b"server", b"chat_trio"),
                   *self.server.answer_headers, *response.headers]
        if response.content_type is not None:
            headers.append((b"content-type", response.content_type))
        streamed = response.stream is not None
        if response.status != 204 and not streamed:
            headers.append((b"content-length", b"%d" % len(response.body)))
        if close:
            headers.append((b"connection", b"close"))
        try:
            out = self.h11.send(h11.Response(status_code=response.status, headers=headers,
                                             reason=reason(response.status)))
            if streamed and not head_only:
                return out  # the body follows in chunks: _stream
            if response.body and not head_only:
                out += self.h11.send(h11.Data(data=response.body))
            out += self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            log.exception("could not frame response %d", response.status)
            raise _Closed from None
        return out

    async def _stream(self, chunks: AsyncGenerator[bytes, None], *, head_only: bool) -> None:
        """Send a streamed body as it is produced (chunked on HTTP/1.1), each piece within
        send_timeout. If producing it fails midway the connection is closed: the client sees an
        incomplete body, never a truncated one passed off as whole."""
        async with aclosing(chunks):
            if head_only:
                return
            try:
                async for chunk in chunks:
                    if chunk:
                        await self._write(self.h11.send(h11.Data(data=chunk)))
            except _Closed:
                raise
            except Exception:
                log.exception("producing a streamed answer failed; closing the connection")
                raise _Closed from None
            await self._write(self.h11.send(h11.EndOfMessage()))

    async def _write(self, data: bytes) -> None:
        """Send within send_timeout; a client that does not read loses its connection."""
        self._phase = SEND
        view = memoryview(data)
        sent = 0
        try:
            sent = self.sock.send(view)  # nearly always all of it
        except BlockingIOError:
            pass
        except OSError:
            raise _Closed from None
        if sent == len(view):
            return
        self._timer.deadline = trio.current_time() + self.config.send_timeout
        while sent < len(view):
            await trio.lowlevel.wait_writable(self.sock)
            try:
                sent += self.sock.send(view[sent:])
            except BlockingIOError:
                pass
            except OSError:
                raise _Closed from None
        self._timer.deadline = _NEVER

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
