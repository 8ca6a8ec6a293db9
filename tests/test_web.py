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
from functools import partial
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import trio

from chat_trio.api.web import CSP, asset_types, pin_imports
from chat_trio.app import App
from tests.client import HTTPClient
from tests.helpers import Served, store_of

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
    assert [s.get("type") for s in scan.scripts] == ["module"], "the page is ES modules"
    # and no module ever parses strings as HTML or code
    modules = [name for name in asset_types() if name.endswith(".js")]
    assert "app.js" in modules and len(modules) > 1
    for name in modules:
        script = static_file(name).decode()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function", "localStorage", "document.cookie", "import(", "setTimeout(\"",
                     "setInterval(\""):
            assert sink not in script, (name, sink)
        assert len(script.splitlines()) < 400, f"{name} is one view per module, well under 400 lines"
    # Nothing polls: the one timer that repeats is the websocket's heartbeat.
    repeating = {name: static_file(name).decode().count("setInterval(") for name in modules}
    assert repeating == {name: int(name == "socket.js") for name in modules}, repeating
    assert "setInterval(heartbeat, PING_EVERY_MS)" in static_file("socket.js").decode()


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
        assert reply.body == pin_imports({n: static_file(n) for n in asset_types()})[name]
        # any other version (or none) is served but must be revalidated
        for other in (f"/static/{name}", f"/static/{name}?v=0000000000000000"):
            again = await client.get(other)
            assert again.status == 200 and again.body == reply.body
            assert again.headers[b"cache-control"] == b"no-cache"


async def test_every_module_is_served_pinned_with_its_imports(client: HTTPClient) -> None:
    """The page's modules import each other: each import names the importee's current version,
    which is served as JavaScript and may be cached for good; a module's version changes when
    anything it imports changes."""
    scan = await scan_page(client)
    entry = next(url for url in scan.assets if url.startswith("/static/app.js?v="))
    seen: dict[str, str] = {}
    todo = [entry]
    while todo:
        url = todo.pop()
        name = url.split("?")[0].removeprefix("/static/")
        if name in seen:
            assert seen[name] == url, "every importer names the same version"
            continue
        seen[name] = url
        reply = await client.get(url)
        assert reply.status == 200, url
        assert reply.headers[b"content-type"] == b"text/javascript; charset=utf-8"
        assert reply.headers[b"cache-control"] == b"public, max-age=31536000, immutable", url
        assert_page_headers(reply.headers)
        imports = re.findall(r'from "\./([a-z_]+\.js)(\?v=[0-9a-f]{16})?"', reply.body.decode())
        for dep, version in imports:
            assert version, f"{name} imports {dep} unpinned"
            todo.append(f"/static/{dep}{version}")
        unpinned = re.sub(rb'\?v=[0-9a-f]{16}"', b'"', reply.body)
        assert unpinned == static_file(name), "only the import specifiers change"
    assert sorted(seen) == sorted(n for n in asset_types() if n.endswith(".js")), "no dead module"


def test_a_changed_module_changes_every_importers_version() -> None:
    raw = {"a.js": b'import { x } from "./b.js";', "b.js": b'import { y } from "./c.js";', "c.js": b"1"}
    before = pin_imports(raw)
    after = pin_imports({**raw, "c.js": b"2"})
    assert before["a.js"] != after["a.js"] and before["b.js"] != after["b.js"]
    with pytest.raises(RuntimeError, match="cycle"):
        pin_imports({**raw, "c.js": b'import { a } from "./a.js";'})
    with pytest.raises(RuntimeError, match="not in chat_trio/static"):
        pin_imports({"a.js": b'import { z } from "./zz.js";'})


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
        browser = _launch(pw)
        try:
            problems: list[str] = []
            frames_b: list[dict[str, Any]] = []
            a = _open_page(browser, "A", problems)
            b = _open_page(browser, "B", problems)

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
            _sign_in(a, base, "alice")
            a.get_by_label("Name", exact=True).fill("lobby")
            a.get_by_label("Topic (optional)").fill("Say hello")
            a.get_by_role("button", name="Create room").click()
            expect(a.locator("#room-title")).to_have_text("lobby")
            _sign_in(b, base, "bob")
            b.locator(".room-button", has_text="lobby").click()
            expect(b.locator("#room-title")).to_have_text("lobby")
            expect(b.locator("#history-start")).to_be_visible()  # B's history read: empty room
            expect(b.locator("#member-list .member.online")).to_have_count(2)
            wait_for_frame(b, "subscribed")

            # A types: B sees the typing indicator, then the message, live over the websocket.
            a.locator("#message-input").fill("Hi Bob! The web client works.")
            expect(b.locator("#typing")).to_have_text("alice is typing…")
            a.locator("#message-input").press("Enter")
            expect(b.locator("#messages .message-text")).to_have_text(["Hi Bob! The web client works."])
            expect(b.locator("#typing")).to_have_text("")
            live = [f["message"]["text"] for f in frames_b if f.get("type") == "message"]
            assert live == ["Hi Bob! The web client works."], frames_b

            b.locator("#message-input").fill("Grüß dich, Alice!\nTwo lines, and it keeps them.")
            b.get_by_role("button", name="Send").click()
            a.locator("#message-input").fill("Great. Reconnects resume from the last seq.")
            a.locator("#message-input").press("Enter")
            expect(a.locator("#messages .message")).to_have_count(3)
            expect(b.locator("#messages .message")).to_have_count(3)
            expect(a.locator("#messages .message:not(.pending)")).to_have_count(3)
            if screenshot:
                expect(a.locator("#member-list .member.online")).to_have_count(2)
                expect(a.locator(".room-meta")).to_have_text("2 members")
                a.mouse.move(0, 0)  # no hover state in the picture
                a.screenshot(path=screenshot)

            # Markup in a message is shown as text: no element, no script run.
            a.locator("#message-input").fill(XSS)
            a.locator("#message-input").press("Enter")
            shown = b.locator("#messages .message .message-text").nth(3)
            expect(shown).to_have_count(1)
            assert shown.text_content() == XSS
            for page in (a, b):
                expect(page.locator("#messages .message .message-text").nth(3)).to_have_text(XSS)
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
            expect(b.locator("#messages .message-text")).to_have_count(7)
            expect(b.locator("#messages .message-text").nth(6)).to_have_text(missed[-1])
            expect(b.locator("#conn-status")).to_have_text("Live")
            assert [f["type"] for f in frames_b].count("hello") == 2
            # every entry once, in order: bob's join (a room event) and the seven messages
            seqs = b.locator("#messages li").evaluate_all("ls => ls.map(l => Number(l.dataset.seq))")
            assert seqs == [1, 2, 3, 4, 5, 6, 7, 8]
            expect(b.locator('#messages li[data-seq="1"]')).to_have_text("bob joined")
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
            expect(texts).to_have_count(60)
            expect(texts.first).to_have_text("old message 1")
            expect(b.locator("#history-start")).to_be_visible()

            # Log out: the token is gone from the page and from the server.
            b.get_by_role("button", name="Log out").click()
            expect(b.locator("#auth-form")).to_be_visible()
            assert b.evaluate("sessionStorage.length") == 0

            assert problems == [], problems
        finally:
            browser.close()


def _launch(pw: Any) -> Any:
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                              timeout=20_000)


async def _in_browser(scenario: Callable[[Any, list[str]], None]) -> None:
    """Run scenario(browser, problems) in a worker thread (Playwright's sync API runs its own
    loop) while trio serves; then no page may have logged an error or warning."""

    def run() -> None:
        from playwright.sync_api import expect, sync_playwright

        expect.set_options(timeout=TIMEOUT_MS)
        with sync_playwright() as pw:
            browser = _launch(pw)
            try:
                problems: list[str] = []
                scenario(browser, problems)
                assert problems == [], problems
            finally:
                browser.close()

    await trio.to_thread.run_sync(run)


def _open_page(browser: Any, name: str, problems: list[str]) -> Any:
    """A fresh browser context (its own sessionStorage: another device) whose console errors,
    warnings and page errors are collected in `problems`."""
    context = browser.new_context(viewport={"width": 1100, "height": 680})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"{name} console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"{name} page error: {e}"))
    page.on("response", lambda r: problems.append(f"{name} answer {r.status}: {r.request.method} {r.url}")
            if r.status >= 400 else None)
    return page


def _sign_in(page: Any, base: str, username: str, password: str = PASSWORD, *, register: bool = True) -> None:
    from playwright.sync_api import expect

    page.goto(base + "/")
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Create account" if register else "Log in").click()
    expect(page.locator("#me-name")).to_have_text(username)
    expect(page.locator("#conn-status")).to_have_text("Live")
    # The room list loads beside the websocket, and an empty one opens "Create a room" when it
    # arrives: wait for it, as a user would, or a click meant to open the form may close it.
    expect(page.locator("#rooms-empty").or_(page.locator("#room-list .room-button")).first).to_be_visible()


def _member_action(page: Any, username: str, action: str) -> None:
    """Open a member's menu in the member list and pick an action."""
    page.get_by_label(f"Actions for {username}").click()
    page.locator("#member-list .member-actions").get_by_role("button", name=action, exact=True).click()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
@pytest.mark.workers
async def test_private_room_invite_accept_chat_kick_live(app: Served) -> None:
    """Issue 15 in two browsers: a private room with a lock, an invite accepted live, a chat, a
    kick that B's page shows at once; direct messages from the member list; moderator actions
    only for moderators; presence; and no polling."""
    await _in_browser(partial(_private_room_scenario, f"http://127.0.0.1:{app.port}"))


def _private_room_scenario(base: str, browser: Any, problems: list[str]) -> None:
    from playwright.sync_api import expect

    a = _open_page(browser, "A", problems)
    b = _open_page(browser, "B", problems)
    polls: list[str] = []  # A's reads of the room list: at sign-in, never on a timer
    a.on("request", lambda r: polls.append(r.url)
         if r.method == "GET" and "/rooms?" in r.url else None)

    # Both in a public lobby, where A (its owner) sees moderator actions and B does not.
    _sign_in(a, base, "alice")
    a.get_by_label("Name", exact=True).fill("lobby")
    a.get_by_role("button", name="Create room").click()
    expect(a.locator("#room-title")).to_have_text("lobby")
    _sign_in(b, base, "bob")
    b.locator(".room-button", has_text="lobby").click()
    expect(b.locator("#member-list .member")).to_have_count(2)
    expect(a.locator("#member-list .member.online")).to_have_count(2)  # B's join, live
    expect(a.locator('#messages .event[data-kind="join"]')).to_have_count(1)
    expect(b.locator("#member-list .member", has_text="alice").locator(".role")).to_have_text("owner")
    b.get_by_label("Actions for alice").click()
    expect(b.locator("#member-list .member-actions button")).to_have_text(["Message"])
    expect(b.locator("#invite-form")).to_be_hidden()
    a.get_by_label("Actions for bob").click()
    expect(a.locator("#member-list .member-actions button")).to_have_text(
        ["Message", "Kick", "Ban", "Make moderator"])
    a.get_by_label("Actions for bob").click()

    # A creates a private room: a lock in A's list, nothing in B's.
    a.locator("#create-room summary").click()
    a.get_by_label("Name", exact=True).fill("secret plans")
    a.get_by_label("Private (invite only)").check()
    a.get_by_role("button", name="Create room").click()
    expect(a.locator("#room-title")).to_have_text("secret plans")
    secret_a = a.locator(".room-button", has_text="secret plans")
    expect(secret_a).to_have_attribute("data-visibility", "private")
    expect(secret_a.locator(".lock")).to_have_count(1)

    # A invites B by name; B's invite shows up live, B accepts and is in.
    a.get_by_label("Invite someone").fill("bob")
    a.get_by_role("button", name="Invite", exact=True).click()
    expect(a.locator("#invite-done")).to_have_text("Invited bob.")
    invite = b.locator("#invite-list .invite")
    expect(invite).to_have_text(re.compile("alice invited you to secret plans"))
    # no `room` frame told B of the private room (it would have come before the invite frame)
    expect(b.locator(".room-button", has_text="secret plans")).to_have_count(0)
    invite.get_by_role("button", name="Accept").click()
    expect(b.locator("#room-title")).to_have_text("secret plans")
    expect(b.locator("#invites")).to_be_hidden()
    expect(b.locator(".room-button", has_text="secret plans").locator(".lock")).to_have_count(1)
    expect(a.locator("#member-list .member")).to_have_count(2)
    expect(a.locator('#messages .event[data-kind="join"]')).to_have_text([re.compile("bob")])

    # They chat.
    b.locator("#message-input").fill("Thanks for the invite!")
    b.locator("#message-input").press("Enter")
    expect(a.locator("#messages .message-text")).to_have_text(["Thanks for the invite!"])

    # A kicks B: B's page says so at once, closes the room and forgets the private room.
    _member_action(a, "bob", "Kick")
    a.get_by_label("Kick reason").fill("testing")
    a.get_by_role("button", name="Kick bob").click()
    expect(b.locator("#room-notice")).to_have_text(
        "You were removed from secret plans by a moderator.")
    expect(b.locator("#room-title")).to_have_text("Pick a room")
    expect(b.locator("#composer")).to_be_hidden()
    expect(b.locator(".room-button", has_text="secret plans")).to_have_count(0)
    expect(a.locator("#member-list .member")).to_have_count(1)
    expect(a.locator('#messages .event[data-kind="kick"]')).to_have_count(1)

    # "Message" on a member opens the one direct room of the pair; B's list gets it live.
    a.locator(".room-button", has_text="lobby").click()
    _member_action(a, "bob", "Message")
    expect(a.locator("#room-title")).to_have_text("bob")
    direct_b = b.locator('.room-button[data-kind="direct"]')
    expect(direct_b).to_have_text(re.compile("alice"))
    a.locator("#message-input").fill("Just between us.")
    a.locator("#message-input").press("Enter")
    direct_b.click()
    expect(b.locator("#room-title")).to_have_text("alice")
    expect(b.locator("#messages .message-text")).to_have_text(["Just between us."])
    expect(b.locator("#invite-form")).to_be_hidden()
    expect(b.locator("#member-list .member-menu")).to_have_count(0)  # no moderation in a direct room

    # B leaves it: gone from B's list (it is private); A's timeline says so.
    b.get_by_role("button", name="Leave room").click()
    expect(b.locator("#room-notice")).to_have_text("You left alice.")
    expect(direct_b).to_have_count(0)
    expect(a.locator('#messages .event[data-kind="leave"]')).to_have_text(["bob left"])

    # Opening it again from the lobby brings bob back: it reappears in B's list, live.
    a.locator(".room-button", has_text="lobby").click()
    _member_action(a, "bob", "Message")
    expect(a.locator("#room-title")).to_have_text("bob")
    expect(direct_b).to_have_count(1)
    expect(a.locator('#messages .event[data-kind="join"]')).to_have_text(["bob joined"])

    # Presence: B goes away, A's member list shows it live.
    a.locator(".room-button", has_text="lobby").click()
    bob = a.locator("#member-list .member", has_text="bob")
    expect(bob).to_have_class(re.compile(r"\bonline\b"))
    b.context.close()
    expect(bob).not_to_have_class(re.compile(r"\bonline\b"))

    # A bans bob (with a reason), finds him under Banned, and lifts the ban.
    _member_action(a, "bob", "Ban")
    a.get_by_label("Ban reason").fill("spam")
    a.get_by_role("button", name="Ban bob").click()
    expect(a.locator("#member-list .member")).to_have_count(1)
    expect(a.locator('#messages .event[data-kind="ban"]')).to_have_text([re.compile("bob.*spam")])
    a.locator("#bans summary").click()
    expect(a.locator("#ban-list .ban")).to_have_count(1)
    expect(a.locator("#ban-list .ban")).to_contain_text("spam")
    a.get_by_role("button", name="Unban bob").click()
    expect(a.locator("#ban-list .ban")).to_have_count(0)
    expect(a.locator("#bans-empty")).to_be_visible()

    # Room settings: a new name and topic reach the room list and the header.
    a.locator("#room-settings summary").click()
    expect(a.get_by_label("Room name")).to_have_value("lobby")
    a.get_by_label("Room name").fill("main hall")
    a.get_by_label("Room topic").fill("All hands")
    a.get_by_role("button", name="Save").click()
    expect(a.locator("#settings-done")).to_have_text("Saved.")
    expect(a.locator("#room-title")).to_have_text("main hall")
    expect(a.locator("#room-topic-text")).to_have_text("All hands")
    expect(a.locator('.room-button[aria-current="true"]')).to_contain_text("main hall")
    expect(a.locator('#messages .event[data-kind="room_updated"]')).to_have_count(1)

    assert len(polls) == 2, polls  # all + joined, at sign-in


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
@pytest.mark.workers
async def test_password_change_ends_the_other_session_live(app: Served) -> None:
    """Issue 17 in two browsers of one user: a password change in one ends the other's session
    at once; the sessions list ends one; deleting the account asks first, then signs out."""
    await _in_browser(partial(_account_scenario, f"http://127.0.0.1:{app.port}"))


def _account_scenario(base: str, browser: Any, problems: list[str]) -> None:
    from playwright.sync_api import expect

    new_password = "a much better passphrase"
    one = _open_page(browser, "one", problems)
    two = _open_page(browser, "two", problems)
    _sign_in(one, base, "carol")
    _sign_in(two, base, "carol", register=False)
    assert one.locator("#admin-button").is_hidden()  # not an admin

    # Two sessions, this one marked; the other can be ended from here.
    one.get_by_role("button", name="Account").click()
    sessions = one.locator("#session-list .row")
    expect(sessions).to_have_count(2)
    expect(one.locator("#session-list .row.current")).to_have_count(1)
    expect(one.locator("#session-list .row.current button")).to_have_count(0)

    # A wrong current password is refused without ending anything.
    one.get_by_label("Current password").fill("not my password")
    one.get_by_label("New password", exact=True).fill(new_password)
    one.get_by_label("New password again").fill(new_password)
    one.get_by_role("button", name="Change password").click()
    expect(one.locator("#pw-error")).to_have_text("Your current password is wrong.")
    expect(one.locator("#conn-status")).to_have_text("Live")

    # The server's rules apply, in its words.
    one.get_by_label("Current password").fill(PASSWORD)
    one.get_by_label("New password", exact=True).fill("short")
    one.get_by_label("New password again").fill("short")
    one.get_by_role("button", name="Change password").click()
    expect(one.locator("#pw-error")).to_contain_text("new_password")

    # The change ends the other browser's session live (websocket 4001), not this one.
    one.get_by_label("Current password").fill(PASSWORD)
    one.get_by_label("New password", exact=True).fill(new_password)
    one.get_by_label("New password again").fill(new_password)
    one.get_by_role("button", name="Change password").click()
    expect(one.locator("#pw-done")).to_have_text(re.compile("Password changed"))
    expect(two.locator("#auth-form")).to_be_visible()
    expect(two.locator("#auth-error")).to_have_text("Your session ended. Please sign in again.")
    assert two.evaluate("sessionStorage.length") == 0
    expect(sessions).to_have_count(1)
    expect(one.locator("#conn-status")).to_have_text("Live")

    # The old password no longer works; the new one does; ending that session from the
    # first browser signs the second out again.
    two.get_by_label("Username", exact=True).fill("carol")
    two.get_by_label("Password", exact=True).fill(PASSWORD)
    two.get_by_role("button", name="Log in").click()
    expect(two.locator("#auth-error")).to_have_text("Wrong username or password.")
    _sign_in(two, base, "carol", new_password, register=False)
    one.get_by_role("button", name="Chat").click()
    one.get_by_role("button", name="Account").click()
    expect(sessions).to_have_count(2)
    one.locator("#session-list .row:not(.current)").get_by_role("button", name="End session").click()
    expect(two.locator("#auth-error")).to_have_text("Your session ended. Please sign in again.")
    expect(sessions).to_have_count(1)

    # My data downloads as one JSON document.
    with one.expect_download() as download:
        one.get_by_role("button", name="Download my data").click()
    assert download.value.suggested_filename == "chat_trio-carol.json"
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["user"]["username"] == "carol", exported

    # Deleting the account asks first, says what erasing means, then signs out for good.
    one.get_by_label("Your password").fill(new_password)
    one.get_by_label("Also erase every message I wrote").check()
    one.get_by_role("button", name="Delete account…").click()
    confirm = one.locator("#delete-confirm-text")
    expect(confirm).to_have_text(re.compile("every message you wrote erased"))
    one.get_by_role("button", name="Cancel").click()
    expect(one.locator("#delete-confirm")).to_be_hidden()
    expect(one.locator("#conn-status")).to_have_text("Live")
    one.get_by_role("button", name="Delete account…").click()
    one.get_by_role("button", name="Yes, delete my account").click()
    expect(one.locator("#auth-error")).to_have_text("Your account has been deleted.")
    one.get_by_label("Username", exact=True).fill("carol")
    one.get_by_label("Password", exact=True).fill(new_password)
    one.get_by_role("button", name="Log in").click()
    expect(one.locator("#auth-error")).to_have_text("This account has been closed.")

    # the only failed loads: wrong passwords (401), a short one (422), the closed account (403)
    problems[:] = [p for p in problems if not re.search(
        r"status of 40[13]|status of 422|answer 401: (POST|PUT) .*/(login|me/password)$"
        r"|answer 403: POST .*/login$|answer 422: PUT .*/me/password$", p)]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
async def test_admin_view_manages_users(app: App, client: HTTPClient) -> None:
    """The admin view, only for admins: find users, promote and demote, reset a password (the
    user's open page signs out), deactivate behind a confirmation, create a user."""
    with trio.fail_after(30):
        for name in ("root", "dave"):
            reply = await client.post("/register", {"username": name, "password": PASSWORD})
            assert reply.status == 201
        await store_of(app).set_admin(reply.json["user"]["id"] - 1, True)
    await _in_browser(partial(_admin_scenario, f"http://127.0.0.1:{app.port}"))


def _admin_scenario(base: str, browser: Any, problems: list[str]) -> None:
    from playwright.sync_api import expect

    root = _open_page(browser, "root", problems)
    dave = _open_page(browser, "dave", problems)
    _sign_in(dave, base, "dave", register=False)
    expect(dave.locator("#admin-button")).to_be_hidden()
    _sign_in(root, base, "root", register=False)
    root.get_by_role("button", name="Admin").click()
    rows = root.locator("#user-list .row")
    expect(rows).to_have_count(2)
    row = root.locator("#user-list .row", has_text="dave")
    expect(root.locator("#user-list .row", has_text="root").locator(".badge")).to_have_text("admin")

    # Search by prefix.
    root.get_by_label("Username starts with").fill("da")
    root.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)

    # Promote, then demote.
    row.get_by_role("button", name="Make admin").click()
    expect(row.locator(".badge")).to_have_text("admin")
    row.get_by_role("button", name="Remove admin").click()
    expect(row.locator(".badge")).to_have_count(0)

    # A reset password ends dave's open session at once; the new one works.
    row.get_by_role("button", name="Reset password").click()
    row.get_by_label("New password for dave").fill("reset by the admin")
    row.get_by_role("button", name="Set password").click()
    expect(root.locator("#admin-done")).to_have_text(re.compile("password was reset"))
    expect(dave.locator("#auth-error")).to_have_text("Your session ended. Please sign in again.")
    _sign_in(dave, base, "dave", "reset by the admin", register=False)

    # dave writes in a room root has open.
    root.get_by_role("button", name="Chat").click()
    root.get_by_label("Name", exact=True).fill("ops")
    root.get_by_role("button", name="Create room").click()
    expect(root.locator("#room-title")).to_have_text("ops")
    dave.locator(".room-button", has_text="ops").click()
    dave.locator("#message-input").fill("dave was here")
    dave.locator("#message-input").press("Enter")
    expect(root.locator("#messages .message-text")).to_have_text(["dave was here"])
    root.get_by_role("button", name="Admin").click()

    # Deactivating asks first; then dave is signed out and the row says so.
    row.get_by_role("button", name="Deactivate…").click()
    expect(row).to_contain_text("cannot log in again")
    row.get_by_role("button", name="Cancel").click()
    expect(dave.locator("#conn-status")).to_have_text("Live")
    row.get_by_role("button", name="Deactivate…").click()
    row.get_by_label("Also erase every message they wrote").check()
    row.get_by_role("button", name="Deactivate dave").click()
    expect(row.locator(".badge")).to_have_text("deactivated")
    expect(dave.locator("#auth-form")).to_be_visible()
    # The open room took the erasure live: the text is gone, the room says what happened.
    root.get_by_role("button", name="Chat").click()
    expect(root.locator("#messages .message.deleted .message-text")).to_have_text(["message deleted"])
    expect(root.locator("#messages .event")).to_have_text(
        ["dave joined", "dave's messages were erased", "dave left"])
    expect(root.locator("#member-list .member")).to_have_count(1)
    root.get_by_role("button", name="Admin").click()

    # Create a user, who can sign in.
    root.get_by_label("Their username").fill("erin")
    root.get_by_label("Their password").fill(PASSWORD)
    root.get_by_role("button", name="Create user").click()
    expect(root.locator("#admin-done")).to_have_text("Created erin.")
    erin = _open_page(browser, "erin", problems)
    _sign_in(erin, base, "erin", register=False)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
async def _user_in_rooms(app: App, client: HTTPClient, username: str, rooms: int) -> int:
    """A new user (their id) who created `rooms` rooms, "room 000" and on."""
    reply = await client.post("/register", {"username": username, "password": PASSWORD})
    user_id = reply.json["user"]["id"]
    async with trio.open_nursery() as nursery:  # concurrent creates share commits
        for i in range(rooms):
            nursery.start_soon(store_of(app).create_room, user_id, f"room {i:03}", "")
    return int(user_id)


async def test_room_list_pages_through_every_room(app: App, client: HTTPClient) -> None:
    """GET /rooms answers at most 500 rooms a page: the page lists all of them, across pages."""
    with trio.fail_after(60):
        await _user_in_rooms(app, client, "owner", 503)
        await trio.to_thread.run_sync(_room_list_scenario, f"http://127.0.0.1:{app.port}")


def _room_list_scenario(base: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = _launch(pw)
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


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
@pytest.mark.workers
async def test_edits_deletes_unread_badges_and_search(app: Served) -> None:
    """Issue 16 in three pages (alice; bob on two devices): ↑ edits my last message and Escape
    cancels; edits and deletes (mine, and a moderator's of someone else's) change the message
    in place in the other browser; an unread badge appears live and clears on both of bob's
    devices when one of them reads the room; search marks the matched words (code points, text
    only) and opens the room at an older message with what surrounds it."""
    await _in_browser(partial(_timeline_scenario, f"http://127.0.0.1:{app.port}"))


def _create_room(page: Any, name: str) -> None:
    from playwright.sync_api import expect

    if page.locator("#create-room").get_attribute("open") is None:
        page.locator("#create-room summary").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="Create room").click()
    expect(page.locator("#room-title")).to_have_text(name)


def _send(page: Any, text: str) -> None:
    """Send from the composer and wait until the message is no longer "sending…": the server has
    committed it, so a search or another page may look for it next."""
    from playwright.sync_api import expect

    page.locator("#message-input").fill(text)
    page.locator("#message-input").press("Enter")
    expect(page.locator("#messages .message.pending")).to_have_count(0)


def _timeline_scenario(base: str, browser: Any, problems: list[str]) -> None:
    from playwright.sync_api import expect

    a = _open_page(browser, "A", problems)
    b = _open_page(browser, "B", problems)
    _sign_in(a, base, "alice")
    _create_room(a, "plaza")
    _sign_in(b, base, "bob")
    b.locator(".room-button", has_text="plaza").click()
    expect(b.locator("#composer")).to_be_visible()  # joined
    # B opens a room of its own: plaza goes on in the background, with nothing unread
    _create_room(b, "corner")
    plaza_b = b.locator(".room-button", has_text="plaza")
    expect(plaza_b.locator(".unread-badge")).to_have_count(0)

    # A sends with a typo, then an emoji: B's badge counts them live
    _send(a, "hello wrold")
    _send(a, "🎉 café at noon")
    expect(a.locator("#messages .message.mine:not(.pending) .message-text")).to_have_text(
        ["hello wrold", "🎉 café at noon"])
    expect(plaza_b.locator(".unread-badge")).to_have_text("2")
    # bob's second device reads the same count from the room list
    c = _open_page(browser, "C", problems)
    _sign_in(c, base, "bob", register=False)
    plaza_c = c.locator(".room-button", has_text="plaza")
    expect(plaza_c.locator(".unread-badge")).to_have_text("2")

    # ↑ in A's empty composer edits A's last message; Escape cancels; ↑ again, Enter saves
    a.locator("#message-input").press("ArrowUp")
    editor = a.locator("#messages .edit-form textarea")
    expect(editor).to_have_value("🎉 café at noon")
    expect(editor).to_be_focused()
    editor.press("Escape")
    expect(editor).to_have_count(0)
    expect(a.locator("#message-input")).to_be_focused()
    first_a = a.locator("#messages .message").first
    first_a.hover()
    first_a.get_by_role("button", name="Edit message").click()
    expect(editor).to_have_value("hello wrold")
    editor.fill("hello world")
    editor.press("Enter")
    expect(first_a.locator(".message-text")).to_have_text("hello world")
    expect(first_a.locator(".edited")).to_have_text("(edited)")
    expect(plaza_b.locator(".unread-badge")).to_have_text("2")  # an edit is nothing new to read

    # B opens plaza: history shows the edit; the badge clears on B, and on C by the read frame
    plaza_b.click()
    texts_b = b.locator("#messages .message .message-text")
    expect(texts_b).to_have_text(["hello world", "🎉 café at noon"])
    expect(b.locator("#messages .message .edited")).to_have_count(1)
    expect(plaza_b.locator(".unread-badge")).to_have_count(0)
    expect(plaza_c.locator(".unread-badge")).to_have_count(0)
    # a plain member may neither edit nor delete someone else's message
    expect(b.locator("#messages .message").first.get_by_role("button", name="Edit message")).to_have_count(0)
    expect(b.locator("#messages .message").first.get_by_role("button", name="Delete message")).to_be_hidden()

    # Live in B: A edits again with ↑, then deletes the message (after confirming)
    a.locator("#message-input").press("ArrowUp")
    editor.fill("🎉 café at one")
    editor.press("Enter")
    expect(texts_b).to_have_text(["hello world", "🎉 café at one"])
    expect(b.locator("#messages .message .edited")).to_have_count(2)
    last_a = a.locator("#messages .message").last
    last_a.hover()
    last_a.get_by_role("button", name="Delete message").click()
    last_a.locator(".delete-confirm").get_by_role("button", name="Delete", exact=True).click()
    expect(texts_b).to_have_text(["hello world", "message deleted"])
    expect(b.locator("#messages .message.deleted")).to_have_count(1)
    expect(last_a.locator(".message-text")).to_have_text("message deleted")
    expect(last_a.get_by_role("button", name="Edit message")).to_have_count(0)

    # A moderates: B's message, deleted by A (the owner), goes in both pages
    _send(b, "oops, wrong room")
    oops_a = a.locator("#messages .message", has_text="oops, wrong room")
    oops_a.hover()
    oops_a.get_by_role("button", name="Delete message").click()
    a.locator(".delete-confirm").get_by_role("button", name="Delete", exact=True).click()
    expect(texts_b).to_have_text(["hello world", "message deleted", "message deleted"])

    # Enough newer messages that "hello world" is off the newest page
    room_id = int(plaza_b.get_attribute("data-room-id") or 0)
    for page in (a, b):
        token = page.evaluate("() => sessionStorage.getItem('chat_trio.token')")
        for i in range(28):
            _rest(base, "POST", f"/rooms/{room_id}/messages", token, {"text": f"filler {i}"})
    expect(b.locator("#messages .message", has_text="filler 27")).to_have_count(2)

    # C searches: matched words marked as text (offsets in code points: the emoji before
    # `café` is two UTF-16 units, one code point); a deleted message is not found
    c.get_by_label("Search messages").fill("WOR")
    c.get_by_label("Search messages").press("Enter")
    hits = c.locator("#search-results .search-hit")
    expect(hits).to_have_count(1)
    expect(hits.locator("mark")).to_have_text(["world"])
    expect(hits.locator(".search-text")).to_have_text("hello world")
    expect(hits.locator(".search-room")).to_have_text("plaza")
    c.get_by_label("Search messages").fill("cafe")
    c.get_by_label("Search messages").press("Enter")
    expect(c.locator("#search-empty")).to_be_visible()
    _send(b, "<b>Café</b> 🎉 café again")
    c.get_by_label("Search messages").press("Enter")
    expect(hits).to_have_count(1)
    expect(hits.locator("mark")).to_have_text(["Café", "café"])
    expect(hits.locator(".search-text b")).to_have_count(0)

    # narrowed to the open room (corner), "hello" finds nothing; over all rooms it opens plaza on
    # C around that older message, marked, with the way back
    c.locator(".room-button", has_text="corner").click()
    expect(c.locator("#room-title")).to_have_text("corner")
    c.get_by_label("In the open room only").check()
    c.get_by_label("Search messages").fill("hello")
    c.get_by_label("Search messages").press("Enter")
    expect(c.locator("#search-empty")).to_be_visible()
    expect(hits).to_have_count(0)
    c.get_by_label("In the open room only").uncheck()
    c.get_by_label("Search messages").press("Enter")
    expect(hits).to_have_count(1)
    hits.click()
    expect(c.locator("#room-title")).to_have_text("plaza")
    found = c.locator("#messages .message.found")
    expect(found.locator(".message-text")).to_have_text("hello world")
    expect(found).to_be_in_viewport()
    expect(c.locator("#messages .message", has_text="<b>Café</b>")).to_have_count(0)
    # a live entry meanwhile waits behind "Jump to the latest"
    _send(a, "newest of all")
    c.get_by_role("button", name="Jump to the latest messages").click()
    expect(c.locator("#messages .message").last.locator(".message-text")).to_have_text("newest of all")
    expect(c.locator("#jump-latest")).to_be_hidden()
    expect(plaza_c.locator(".unread-badge")).to_have_count(0)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
async def test_unread_badges_in_every_room_of_many(app: App, client: HTTPClient) -> None:
    """A user in 120 rooms: the page subscribes to all of them, paced under the server's inbound
    frame limit (50/s, bursts of 100), so a message in the last one still shows its badge; after
    the server drops the websocket, the page resumes every room and counts each message once."""
    with trio.fail_after(60):
        busy = await _user_in_rooms(app, client, "busy", 120)
        await client.post("/register", {"username": "poster", "password": PASSWORD})
        token = (await client.post("/login", {"username": "poster", "password": PASSWORD})).json["token"]

    def drop_websockets() -> None:
        def close() -> None:
            for sub in list(app.hub.connections):
                if sub.user_id == busy:
                    sub.close(4008, "too slow; reconnect and resume with after")

        trio.from_thread.run_sync(close)

    await _in_browser(partial(_many_rooms_scenario, f"http://127.0.0.1:{app.port}", token, drop_websockets))


def _many_rooms_scenario(base: str, token: str, drop_websockets: Callable[[], None], browser: Any,
                         problems: list[str]) -> None:
    from playwright.sync_api import expect

    page = _open_page(browser, "busy", problems)
    _sign_in(page, base, "busy", register=False)
    expect(page.locator(".room-button .room-meta", has_text="member")).to_have_count(120)
    last = page.locator(".room-button").last  # the newest room: subscribed in the last batch
    room_id = int(last.get_attribute("data-room-id") or 0)
    _rest(base, "POST", f"/rooms/{room_id}/join", token)
    _rest(base, "POST", f"/rooms/{room_id}/messages", token, {"text": "anyone here?"})
    expect(last.locator(".unread-badge")).to_have_text("1")
    expect(page.locator(".unread-badge")).to_have_count(1)
    drop_websockets()  # whether these come while offline or after the resume, each counts once
    for text in ("still there?", "hello?"):
        _rest(base, "POST", f"/rooms/{room_id}/messages", token, {"text": text})
    expect(last.locator(".unread-badge")).to_have_text("3")
    expect(page.locator("#conn-status")).to_have_text("Live")
    _rest(base, "POST", f"/rooms/{room_id}/messages", token, {"text": "bye"})
    expect(last.locator(".unread-badge")).to_have_text("4")
    expect(page.locator(".unread-badge")).to_have_count(1)
