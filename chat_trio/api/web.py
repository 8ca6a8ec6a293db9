"""GET /: the built-in web chat client, and its static assets.

The files ship inside the package (chat_trio/static/) and are read once, when the routes are
built; every request is answered from memory. The page links its assets with a content hash
(`/static/app.js?v=…`), and each ES module's relative imports are pinned the same way (`from
"./api.js?v=…"`), so a request for the current version may be cached for good while the page
itself is revalidated on every load. Every response carries a strict Content-Security-Policy:
the page has no inline script or style and talks only to this server (REST and the websocket).
"""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files

from chat_trio.errors import APIError
from chat_trio.http.router import Route
from chat_trio.http.types import Headers, Request, Response

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: Headers = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
# file suffix → content type; every such file in chat_trio/static is served (the page's ES
# modules import each other by relative URL, so each one must be reachable under /static/)
TYPES = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}
PAGE = "index.html"
HTML_TYPE = b"text/html; charset=utf-8"
_IMPORT = re.compile(rb'(from\s+)"\./([A-Za-z0-9_-]+\.js)"')
_IMMUTABLE = b"public, max-age=31536000, immutable"
_REVALIDATE = b"no-cache"


def _read(name: str) -> bytes:
    return files("chat_trio").joinpath("static", name).read_bytes()


def asset_types() -> dict[str, bytes]:
    """Every servable file of chat_trio/static, by name, with its content type."""
    found: dict[str, bytes] = {}
    for entry in files("chat_trio").joinpath("static").iterdir():
        ctype = TYPES.get("." + entry.name.rpartition(".")[2])
        if ctype is not None and entry.is_file():
            found[entry.name] = ctype
    return dict(sorted(found.items()))


def _version(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def pin_imports(raw: dict[str, bytes]) -> dict[str, bytes]:
    """Each module with its relative imports pinned to their served versions, deepest first:
    a changed module changes the version of every module importing it, up to the page's."""
    done: dict[str, bytes] = {}

    def pin(name: str, chain: tuple[str, ...]) -> bytes:
        if name in done:
            return done[name]
        if name in chain:
            raise RuntimeError(f"static modules import each other in a cycle: {' -> '.join((*chain, name))}")

        def pinned(match: re.Match[bytes]) -> bytes:
            dep = match.group(2).decode()
            if dep not in raw:
                raise RuntimeError(f"static/{name} imports {dep}, which is not in chat_trio/static")
            return match.group(1) + f'"./{dep}?v={_version(pin(dep, (*chain, name)))}"'.encode()

        done[name] = _IMPORT.sub(pinned, raw[name]) if name.endswith(".js") else raw[name]
        return done[name]

    for name in raw:
        pin(name, ())
    return done


def routes() -> list[Route]:
    types = asset_types()
    bodies = pin_imports({name: _read(name) for name in types})
    versions = {name: _version(body) for name, body in bodies.items()}
    page = _read(PAGE)
    for name, version in versions.items():
        # The page names each asset as "/static/NAME"; pin it to this version of the file.
        page = page.replace(f'"/static/{name}"'.encode(), f'"/static/{name}?v={version}"'.encode())
    page_response = Response(200, page, [*SECURITY_HEADERS, (b"cache-control", _REVALIDATE)], HTML_TYPE)

    async def index(request: Request) -> Response:
        return page_response

    # name → (current version, answer for the pinned URL, answer for any other URL)
    assets: dict[str, tuple[str, Response, Response]] = {}
    for name, ctype in types.items():
        body = bodies[name]
        assets[name] = (
            versions[name],
            Response(200, body, [*SECURITY_HEADERS, (b"cache-control", _IMMUTABLE)], ctype),
            Response(200, body, [*SECURITY_HEADERS, (b"cache-control", _REVALIDATE)], ctype),
        )

    async def asset(request: Request) -> Response:
        found = assets.get(request.params["name"])
        if found is None:
            raise APIError(404, "not_found", "no such file")
        version, pinned, unpinned = found
        # Only the exact current version may be cached for good; any other URL revalidates.
        return pinned if request.query_string == f"v={version}" else unpinned

    return [
        Route("GET", "/", index),
        Route("GET", "/static/{name}", asset),
    ]
