"""The built-in web client: GET / and its assets over HTTP, and two real browsers chatting.

The browser test drives Debian's chromium (/usr/bin/chromium) headless through Playwright's sync
API in a worker thread while the server runs in the test's trio loop. It is skipped only when
that browser is absent (`apt-get install -y chromium`). Set CHAT_TRIO_SCREENSHOT=path to also
save a screenshot of a signed-in page with a conversation.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Callable
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import trio

from chat_trio.api.web import CSP
from chat_trio.app import App
from tests.client import HTTPClient
from tests.helpers import store_of

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 10_000  # any single browser step
PASSWORD = "correct horse battery staple"
XSS = "<script>window.pwned=1</script><b>x</b>"


def static_file(name: str) -> bytes:
    return files("chat_trio").joinpath("static", name).read_bytes()


class _PageScan(HTMLParser):
    """What a CSP-clean page must not have, and the assets it links."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.script_bodies: list[str] = []
        self.in_script = False
        self.handlers: list[str] = []
        self.styles: list[str] = []
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append(f"<{tag} {name}>")
            if name == "style":
                self.styles.append(f"<{tag} style>")
            if value and value.strip().lower().startswith("javascript:"):
                self.handlers.append(f"<{tag} {name}=javascript:>")
        if tag == "style":
            self.styles.append("<style>")
        if tag == "script":
            self.scripts.append(dict(attrs))
            self.in_script = True
            self.script_bodies.append("")
        attr = dict(attrs)
        if tag == "script" and attr.get("src"):
            self.assets.append(str(attr["src"]))
        if tag == "link" and attr.get("rel") == "stylesheet" and attr.get("href"):
            self.assets.append(str(attr["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.in_script = False

    def handle_data(self, data: str) -> None:
        if self.in_script:
            self.script_bodies[-1] += data


async def scan_page(client: HTTPClient) -> _PageScan:
    reply = await client.get("/")
    assert reply.status == 200
    scan = _PageScan()
    scan.feed(reply.body.decode())
    return scan


def assert_page_headers(headers: dict[bytes, bytes]) -> None:
    assert headers[b"content-security-policy"] == CSP.encode()
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"referrer-policy"] == b"no-referrer"


# -- HTTP ------------------------------------------------------------------------------------


async def test_index_is_html_with_strict_csp(client: HTTPClient) -> None:
    reply = await client.get("/")
    assert reply.status == 200
    assert reply.headers[b"content-type"] == b"text/html; charset=utf-8"
    assert_page_headers(reply.headers)
    assert CSP == (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    assert reply.headers[b"cache-control"] == b"no-cache"
    assert reply.body.startswith(b"<!doctype html>")
    head = await client.request("HEAD", "/")
    assert head.status == 200 and head.body == b""
    assert head.headers[b"content-length"] == str(len(reply.body)).encode()


async def test_page_has_no_inline_script_style_or_handlers(client: HTTPClient) -> None:
    scan = await scan_page(client)
    assert scan.scripts, "the page loads its script"
    assert all(s.get("src") for s in scan.scripts), scan.scripts
    assert all(not body.strip() for body in scan.script_bodies), scan.script_bodies
    assert scan.handlers == []
    assert scan.styles == []
    # and the script never parses strings as HTML or code
    script = static_file("app.js").decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "localStorage", "document.cookie"):
        assert sink not in script, sink


async def test_assets_have_their_content_types_and_are_versioned(client: HTTPClient) -> None:
    scan = await scan_page(client)
    types = {"app.js": b"text/javascript; charset=utf-8", "style.css": b"text/css; charset=utf-8"}
    assert sorted(a.split("?")[0] for a in scan.assets) == ["/static/app.js", "/static/style.css"]
    for url in scan.assets:
        name = url.split("?")[0].removeprefix("/static/")
        assert re.fullmatch(r"/static/[a-z.]+\?v=[0-9a-f]{16}", url), url
        reply = await client.get(url)
        assert reply.status == 200
        assert reply.headers[b"content-type"] == types[name]
        assert_page_headers(reply.headers)
        assert reply.headers[b"cache-control"] == b"public, max-age=31536000, immutable"
        assert reply.body == static_file(name)
        # any other version (or none) is served but must be revalidated
        for other in (f"/static/{name}", f"/static/{name}?v=0000000000000000"):
            again = await client.get(other)
            assert again.status == 200 and again.body == reply.body
            assert again.headers[b"cache-control"] == b"no-cache"


async def test_unknown_static_file_and_wrong_method(client: HTTPClient) -> None:
    for path in ("/static/nope.js", "/static/index.html", "/static/..%2fapp.py"):
        reply = await client.get(path)
        assert reply.status == 404, path
        assert reply.error_code == "not_found"
    reply = await client.post("/", {})
    assert reply.status == 405
    assert reply.headers[b"allow"] == b"GET, HEAD"


# -- a real browser --------------------------------------------------------------------------


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
async def test_two_browsers_chat_live_and_text_stays_text(app: App) -> None:
    base = f"http://127.0.0.1:{app.port}"
    screenshot = os.environ.get("CHAT_TRIO_SCREENSHOT")
    # Playwright's sync API runs its own loop: drive it from a worker thread while trio serves.
    def drop_websockets(user_id: int) -> None:
        """Close the user's websockets as the server does for a too-slow reader (4008)."""

        def close() -> None:
            for sub in list(app.hub.connections):
                if sub.user_id == user_id:
                    sub.close(4008, "too slow; reconnect and resume with after")

        trio.from_thread.run_sync(close)

    await trio.to_thread.run_sync(_browser_scenario, base, screenshot, drop_websockets)


def _rest(base: str, method: str, path: str, token: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def _browser_scenario(base: str, screenshot: str | None, drop_websockets: Callable[[int], None]) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                                     timeout=20_000)
        try:
            problems: list[str] = []
            frames_b: list[dict[str, Any]] = []

            def open_page(name: str) -> Any:
                context = browser.new_context(viewport={"width": 1100, "height": 680})
                context.set_default_timeout(TIMEOUT_MS)
                page = context.new_page()
                page.on("console", lambda m: problems.append(f"{name} console {m.type}: {m.text}")
                        if m.type in ("error", "warning") else None)
                page.on("pageerror", lambda e: problems.append(f"{name} page error: {e}"))
                return page

            def sign_up(page: Any, username: str) -> None:
                page.goto(base + "/")
                page.get_by_label("Username", exact=True).fill(username)
                page.get_by_label("Password", exact=True).fill(PASSWORD)
                page.get_by_role("button", name="Create account").click()
                expect(page.locator("#me-name")).to_have_text(username)
                expect(page.locator("#conn-status")).to_have_text("Live")

            a = open_page("A")
            b = open_page("B")

            def on_ws(ws: Any) -> None:
                def received(payload: str | bytes) -> None:
                    if isinstance(payload, str):
                        frames_b.append(json.loads(payload))
                ws.on("framereceived", received)

            b.on("websocket", on_ws)

            def wait_for_frame(page: Any, kind: str) -> None:
                for _ in range(TIMEOUT_MS // 50):
                    if any(f.get("type") == kind for f in frames_b):
                        return
                    page.wait_for_timeout(50)  # lets Playwright deliver the frame events
                raise AssertionError(f"no {kind} frame: {frames_b}")

            # A signs up and creates a room; B signs up, sees it and joins it.
            sign_up(a, "alice")
            a.get_by_label("Name", exact=True).fill("lobby")
            a.get_by_label("Topic (optional)").fill("Say hello")
            a.get_by_role("button", name="Create room").click()
            expect(a.locator("#room-title")).to_have_text("lobby")
            sign_up(b, "bob")
            b.locator(".room-button", has_text="lobby").click()
            expect(b.locator("#room-title")).to_have_text("lobby")
            expect(b.locator("#history-start")).to_be_visible()  # B's history read: empty room
            expect(b.locator("#member-list .member.online")).to_have_count(2)
            wait_for_frame(b, "subscribed")

            # A types: B sees the typing indicator, then the message, live over the websocket.
            a.locator("#message-input").fill("Hi Bob! The web client works.")
            expect(b.locator("#typing")).to_have_text("alice is typing…")
            a.locator("#message-input").press("Enter")
            # bob's join is the room's first timeline entry: shown by its text
            expect(b.locator("#messages .message-text")).to_have_text(
                ["bob joined", "Hi Bob! The web client works."])
            expect(b.locator("#typing")).to_have_text("")
            live = [f["message"]["text"] for f in frames_b if f.get("type") == "message"]
            assert live == ["Hi Bob! The web client works."], frames_b

            b.locator("#message-input").fill("Grüß dich, Alice!\nTwo lines, and it keeps them.")
            b.get_by_role("button", name="Send").click()
            a.locator("#message-input").fill("Great. Reconnects resume from the last seq.")
            a.locator("#message-input").press("Enter")
            expect(a.locator("#messages .message")).to_have_count(4)
            expect(b.locator("#messages .message")).to_have_count(4)
            expect(a.locator("#messages .message:not(.pending)")).to_have_count(4)
            if screenshot:
                expect(a.locator("#member-list .member.online")).to_have_count(2)
                expect(a.locator(".room-meta")).to_have_text("2 members")
                a.mouse.move(0, 0)  # no hover state in the picture
                a.screenshot(path=screenshot)

            # Markup in a message is shown as text: no element, no script run.
            a.locator("#message-input").fill(XSS)
            a.locator("#message-input").press("Enter")
            shown = b.locator('#messages li[data-seq="5"] .message-text')
            expect(shown).to_have_count(1)
            assert shown.text_content() == XSS
            for page in (a, b):
                expect(page.locator('#messages li[data-seq="5"] .message-text')).to_have_text(XSS)
                assert page.locator("#messages b, #messages script").count() == 0
                assert page.evaluate("typeof window.pwned") == "undefined"

            token_a = a.evaluate("sessionStorage.getItem('chat_trio.token')")
            token_b = b.evaluate("sessionStorage.getItem('chat_trio.token')")
            assert token_a and token_b and token_a != token_b
            assert a.evaluate("localStorage.length") == 0 and a.context.cookies() == []

            # B's websocket drops; what A posts meanwhile arrives after B reconnects and resumes
            # with `after`, in order and once each.
            room_id = _rest(base, "GET", "/rooms", token_a)["rooms"][0]["id"]
            drop_websockets(_rest(base, "GET", "/me", token_b)["user"]["id"])
            missed = [f"while you were away {i}" for i in range(3)]
            for text in missed:
                _rest(base, "POST", f"/rooms/{room_id}/messages", token_a, {"text": text})
            expect(b.locator("#messages .message-text")).to_have_count(8)
            expect(b.locator("#messages .message-text").nth(7)).to_have_text(missed[-1])
            expect(b.locator("#conn-status")).to_have_text("Live")
            assert [f["type"] for f in frames_b].count("hello") == 2
            seqs = b.locator("#messages .message").evaluate_all("ls => ls.map(l => Number(l.dataset.seq))")
            assert seqs == [1, 2, 3, 4, 5, 6, 7, 8]
            resumed = [f["message"]["text"] for f in frames_b if f.get("type") == "message"]
            assert resumed[-3:] == missed

            # History paging: a room with 60 messages shows the newest 50, then the rest.
            room = _rest(base, "POST", "/rooms", token_a, {"name": "archive"})["room"]
            _rest(base, "POST", f"/rooms/{room['id']}/join", token_b)
            for i in range(1, 61):
                _rest(base, "POST", f"/rooms/{room['id']}/messages", token_a if i % 2 else token_b,
                      {"text": f"old message {i}", "txn_id": f"seed-{i}"})
            b.reload()
            expect(b.locator("#conn-status")).to_have_text("Live")  # the token survived the reload
            b.locator(".room-button", has_text="archive").click()
            texts = b.locator("#messages .message-text")
            expect(texts).to_have_count(50)
            expect(texts.first).to_have_text("old message 11")
            expect(b.get_by_role("button", name="Load older messages")).to_be_visible()
            b.locator("#message-scroller").evaluate("e => { e.scrollTop = 0; }")  # scrolling up pages
            expect(texts).to_have_count(61)
            expect(texts.nth(1)).to_have_text("old message 1")  # after bob's join
            expect(b.locator("#history-start")).to_be_visible()

            # Log out: the token is gone from the page and from the server.
            b.get_by_role("button", name="Log out").click()
            expect(b.locator("#auth-form")).to_be_visible()
            assert b.evaluate("sessionStorage.length") == 0

            assert problems == [], problems
        finally:
            browser.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
async def test_room_list_pages_through_every_room(app: App, client: HTTPClient) -> None:
    """GET /rooms answers at most 500 rooms a page: the page lists all of them, across pages."""
    with trio.fail_after(60):
        reply = await client.post("/register", {"username": "owner", "password": PASSWORD})
        owner = reply.json["user"]["id"]
        async with trio.open_nursery() as nursery:  # concurrent creates share commits
            for i in range(503):
                nursery.start_soon(store_of(app).create_room, owner, f"room {i:03}", "")
        await trio.to_thread.run_sync(_room_list_scenario, f"http://127.0.0.1:{app.port}")


def _room_list_scenario(base: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                                     timeout=20_000)
        try:
            page = browser.new_context().new_page()
            page.goto(base + "/")
            page.get_by_label("Username", exact=True).fill("viewer")
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Create account").click()
            expect(page.locator("#me-name")).to_have_text("viewer")
            expect(page.locator(".room-button")).to_have_count(503)
            expect(page.locator(".room-button", has_text="room 502")).to_have_count(1)
        finally:
            browser.close()
