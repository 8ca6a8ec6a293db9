"""Service endpoints: health, metrics and the OpenAPI document."""

from __future__ import annotations

import trio

from chat_trio.api.context import Context
from chat_trio.api.openapi import document
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response, json_response
from chat_trio.store.writer import StoreClosed

PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
# Seconds a --workers worker waits for its supervisor to say whether writes are accepted; a
# supervisor too busy to answer that in time is reported unhealthy too.
HEALTH_TIMEOUT = 2.0

_HEALTH = json_response({"status": "ok"})


def routes(context: Context) -> list[Route]:
    """`context.scrape` gives the exposition: this process's registry, or with --workers every
    process's, merged by the supervisor."""
    spec = json_response(document())

    async def healthz(request: Request) -> Response:
        """200 only while this server can accept writes, so a load balancer stops sending
        traffic to one that would refuse every write (503 `unavailable`, the reason in the
        message); reads would still be served."""
        with trio.move_on_after(HEALTH_TIMEOUT):
            await context.commands.check_writable()
            return _HEALTH
        raise StoreClosed(f"the server did not say within {HEALTH_TIMEOUT:g} s whether it accepts writes")

    async def openapi(request: Request) -> Response:
        return spec

    async def prometheus(request: Request) -> Response:
        return Response(200, await context.scrape(), content_type=PROMETHEUS_TYPE)

    return [
        Route("GET", "/healthz", healthz),
        Route("GET", "/openapi.json", openapi),
        Route("GET", "/metrics", prometheus),
    ]
