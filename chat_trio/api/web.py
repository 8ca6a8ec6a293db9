"""GET /: the built-in web chat client, and its static assets.

The files ship inside the package (chat_trio/static/) and are read once, when the routes are
built; every request is answered from memory. The page links its assets with a content hash
(`/static/app.js?v=…`), so a request for the current version may be cached for good while the
page itself is revalidated on every load. Every response carries a strict Content-Security-Policy:
the page has no inline script or style and talks only to this server (REST and the websocket).
"""

from __future__ import annotations

import hashlib
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
# name in chat_trio/static → its content type
ASSETS = {
    "app.js": b"text/javascript; charset=utf-8",
    "style.css": b"text/css; charset=utf-8",
}
PAGE = "index.html"
HTML_TYPE = b"text/html; charset=utf-8"
_IMMUTABLE = b"public, max-age=31536000, immutable"
_REVALIDATE = b"no-cache"


def _read(name: str) -> bytes:
    return files("chat_trio").joinpath("static", name).read_bytes()


def _version(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def routes() -> list[Route]:
    bodies = {name: _read(name) for name in ASSETS}
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
    for name, ctype in ASSETS.items():
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
