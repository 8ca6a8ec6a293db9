"""Service endpoints: health and the OpenAPI document."""

from __future__ import annotations

from chat_trio.api.openapi import document
from chat_trio.http.messages import Request, Response, json_response
from chat_trio.http.router import Route

_HEALTH = json_response({"status": "ok"})


async def healthz(request: Request) -> Response:
    return _HEALTH


def routes() -> list[Route]:
    spec = json_response(document())

    async def openapi(request: Request) -> Response:
        return spec

    return [
        Route("GET", "/healthz", healthz),
        Route("GET", "/openapi.json", openapi),
    ]
