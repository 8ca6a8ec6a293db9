"""Input checks shared by the handlers and `api.shapes`: every failure is a 422 that names the field."""

from __future__ import annotations

from typing import Any

from chat_trio.errors import APIError


def invalid(field: str, message: str) -> APIError:
    return APIError(422, "validation_failed", f"{field}: {message}", extra={"field": field})


def only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for name in body:
        if name not in allowed:
            raise invalid(str(name)[:64], "unknown field")


def query_int(
    query: dict[str, str], name: str, *, low: int, high: int, default: int | None = None
) -> int | None:
    raw = query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not low <= int(raw) <= high:
        raise invalid(name, f"must be an integer from {low} to {high}")
    return int(raw)


def query_seconds(query: dict[str, str], name: str, *, high: float) -> float | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= high:  # also refuses nan and inf
        raise invalid(name, f"must be a number of seconds from 0 to {high:g}")
    return value


def query_bool(query: dict[str, str], name: str) -> bool:
    raw = query.get(name, "false").lower()
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0", ""):
        return False
    raise invalid(name, "must be true or false")
