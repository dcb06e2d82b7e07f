"""What browser tests share besides fixtures: the problems a page ran into, axe-core, screenshots,
and a background event loop for the Python SDK.

- `page_problems(page)`: console errors, uncaught exceptions, CSP violations, requests to any
  host but 127.0.0.1 and 5xx answers, seen by every page of the page's context since it was
  made, as sentences: `assert page_problems(page) == []` prints them when it fails.
- `wait_for_problem(page, pattern)`: the problems matching a regex, once the first has arrived.
- `check_axe(page)`: axe-core's serious and critical violations on the page as it is now.
- `screenshot(page, name)`: build/screenshots/<name>.png; docs/screenshots/ under
  `make screenshots` (`KEYHOLD_SCREENSHOTS=docs`).
- `AsyncRunner` (fixture `aio`): sync Playwright keeps its event loop marked as running in the
  test's thread, so a browser test cannot be `async def` nor call `asyncio.run`; SDK clients run
  on this loop in a thread of its own instead: `member = aio.run(new_member(web_server))`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Request, Response, WebError, WebSocket
from playwright.sync_api import Error as PlaywrightError

REPO = Path(__file__).resolve().parents[2]
WEB_DIST = REPO / "web" / "dist"
AXE_JS = REPO / "web" / "node_modules" / "axe-core" / "axe.min.js"
# The screenshots in docs/ are refreshed on purpose (`make screenshots`), not by every run: the
# screens show generated names and times, so a run that wrote them there left the tree dirty.
SCREENSHOTS = REPO / ("docs" if os.environ.get("KEYHOLD_SCREENSHOTS") == "docs" else "build") / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
LOCAL_HOSTS = frozenset({"127.0.0.1"})
# Console lines Chromium writes for every 4xx answer to a fetch: the API's refusals (401 when
# signed out, 404 for a gone conversation...) are answers the app handles, not errors of the page.
_API_4XX = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d\b")
# Set by the page's init script (new_page in conftest.py): the binding it reports CSP violations to.
CSP_BINDING = "__keyholdTestCspViolation"
CSP_LISTENER = f"""
document.addEventListener("securitypolicyviolation", (e) => {{
  window.{CSP_BINDING}({{
    directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber,
    sample: e.sample,
  }});
}});
"""
T = TypeVar("T")


@dataclass
class PageLog:
    """Everything that went wrong in one browser context (all its pages)."""

    problems: list[str] = field(default_factory=list)
    # Requests whose host is not the server's, whatever happened to them.
    foreign_requests: list[str] = field(default_factory=list)
    csp_violations: list[dict[str, Any]] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "")
        path = urlsplit(where).path
        if _API_4XX.match(message.text) and (path.startswith("/api/") or path == "/favicon.ico"):
            # /favicon.ico: Chromium asks for it by itself when a page declares no icon.
            return
        self.problems.append(f"console error: {message.text} (at {where or 'unknown'})")

    def on_web_error(self, error: WebError) -> None:
        self.problems.append(f"uncaught exception: {error.error}")

    def on_request(self, request: Request) -> None:
        self._check_url(request.url, "request")

    def on_websocket(self, ws: WebSocket) -> None:
        self._check_url(ws.url, "websocket")

    def on_response(self, response: Response) -> None:
        if response.status >= 500:
            self.problems.append(
                f"server error: {response.status} for {response.request.method} {response.url}"
            )

    def on_csp_violation(self, _source: Any, violation: dict[str, Any]) -> None:
        self.csp_violations.append(violation)
        self.problems.append(
            f"CSP violation: {violation.get('directive')} blocked {violation.get('blocked') or 'inline'}"
            f" (in {violation.get('source') or 'the page'}:{violation.get('line')}; {violation.get('sample')!r})"
        )

    def _check_url(self, url: str, kind: str) -> None:
        parts = urlsplit(url)
        # data: and blob: URLs never leave the browser.
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOCAL_HOSTS:
            self.foreign_requests.append(url)
            self.problems.append(f"{kind} to another host: {url}")


_logs: dict[int, PageLog] = {}


def attach_log(context: BrowserContext) -> PageLog:
    """Record what goes wrong in `context`; call before it opens any page."""
    log = PageLog()
    _logs[id(context)] = log
    context.on("console", log.on_console)
    context.on("weberror", log.on_web_error)
    context.on("request", log.on_request)
    context.on("response", log.on_response)
    context.on("page", lambda page: page.on("websocket", log.on_websocket))
    # The listener is added by DevTools before any script of the page runs, so the page's own
    # CSP does not apply to it; the binding is DevTools' too (no script tag, no eval).
    context.expose_binding(CSP_BINDING, log.on_csp_violation)
    context.add_init_script(CSP_LISTENER)
    return log


def detach_log(context: BrowserContext) -> None:
    _logs.pop(id(context), None)


def page_log(page: Page) -> PageLog:
    try:
        return _logs[id(page.context)]
    except KeyError:
        raise AssertionError("this page was not made by the new_page fixture: nothing was recorded") from None


def page_problems(page: Page, allow: Iterable[str] = ()) -> list[str]:
    """The problems of the page's context so far, less those matching a regex of `allow`
    (for a test that provokes one on purpose)."""
    patterns = [re.compile(a) for a in allow]
    if not page.is_closed():
        # Violation events are dispatched as tasks of the page, and reach the binding after the
        # action that caused them: let the page run its pending tasks first.
        with contextlib.suppress(PlaywrightError):  # navigating, or closing
            page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 50))")
    return [p for p in page_log(page).problems if not any(r.search(p) for r in patterns)]


def wait_for_problem(page: Page, pattern: str, timeout: float = 5.0) -> list[str]:
    """The problems matching regex `pattern`, waiting for the first up to `timeout` seconds:
    for a test that provokes one on purpose (reports arrive a moment after their cause)."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        found = [p for p in page_log(page).problems if regex.search(p)]
        if found or time.monotonic() > deadline:
            return found
        page.wait_for_timeout(50)  # lets Playwright deliver what the page reported meanwhile


def check_axe(page: Page, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """axe-core's violations of impact serious or critical on the page now, each as
    {id, impact, help, nodes: [css selector, ...]}; `exclude` names CSS selectors to leave out.

    axe is evaluated through DevTools, which the page's CSP does not govern (a <script> tag
    would be refused, as it should be)."""
    if not AXE_JS.exists():
        raise AssertionError(f"{AXE_JS} is missing: run `cd web && npm ci` (make test does)")
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_JS.read_text())
    result: dict[str, Any] = page.evaluate(
        """async (exclude) => {
            const context = exclude.length ? { exclude: exclude.map((s) => [s]) } : document;
            return await window.axe.run(context, { resultTypes: ["violations"] });
        }""",
        list(exclude),
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [
                ", ".join(n["target"]) if isinstance(n["target"], list) else n["target"] for n in v["nodes"]
            ],
        }
        for v in result["violations"]
        if v.get("impact") in ("serious", "critical")
    ]


_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,79}")


def screenshot(page: Page, name: str, full_page: bool = True) -> Path:
    """`SCREENSHOTS`/<name>.png of the page now (lowercase name, digits, - and _). The file is
    only rewritten when the image differs, so an unchanged screen leaves git clean."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"screenshot name {name!r}: use lowercase letters, digits, - and _")
    png = page.screenshot(full_page=full_page, animations="disabled", caret="hide")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if not path.exists() or path.read_bytes() != png:
        path.write_bytes(png)
    return path


class AsyncRunner:
    """An event loop in a thread of its own, for async code (the SDK) beside sync Playwright.
    Objects made on it (clients, streams) must be used on it too: always go through `run`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="browser-tests-aio", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_rest(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()
