"""The web app under attack, in Chromium against a real server: what a hostile member can send,
and what a page keeps where another script (or the next user of the browser) could find it.

One server for the module (REQUESTS_OFF: a stranger's message arrives without a request). The
attacker is a Python SDK member; the victim signs in through the app's own login form, as
tests/browser/test_web_members.py does.

- Hostile text renders as text: a message `<img src=x onerror=alert(1)><script>…`, a group
  title and file names full of HTML show literally, inject no element, open no dialog and trip
  no CSP violation; `javascript:` in text (bare, markdown, an <a> tag) is never a link.
- Hostile files: an `.html` and an `.svg` attachment (whatever type the uploader claims) are
  never previewed nor opened in the app's origin: the Download button saves them, the page stays
  where it was, and the API serves their bytes as `attachment`, sandboxed.
- Nothing to steal afterwards: after signing in and chatting, no token and no message text in
  localStorage, sessionStorage, cookies, IndexedDB, Cache Storage, a service worker, a request
  URL or the console.
- Sessions do not mix: a member signed in at / reaches /staff signed out; the staff sign-in
  refuses a member's password; the staff API refuses a member's token and the member API a
  staff token; a staff member signed in at /staff reaches / signed out.
- The documents as served: per-area CSP without unsafe-inline/unsafe-eval, index.html no-store,
  hashed assets immutable, traversal and odd names 404 without a traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pyotp
import pytest
import websockets
from playwright.sync_api import ConsoleMessage, Dialog, Page, Request, WebSocket, WebSocketRoute, expect
from websockets.asyncio.client import ClientConnection

from browser.conftest import NewPage
from browser.helpers import WEB_DIST, AsyncRunner, page_problems
from conftest import PASSWORD, TLS, Server, new_member
from keyhold.config import Settings
from keyhold.sdk import Client
from staff_helpers import STAFF_PASSWORD, add_all_staff

XSS_TEXT = "<img src=x onerror=alert(1)><script>alert(2)</script>"
JS_TEXTS = [
    "javascript:alert(1)",
    "[click me](javascript:alert(5))",
    '<a href="javascript:alert(6)">click me</a>',
]
GROUP_TITLE = '<img src=x onerror=alert(3)> "group" <b>bold</b>'
HTML_FILENAME = "<img src=x onerror=alert(4)>.html"
HTML_FILE = b"<!doctype html><title>evil</title><script>alert(7)</script><img src=x onerror=alert(8)>"
SVG_FILE = (
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(9)"><script>alert(10)</script>'
    b'<rect width="10" height="10"/></svg>'
)
# An uploader may claim any type: an SVG sent as image/png is still served, and previewed, as a
# raster image (an <img> runs no script), never as a document.
SVG_AS_PNG = "dot.svg"
HELLO = "hello from the victim's browser"
# Right-to-left override (U+202E): "invoice<RLO>fdp.exe" shows as "invoiceexe.pdf".
RLO = "\u202e"
SPOOFED_FILENAME = f"invoice{RLO}fdp.exe"
STAFF = "rex"
# Unicode's explicit directional formatting characters: embeddings, overrides, isolates, marks.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def spoofed(name: str) -> str:
    """How a name with one right-to-left override displays: what follows it, reversed."""
    head, _, tail = name.partition(RLO)
    return head + tail[::-1]


@dataclass
class Scene:
    attacker: Client
    victim: Client
    direct: int
    group: int
    html_attachment: str


@dataclass
class Watch:
    """What a page's context did: every request URL (and its Authorization header), every
    WebSocket URL, every console line, every dialog."""

    requests: list[tuple[str, str | None]] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.context.on("request", self._request)
        page.context.on("console", self._console)
        page.on("websocket", self._websocket)
        page.on("dialog", self._dialog)

    def _request(self, request: Request) -> None:
        self.requests.append((request.url, request.headers.get("authorization")))

    def _websocket(self, ws: WebSocket) -> None:
        self.websockets.append(ws.url)

    def _console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


@pytest.fixture(scope="module")
def scene(web_server: Server, aio: AsyncRunner) -> Iterator[Scene]:
    async def make() -> Scene:
        attacker, victim = await new_member(web_server), await new_member(web_server)
        direct = await attacker.start_conversation([victim.username])
        await attacker.send(direct.id, XSS_TEXT)
        for text in JS_TEXTS:
            await attacker.send(direct.id, text)
        html = await attacker.send_file(direct.id, HTML_FILE, HTML_FILENAME, "text/html", text="an html file")
        await attacker.send_file(direct.id, SVG_FILE, "evil.svg", "image/svg+xml", text="an svg file")
        await attacker.send_file(direct.id, SVG_FILE, SVG_AS_PNG, "image/png", text="an svg claiming png")
        await attacker.send_file(
            direct.id, b"MZ not really a program", SPOOFED_FILENAME, "application/pdf", text="the invoice"
        )
        group = await attacker.start_conversation([victim.username], title=GROUP_TITLE, kind="group")
        await attacker.send(group.id, XSS_TEXT)
        assert html.attachment is not None
        return Scene(attacker, victim, direct.id, group.id, html.attachment.id)

    made = aio.run(make())
    yield made
    aio.run(made.attacker.close())
    aio.run(made.victim.close())


@pytest.fixture(scope="module")
def staff_secret(web_server: Server) -> str:
    return add_all_staff(web_server, {STAFF: ("moderator", "us")})[STAFF]


# -- helpers -------------------------------------------------------------------------------


def log_in(page: Page, username: str, path: str) -> str:
    """Open `path` signed out, log in through the app's form (it lands on `path`); the token
    the sign-in answer carried."""
    page.goto(path)
    expect(page.get_by_role("heading", name="Log in", level=1)).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_response(
        lambda r: r.url.endswith("/api/v1/sessions") and r.request.method == "POST"
    ) as answer:
        page.get_by_role("button", name="Log in").click()
    assert answer.value.status == 201
    token: str = answer.value.json()["token"]
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))
    return token


def text_is(page: Page, text: str):  # a Locator, for `has=` (relative to its element)
    return page.locator(".msg-text").filter(has_text=re.compile(f"^{re.escape(text)}$"))


def bubbles(page: Page, text: str):  # a Locator
    """The messages on the page that say exactly `text`."""
    return page.locator(".msg-list").locator(text_is(page, text))


def message_with(page: Page, text: str):  # a Locator
    return page.locator(".msg-list .msg").filter(has=text_is(page, text))


def injected(page: Page) -> dict[str, Any]:
    """Anything in the document a hostile string could have made: scripts beyond the build's,
    elements with inline handlers, frames, objects, javascript: links and form actions."""
    return dict(
        page.evaluate(
            """() => ({
                scripts: [...document.scripts].map((s) => s.src || s.textContent.slice(0, 60))
                    .filter((src) => !/^https?:\\/\\/127\\.0\\.0\\.1:\\d+\\/assets\\/[\\w.-]+\\.js$/.test(src)),
                handlers: [...document.querySelectorAll("*")].flatMap((el) =>
                    [...el.attributes].filter((a) => /^on/i.test(a.name)).map((a) => `${el.tagName} ${a.name}`)),
                frames: document.querySelectorAll("iframe, frame, object, embed").length,
                jsUrls: [...document.querySelectorAll("[href], [src], [action], [formaction]")]
                    .flatMap((el) => ["href", "src", "action", "formaction"].map((n) => el.getAttribute(n)))
                    .filter((v) => v && /^\\s*javascript:/i.test(v)),
            })"""
        )
    )


CLEAN = {"scripts": [], "handlers": [], "frames": 0, "jsUrls": []}


def browser_storage(page: Page) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """async () => ({
                local: Object.fromEntries(Object.entries(localStorage)),
                session: Object.fromEntries(Object.entries(sessionStorage)),
                cookie: document.cookie,
                indexedDB: (await indexedDB.databases()).map((d) => d.name),
                caches: await caches.keys(),
                workers: (await navigator.serviceWorker.getRegistrations()).length,
            })"""
        )
    )


def totp(secret: str) -> str:
    return pyotp.TOTP(secret).at(dt.datetime.now())


# -- tests ---------------------------------------------------------------------------------


def test_hostile_text_renders_as_text(scene: Scene, new_page: NewPage) -> None:
    page = new_page()
    watch = Watch()
    watch.attach(page)
    log_in(page, scene.victim.username, f"/c/{scene.direct}")

    # The <img>/<script> message: its characters, on screen, and nothing made of them.
    expect(bubbles(page, XSS_TEXT)).to_have_count(1)
    # javascript: in three spellings: text, never a link (the app makes no link of message text).
    for text in JS_TEXTS:
        expect(bubbles(page, text)).to_have_count(1)
    expect(page.locator(".msg-list .msg-text a")).to_have_count(0)
    expect(page.locator(".msg-list img")).to_have_count(1)  # the one raster preview (dot.svg as png)

    # A file name of HTML: the name's characters; the file is no image, so no preview.
    html_message = message_with(page, "an html file")
    expect(html_message.locator(".attachment-name")).to_have_text(HTML_FILENAME)
    expect(html_message.locator("img")).to_have_count(0)

    # The group: its hostile title in the list, as the page's heading and in the document title.
    item = page.locator(".conv-item", has_text="group")
    expect(item.locator(".conv-name")).to_have_text(GROUP_TITLE)
    expect(item.locator(".conv-preview")).to_contain_text(XSS_TEXT)
    item.click()
    expect(page).to_have_url(re.compile(f"/c/{scene.group}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(GROUP_TITLE)
    expect(page).to_have_title(f"{GROUP_TITLE} · Keyhold")
    expect(bubbles(page, XSS_TEXT)).to_have_count(1)
    expect(page.locator(".msg-list img")).to_have_count(0)
    page.get_by_role("button", name="Members & settings").click()
    expect(page.locator("#manage-panel")).to_be_visible()

    assert injected(page) == CLEAN
    assert watch.dialogs == []
    assert page_problems(page) == []
    # The checker sees what it looks for (an inline handler, added here through DevTools).
    page.evaluate(
        "() => { const d = document.createElement('div'); d.setAttribute('onclick', 'x'); document.body.append(d); }"
    )
    assert injected(page)["handlers"] == ["DIV onclick"]


def test_hostile_files_are_downloads_never_documents(
    scene: Scene, web_server: Server, new_page: NewPage
) -> None:
    page = new_page()
    watch = Watch()
    watch.attach(page)
    path = f"/c/{scene.direct}"
    log_in(page, scene.victim.username, path)

    files = {
        "an html file": (HTML_FILENAME, HTML_FILE),
        "an svg file": ("evil.svg", SVG_FILE),
    }
    for caption, (filename, content) in files.items():
        message = message_with(page, caption)
        expect(message.locator(".attachment-name")).to_have_text(filename)
        expect(message.locator("img")).to_have_count(0)  # no preview of a document
        with page.expect_download() as download_info:
            message.get_by_role("button", name=re.compile("^Download")).click()
        download = download_info.value
        assert Path(download.path()).read_bytes() == content
        assert download.suggested_filename.endswith(Path(filename).suffix)
        # Saved, not opened: the app's page stays where it was, and no window opened.
        assert page.url.endswith(path)
        assert len(page.context.pages) == 1
    # The SVG that claimed to be a PNG: previewed as an image (which runs no script) from a blob:.
    preview = message_with(page, "an svg claiming png").locator("img.preview")
    expect(preview).to_have_attribute("src", re.compile(r"^blob:"))
    assert injected(page) == CLEAN
    assert watch.dialogs == []
    assert page_problems(page) == []

    # The API serves the bytes as a download, sandboxed, whatever the uploader claimed; a
    # navigation has no bearer token, so a link to it opens nothing of the member's.
    answer = httpx.get(
        f"{web_server.url}/api/v1/attachments/{scene.html_attachment}", verify=TLS,
        headers={"Authorization": f"Bearer {scene.victim.token}"},
        timeout=30,
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    opened = page.goto(f"/api/v1/attachments/{scene.html_attachment}")
    assert opened is not None and opened.status == 401
    assert watch.dialogs == []


def test_file_names_cannot_spoof_their_extension(scene: Scene, new_page: NewPage) -> None:
    """A name with a right-to-left override, "invoice<RLO>fdp.exe", reads "invoiceexe.pdf" where
    it is shown as is (an isolating element does not help: the override still reverses the
    name inside it). The app must not show a name's bidi controls, nor save a file with them."""
    page = new_page()
    path = f"/c/{scene.direct}"
    log_in(page, scene.victim.username, path)
    message = message_with(page, "the invoice")
    with page.expect_download() as download_info:
        message.get_by_role("button", name=re.compile("^Download")).click()
    saved = download_info.value.suggested_filename
    shown = {
        "name": message.locator(".attachment-name").inner_text(),
        "button": message.get_by_role("button", name=re.compile("^Download")).inner_text(),
    }
    assert not BIDI_CONTROLS.search(saved), f"saved as {saved!r}"
    assert not any(BIDI_CONTROLS.search(v) for v in shown.values()), (
        f"the file name is shown with its bidi controls, so it reads {spoofed(shown['name'])!r}: {shown!r}"
    )
    assert page_problems(page) == []


def test_nothing_to_steal_after_signing_in_and_chatting(
    scene: Scene, new_page: NewPage, aio: AsyncRunner
) -> None:
    page = new_page()
    watch = Watch()
    watch.attach(page)
    username = scene.victim.username
    token = log_in(page, username, f"/c/{scene.direct}")
    box = page.get_by_label("Message", exact=True)
    box.fill(HELLO)
    box.press("Enter")
    expect(page.locator(".msg-list .msg.mine:not(.pending)").filter(has=text_is(page, HELLO))).to_have_count(
        1
    )
    # A message that arrives live, over the WebSocket.
    live = "a live reply to steal"
    aio.run(scene.attacker.send(scene.direct, live))
    expect(bubbles(page, live)).to_have_count(1)

    stored = browser_storage(page)
    # One thing only, by design (e2ee/device-id.ts): this browser's device id for the member,
    # not a secret; no token, no message text, nothing in the session's storage or a cookie.
    assert list(stored["local"]) == [f"keyhold.device.{username}"], stored["local"]
    assert re.fullmatch(r"WEB[A-Z2-9]{8}", stored["local"][f"keyhold.device.{username}"])
    assert stored["session"] == {}
    assert stored["cookie"] == ""
    assert stored["indexedDB"] == []  # a standard chat opens no e2ee store
    assert stored["caches"] == [] and stored["workers"] == 0
    dump = json.dumps(stored)
    for secret in (token, HELLO, PASSWORD, live):
        assert secret not in dump

    # The token went in Authorization headers and the WebSocket's first frame only.
    assert any(auth == f"Bearer {token}" for _, auth in watch.requests)
    assert [url for url, _ in watch.requests if token in unquote(url)] == []
    assert [url for url in watch.websockets if token in unquote(url) or "token" in url] == []
    assert all(
        url.startswith(page.url.split("/c/")[0]) for url, _ in watch.requests if not url.startswith("blob:")
    )
    for line in watch.console:
        assert token not in line and HELLO not in line and XSS_TEXT not in line, line
    assert page_problems(page) == []


MOST_STREAMS = int(next(f.default for f in dataclasses.fields(Settings) if f.name == "max_streams_per_member"))


async def hold_streams(server: Server, token: str, count: int) -> list[ClientConnection]:
    """Up to `count` live streams of the token's member, those the server let open (a refused
    one is closed)."""
    url = "ws://" + server.url.removeprefix("http://") + "/api/v1/stream?since=latest"
    held = []
    for _ in range(count):
        ws = await websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"})
        if json.loads(await ws.recv())["type"] == "ready":
            held.append(ws)
        else:
            await ws.close()
    return held


def test_a_member_whose_streams_are_all_taken_is_told_so_and_connects_once_one_frees(
    web_server: Server, aio: AsyncRunner, new_page: NewPage
) -> None:
    """Someone holds every stream a member may have open (a stolen token, or many tabs): the
    member's page says why it is not connected, not just "offline", and connects by itself once
    one of them closes."""
    member = aio.run(new_member(web_server))
    taken = aio.run(hold_streams(web_server, member.token, MOST_STREAMS))
    try:
        assert len(taken) == MOST_STREAMS
        page = new_page()
        log_in(page, member.username, "/settings")
        banner = page.get_by_test_id("offline-banner")
        expect(banner).to_contain_text("too many of your tabs and devices are connected")
        aio.run(taken.pop().close())
        expect(banner).to_be_hidden(timeout=15_000)  # it retries every 5 s at most
    finally:
        for ws in taken:
            aio.run(ws.close())
        aio.run(member.close())


def test_a_tab_that_drops_and_finds_every_stream_taken_says_so(
    web_server: Server, aio: AsyncRunner, new_page: NewPage
) -> None:
    """The common way to meet the cap: a tab online, its connection drops, and by its retry the
    member's other tabs and devices hold every place. The banner goes from "Offline" to why,
    though the stream's status stays offline throughout."""
    member = aio.run(new_member(web_server))
    routes: list[WebSocketRoute] = []
    readies: list[str] = []

    def through(route: WebSocketRoute) -> None:
        server = route.connect_to_server()

        def to_page(message: str | bytes) -> None:
            if isinstance(message, str) and '"type":"ready"' in message:
                readies.append(message)
            route.send(message)

        server.on_message(to_page)
        routes.append(route)

    async def the_freed_place() -> list[ClientConnection]:
        async with asyncio.timeout(10):  # bounds liveness
            while not (got := await hold_streams(web_server, member.token, 1)):
                await asyncio.sleep(0.05)
        return got

    page = new_page()
    page.route_web_socket(re.compile(r".*/api/v1/stream$"), through)
    log_in(page, member.username, "/settings")
    banner = page.get_by_test_id("offline-banner")
    for _ in range(200):  # until the tab's stream is ready (bounds liveness: 20 s)
        if readies:
            break
        page.wait_for_timeout(100)
    assert readies, "the tab's stream never became ready"
    taken = aio.run(hold_streams(web_server, member.token, MOST_STREAMS - 1))  # every other place
    try:
        routes[-1].close(code=4000, reason="dropped")  # the tab's connection drops, not for good
        # The place the drop frees, once the server sees the drop. The tab cannot take it first:
        # its retry waits in this test's route until the next Playwright call.
        taken += aio.run(the_freed_place())
        expect(banner).to_contain_text("too many of your tabs and devices are connected")
        aio.run(taken.pop().close())
        expect(banner).to_be_hidden(timeout=15_000)
    finally:
        for ws in taken:
            aio.run(ws.close())
        aio.run(member.close())


def test_member_and_staff_sessions_never_mix(
    scene: Scene, web_server: Server, staff_secret: str, new_page: NewPage
) -> None:
    page = new_page()
    watch = Watch()
    watch.attach(page)
    member_token = log_in(page, scene.victim.username, f"/c/{scene.direct}")

    # The member signed in at / goes to /staff: the console's own sign-in, and no staff call
    # carries the member's token.
    page.goto("/staff")
    expect(page.get_by_role("heading", name="Keyhold staff sign-in")).to_be_visible()
    page.get_by_label("Username").fill(scene.victim.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Authenticator code").fill("000000")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Sign-in failed")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    staff_calls = [(url, auth) for url, auth in watch.requests if "/api/v1/staff" in url]
    assert staff_calls and all(auth is None for _, auth in staff_calls), staff_calls

    # The APIs: a member token is no staff token, and a staff token no member's.
    api = f"{web_server.url}/api/v1"
    assert (
        httpx.get(f"{api}/staff/me", verify=TLS, headers={"Authorization": f"Bearer {member_token}"}).status_code == 401
    )
    assert (
        httpx.get(f"{api}/staff/reports", verify=TLS, headers={"Authorization": f"Bearer {member_token}"}).status_code
        == 401
    )

    # A staff member signs in at /staff, then opens /: the member app is signed out.
    page.get_by_label("Username").fill(STAFF)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_label("Authenticator code").fill(totp(staff_secret))
    with page.expect_response(
        lambda r: r.url.endswith("/api/v1/staff/sessions") and r.request.method == "POST"
    ) as answer:
        page.get_by_role("button", name="Sign in").click()
    staff_token: str = answer.value.json()["token"]
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    for path in ("/account", "/conversations", f"/conversations/{scene.direct}/messages"):
        assert (
            httpx.get(f"{api}{path}", verify=TLS, headers={"Authorization": f"Bearer {staff_token}"}).status_code == 401
        ), path
    page.goto("/")
    expect(page.get_by_role("navigation", name="Account").get_by_role("link", name="Log in")).to_be_visible()
    # Every request of the context: the staff token only ever to the staff API, the member's
    # never there.
    for url, auth in watch.requests:
        staff_api = urlsplit(url).path.startswith("/api/v1/staff")
        if auth == f"Bearer {staff_token}":
            assert staff_api, url
        if auth == f"Bearer {member_token}":
            assert not staff_api, url
    stored = json.dumps(browser_storage(page))
    assert staff_token not in stored and member_token not in stored
    assert page_problems(page) == []


def test_documents_as_served(web_server: Server) -> None:
    def get(path: str) -> httpx.Response:
        return httpx.get(web_server.url + path, verify=TLS, timeout=10)

    for path, wasm in [
        ("/", True),
        ("/c/1", True),
        ("/settings", True),
        ("/staff", False),
        ("/staff/log", False),
        ("/transparency", False),
    ]:
        answer = get(path)
        assert answer.status_code == 200, path
        policy = answer.headers["content-security-policy"]
        directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ")}
        expected = ["'self'", "'wasm-unsafe-eval'"] if wasm else ["'self'"]
        assert directives["script-src"] == expected, (path, policy)
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, (path, policy)
        assert directives["connect-src"] == ["'self'"] and directives["object-src"] == ["'none'"]
        assert directives["frame-ancestors"] == ["'none'"] and directives["base-uri"] == ["'none'"]
        assert answer.headers["cache-control"] == "no-store", path
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in answer.text  # module scripts by src only

    index = (WEB_DIST / "index.html").read_text()
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', index)
    assert assets
    for asset in assets:
        answer = get(asset)
        assert (
            answer.status_code == 200
            and answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        )

    for path in [
        "/assets/..%2f..%2fpyproject.toml",
        "/%2e%2e/%2e%2e/pyproject.toml",
        "/assets/%2e%2e%2findex.html",
        "/.built",
        "/assets/nope-00000000.js",
        "/..%5c..%5cpyproject.toml",
        "/c/%00",
        "/no-such-file.png",
    ]:
        answer = get(path)
        # A control character is refused as bad input (422, as in every route), the rest are
        # files the app does not have (404).
        assert answer.status_code == (422 if "%00" in path else 404), (path, answer.status_code)
        assert answer.headers["content-type"].startswith("application/problem+json"), path
        assert "Traceback" not in answer.text and 'File "' not in answer.text, path
