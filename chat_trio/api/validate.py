"""Input checks shared by the handlers: every failure is a 422 that names the field."""

from __future__ import annotations

import re
from typing import Any

from chat_trio.http.messages import HTTPError

# Control characters other than \n and \t (C0, DEL and C1).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def invalid(field: str, message: str) -> HTTPError:
    return HTTPError(422, "validation_failed", f"{field}: {message}", extra={"field": field})


def only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for name in body:
        if name not in allowed:
            raise invalid(str(name)[:64], "unknown field")


def string(
    body: dict[str, Any],
    name: str,
    *,
    min_len: int = 1,
    max_len: int,
    pattern: re.Pattern[str] | None = None,
    required: bool = True,
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(name, "is required")
        return None
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    if not min_len <= len(value) <= max_len:
        raise invalid(name, f"must be {min_len} to {max_len} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise invalid(name, f"must match {pattern.pattern}")
    return value


def text(value: str, name: str) -> str:
    if _CONTROL.search(value):
        raise invalid(name, "must not contain control characters other than newline and tab")
    return value


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
