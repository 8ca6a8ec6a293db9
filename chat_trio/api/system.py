"""Service endpoints: health, metrics and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from chat_trio.api.openapi import document
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response, json_response

PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

_HEALTH = json_response({"status": "ok"})


async def healthz(request: Request) -> Response:
    return _HEALTH


def routes(scrape: Callable[[], Awaitable[bytes]]) -> list[Route]:
    """`scrape` gives the exposition: this process's registry, or with --workers every
    process's, merged by the supervisor."""
    spec = json_response(document())

    async def openapi(request: Request) -> Response:
        return spec

    async def prometheus(request: Request) -> Response:
        return Response(200, await scrape(), content_type=PROMETHEUS_TYPE)

    return [
        Route("GET", "/healthz", healthz),
        Route("GET", "/openapi.json", openapi),
        Route("GET", "/metrics", prometheus),
    ]
