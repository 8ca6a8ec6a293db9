"""The OpenAPI 3.1 document of the API, kept beside the code and checked against the router."""

from __future__ import annotations

from typing import Any

from chat_trio import __version__


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {
        "get": {
            "summary": "Liveness check",
            "responses": {"200": _ok("Alive", {
                "type": "object", "required": ["status"], "additionalProperties": False,
                "properties": {"status": {"const": "ok"}}})},
        }
    },
    "/openapi.json": {
        "get": {"summary": "This document", "responses": {"200": _ok("OpenAPI 3.1", {"type": "object"})}}
    },
}

COMPONENTS: dict[str, Any] = {
    "schemas": {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "retry_after_ms": {"type": "integer"},
                    },
                }
            },
        }
    }
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "chat_trio", "version": __version__,
                 "description": "Chat rooms over REST and a websocket on one port."},
        "paths": PATHS,
        "components": COMPONENTS,
    }
