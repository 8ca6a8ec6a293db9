"""The handlers, one module per resource, and the route table that maps them."""

from __future__ import annotations

from chat_trio.api import (
    accounts,
    admin,
    export,
    messages,
    moderation,
    rooms,
    system,
    timeline,
    web,
    websocket,
)
from chat_trio.api.context import Context
from chat_trio.http.router import Route


def build_routes(context: Context) -> list[Route]:
    return [
        *system.routes(context),
        *accounts.routes(context),
        *export.routes(context),
        *admin.routes(context),
        *rooms.routes(context),
        *moderation.routes(context),
        *messages.routes(context),
        *timeline.routes(context),
        *websocket.routes(context),
        *web.routes(),
    ]


def operator_routes(context: Context) -> list[Route]:
    """What the local admin socket serves: the admin calls (as the operator) and health."""
    return [*system.routes(context)[:1], *admin.routes(context)]
