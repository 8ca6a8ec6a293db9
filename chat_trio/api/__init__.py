"""The handlers, one module per resource, and the route table that maps them."""

from __future__ import annotations

from chat_trio.api import accounts, messages, moderation, rooms, system, timeline, web, websocket
from chat_trio.api.context import Context
from chat_trio.http.router import Route


def build_routes(context: Context) -> list[Route]:
    return [
        *system.routes(context.scrape),
        *accounts.routes(context),
        *rooms.routes(context),
        *moderation.routes(context),
        *messages.routes(context),
        *timeline.routes(context),
        *websocket.routes(context),
        *web.routes(),
    ]
