"""The handlers, one module per resource, and the route table that maps them."""

from __future__ import annotations

from chat_trio.api import accounts, messages, rooms, service, web, websocket
from chat_trio.api.services import Services
from chat_trio.http.router import Route


def build_routes(services: Services) -> list[Route]:
    return [
        *service.routes(services.metrics),
        *accounts.routes(services),
        *rooms.routes(services),
        *messages.routes(services),
        *websocket.routes(services),
        *web.routes(),
    ]
