"""The API's error answer as an exception, below every layer that raises one.

Handlers, the store (a write it could not commit) and the websocket session raise `APIError`;
the HTTP layer turns it into the error body (`http.types.error_answer`) and the websocket session
into an `error` frame. Living here, below http/, api/, rooms/ and store/, it lets each of them
speak the API's error format without importing a layer above it.
"""

from __future__ import annotations

from typing import Any

Headers = list[tuple[bytes, bytes]]

STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 426: "Upgrade Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    503: "Service Unavailable", 505: "HTTP Version Not Supported",
}

# The API's error code for each status that has a single obvious one.
STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 408: "request_timeout", 409: "conflict",
    413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_failed",
    426: "upgrade_required", 429: "rate_limited", 431: "headers_too_large", 500: "internal",
    501: "not_implemented", 503: "unavailable", 505: "http_version_not_supported",
}


class APIError(Exception):
    """Answer with the API's error body: `{"error": {"code", "message", **extra}}`."""

    def __init__(
        self,
        status: int,
        code: str | None = None,
        message: str = "",
        headers: Headers | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or STATUS_CODES.get(status, "error")
        self.message = message or STATUS_TEXT.get(status, "error")
        self.headers = headers or []
        self.extra = extra or {}
