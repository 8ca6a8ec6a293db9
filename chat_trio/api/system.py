"""Service endpoints: health, metrics and the OpenAPI document."""

from __future__ import annotations

from chat_trio.api.context import Context
from chat_trio.api.openapi import document
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response, json_response

PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

_HEALTH = json_response({"status": "ok"})


def routes(context: Context) -> list[Route]:
    """`context.scrape` gives the exposition: this process's registry, or with --workers every
    process's, merged by the supervisor."""
    spec = json_response(document())

    async def healthz(request: Request) -> Response:
        """200 only while this server can accept writes, so a load balancer stops sending
        traffic to one that would refuse every write (503 `unavailable`, the reason in the
        message); reads would still be served. Judged from state this process holds (a
        `--workers` worker: what its supervisor last told it), so a probe costs no write, no
        query and no round trip."""
        await context.commands.check_writable()
        return _HEALTH

    async def openapi(request: Request) -> Response:
        return spec

    async def prometheus(request: Request) -> Response:
        return Response(200, await context.scrape(), content_type=PROMETHEUS_TYPE)

    return [
        Route("GET", "/healthz", healthz),
        Route("GET", "/openapi.json", openapi),
        Route("GET", "/metrics", prometheus),
    ]
