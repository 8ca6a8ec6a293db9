"""Method + path pattern → handler, with typed path parameters.

Patterns look like `/rooms/{room_id:int}/messages`. Static paths are a dict lookup; patterned
ones are matched segment by segment. A path that exists under another method answers 405 with
`Allow`; anything else is 404.

Paths are canonical: a resource has exactly one spelling, so a trailing slash, an empty segment
or an id with leading zeros is 404 (a cache, an ACL in a front proxy or a log query keyed on the
path cannot be bypassed by another spelling of it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from chat_trio.errors import APIError
from chat_trio.http.types import Request, Response

Handler = Callable[[Request], Awaitable[Response]]

_CONVERTERS: dict[str, Callable[[str], Any]] = {}
_MAX_INT = 2**63 - 1


def _to_int(raw: str) -> int:
    """A canonical decimal id: ASCII digits, no sign, no leading zero, at most 2**63 - 1."""
    if not raw.isdigit() or not raw.isascii() or len(raw) > 19 or (raw[0] == "0" and raw != "0"):
        raise ValueError(raw)
    value = int(raw)
    if value > _MAX_INT:
        raise ValueError(raw)
    return value


def _to_str(raw: str) -> str:
    if not raw:
        raise ValueError(raw)
    return raw


_CONVERTERS["int"] = _to_int
_CONVERTERS["str"] = _to_str


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str
    handler: Handler

    @property
    def segments(self) -> list[str]:
        return self.pattern.strip("/").split("/")


@dataclass(slots=True)
class _Pattern:
    pattern: str
    parts: list[tuple[str, Callable[[str], Any] | None]]  # (literal or param name, converter)
    methods: dict[str, Handler]


@dataclass(slots=True)
class Match:
    handler: Handler
    params: dict[str, Any]
    route: str  # the pattern, e.g. /rooms/{room_id:int}: a bounded label for logs and metrics


def allowed(methods: Iterable[str]) -> set[str]:
    """The methods a path answers: HEAD wherever GET is (it is served by the GET handler)."""
    found = set(methods)
    if "GET" in found:
        found.add("HEAD")
    return found


class Router:
    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self.routes: list[Route] = []
        self._static: dict[str, dict[str, Handler]] = {}
        self._patterns: list[_Pattern] = []
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> None:
        self.routes.append(route)
        if "{" not in route.pattern:
            self._static.setdefault(route.pattern, {})[route.method] = route.handler
            return
        parts: list[tuple[str, Callable[[str], Any] | None]] = []
        for seg in route.segments:
            if seg.startswith("{") and seg.endswith("}"):
                name, _, kind = seg[1:-1].partition(":")
                parts.append((name, _CONVERTERS[kind or "str"]))
            else:
                parts.append((seg, None))
        for existing in self._patterns:
            if existing.parts == parts:
                existing.methods[route.method] = route.handler
                return
        self._patterns.append(_Pattern(route.pattern, parts, {route.method: route.handler}))

    def match(self, method: str, path: str) -> Match:
        methods = self._static.get(path)
        params: dict[str, Any] = {}
        route = path
        if methods is None:
            methods, params, route = self._match_pattern(path)
        if methods is None:
            raise APIError(404, "not_found", f"no route for {path[:200]}")
        handler = methods.get(method)
        if handler is None and method == "HEAD":
            handler = methods.get("GET")
        if handler is None:
            allow = ", ".join(sorted(allowed(methods))).encode()
            raise APIError(405, "method_not_allowed", f"{method[:20]} not allowed here",
                            headers=[(b"allow", allow)])
        return Match(handler, params, route)

    def _match_pattern(self, path: str) -> tuple[dict[str, Handler] | None, dict[str, Any], str]:
        if not path.startswith("/"):
            return None, {}, ""
        segments = path[1:].split("/")  # a trailing slash or "//" leaves an empty segment: no match
        for pattern in self._patterns:
            if len(pattern.parts) != len(segments):
                continue
            params: dict[str, Any] = {}
            for (name, convert), seg in zip(pattern.parts, segments, strict=True):
                if convert is None:
                    if name != seg:
                        break
                    continue
                try:
                    params[name] = convert(seg)
                except ValueError:
                    break
            else:
                return pattern.methods, params, pattern.pattern
        return None, {}, ""
