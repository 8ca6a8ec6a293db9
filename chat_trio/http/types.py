"""Request and Response values, the API's error answers, and JSON helpers."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from chat_trio.errors import STATUS_TEXT, APIError
from chat_trio.errors import Headers as Headers  # re-exported: the HTTP layer's name for them

if TYPE_CHECKING:
    import socket

    import trio

JSON_TYPE = b"application/json"

_REASON_BYTES = {status: text.encode() for status, text in STATUS_TEXT.items()}


def reason(status: int) -> bytes:
    return _REASON_BYTES.get(status, b"")


@dataclass(frozen=True, slots=True)
class Upgrade:
    """The connection of an Upgrade request, for the handler that takes it over."""

    stream: trio.SocketStream
    sock: socket.socket  # the same non-blocking socket the stream wraps
    leftover: bytes  # what the client sent after the request head
    http_version: bytes  # as the request line said it ("1.1", "1.0")
    answer_headers: Headers  # what every answer of this server carries (x-chat-worker), for the 101


def split_target(target: str) -> tuple[str | None, str]:
    """(authority, path and query) of a request target. An absolute-form target
    (`http://host/x?y`, which RFC 9112 §3.2.2 says a server MUST accept) is served as its origin
    form (`/x?y`) and its authority replaces Host; any other target has no authority."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None, target
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    path = rest[cut:]
    return rest[:cut].rpartition("@")[2], path if path.startswith("/") else "/" + path


@dataclass(slots=True)
class Request:
    """One parsed request, body included. Header names are lower-case (as h11 gives them)."""

    method: str
    target: bytes
    headers: Headers
    body: bytes = b""
    client: str = ""
    path: str = ""
    query_string: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    route: str = ""  # the matched route pattern ("" when none matched)
    upgrade: Upgrade | None = None  # set for an Upgrade request; see take_stream()
    stream_taken: bool = False  # once True the HTTP loop never writes on this connection again
    operator: bool = False  # it came over the local admin socket: an admin request without a token
    _query: dict[str, str] | None = None

    def __post_init__(self) -> None:
        authority, raw = split_target(self.target.decode("latin-1"))
        self.path, _, self.query_string = raw.partition("?")
        if authority is not None:
            host = (b"host", authority.encode("latin-1"))
            self.headers = [*(h for h in self.headers if h[0] != b"host"), host]

    def take_stream(self) -> Upgrade:
        """Take the connection over (a websocket): from now on the handler alone reads and writes
        it, whatever it returns or raises."""
        if self.upgrade is None or self.stream_taken:
            raise RuntimeError("no connection to take")
        self.stream_taken = True
        return self.upgrade

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def query(self) -> dict[str, str]:
        """Query parameters; a repeated name keeps its last value."""
        if self._query is None:
            try:
                self._query = dict(
                    parse_qsl(self.query_string, keep_blank_values=True, errors="strict")
                )
            except (UnicodeDecodeError, ValueError):
                raise APIError(400, "bad_request", "query string is not valid UTF-8") from None
        return self._query

    def json(self) -> dict[str, Any]:
        """The body as a JSON object: 415 for another content type, 400 for anything but an object."""
        ctype = self.header(b"content-type")
        if not self.body and ctype is None:
            return {}
        if ctype is None or ctype.split(b";", 1)[0].strip().lower() != JSON_TYPE:
            raise APIError(415, "unsupported_media_type", "send Content-Type: application/json")
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise APIError(400, "invalid_json", "body is not valid JSON") from None
        if not isinstance(value, dict):
            raise APIError(400, "invalid_json", "body must be a JSON object")
        return value


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: Headers = field(default_factory=list)
    content_type: bytes | None = JSON_TYPE
    # A body produced piece by piece (sent chunked, each piece as it comes) instead of `body`:
    # for answers too large to build in memory (GET /me/export).
    stream: AsyncGenerator[bytes, None] | None = None


def json_response(value: Any, status: int = 200, headers: Headers | None = None) -> Response:
    return Response(status, orjson.dumps(value), headers or [])


def no_content() -> Response:
    return Response(204, b"", [], None)


def error_response(
    status: int,
    code: str | None = None,
    message: str = "",
    headers: Headers | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    return error_answer(APIError(status, code, message, headers, extra))


def error_answer(error: APIError) -> Response:
    """An APIError as the response the client gets."""
    body = {"code": error.code, "message": error.message, **error.extra}
    return json_response({"error": body}, error.status, error.headers)
