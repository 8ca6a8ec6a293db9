"""The handlers, one module per resource, and the route table that maps them."""

from __future__ import annotations

from chat_trio.api import service
from chat_trio.config import Config
from chat_trio.http.router import Route


def build_routes(config: Config) -> list[Route]:
    return [*service.routes()]
