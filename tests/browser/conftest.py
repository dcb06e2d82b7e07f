"""Fixtures of the browser tests: a Keyhold server that serves the built app, Chromium, pages.

- `web_server` (module): a real server on SQLite (tests/conftest.py's `start_server`) serving
  web/dist; a module's `SERVER_POLICY` is its safety policy, as for `server`.
- `chromium` (session, one per xdist worker): Debian's /usr/bin/chromium through Playwright's
  sync API (Playwright's own browser builds are never downloaded).
- `new_page` (function): `new_page(viewport=(1280, 800), base_url=None, **context_options)`
  gives a page in a fresh browser context, closed after the test, recording its problems (see
  helpers.page_problems). `base_url` defaults to web_server's URL when the test uses web_server.
- `aio` (session): an event loop in another thread for the Python SDK (helpers.AsyncRunner).

Sync Playwright and pytest-asyncio in one process: between its calls Playwright leaves its own
event loop marked as the thread's running loop (playwright/_impl/_greenlets.py), and a running
loop makes every later asyncio test of the worker fail ("Cannot run the event loop while another
loop is running"). Chromium lives for the whole session, and with `--dist loadfile` a worker
runs asyncio test files after browser ones, so the hooks below mark Playwright's loop as running
only while a browser test (or its fixtures) runs, and clear the mark after its teardown.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from browser.helpers import CHROMIUM, CHROMIUM_ARGS, WEB_DIST, AsyncRunner, attach_log, detach_log
from conftest import REQUESTS_OFF, Server, start_server, stop_server

NewPage = Callable[..., Page]
# Playwright's loop, while Playwright runs in this worker.
_playwright_loop: asyncio.AbstractEventLoop | None = None


def _mark_playwright_loop() -> None:
    if _playwright_loop is not None and not _playwright_loop.is_closed():
        asyncio.events._set_running_loop(_playwright_loop)


def _clear_running_loop() -> None:
    asyncio.events._set_running_loop(None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    _mark_playwright_loop()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    _mark_playwright_loop()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    _mark_playwright_loop()
    try:
        return (yield)
    finally:
        _clear_running_loop()


@pytest.fixture(scope="module")
def web_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    index = WEB_DIST / "index.html"
    if not index.is_file():
        pytest.fail(
            f"{index} is missing: build the app first (`make web`, which `make test` runs, or "
            "`cd web && npm ci && npm run build`)",
            pytrace=False,
        )
    policy = getattr(request.module, "SERVER_POLICY", REQUESTS_OFF)
    srv = start_server(
        tmp_path_factory.mktemp("web") / "kh", "sqlite", env={"KEYHOLD_WEB_DIR": str(WEB_DIST)}, policy=policy
    )
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    global _playwright_loop
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/browser-deps.sh (make test does)", pytrace=False)
    playwright: Playwright = sync_playwright().start()
    _playwright_loop = asyncio.events._get_running_loop()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    except BaseException:
        playwright.stop()
        _playwright_loop = None
        raise
    yield browser
    # The session may end on a test of another directory, where the hooks above do not run.
    _mark_playwright_loop()
    try:
        browser.close()
    finally:
        playwright.stop()  # leaves no running loop behind
        _playwright_loop = None
        _clear_running_loop()


@pytest.fixture
def new_page(chromium: Browser, request: pytest.FixtureRequest) -> Iterator[NewPage]:
    contexts = []

    def make(
        viewport: tuple[int, int] = (1280, 800), base_url: str | None = None, **context_options: Any
    ) -> Page:
        if base_url is None and "web_server" in request.fixturenames:
            base_url = request.getfixturevalue("web_server").url
        if base_url is not None:
            context_options["base_url"] = base_url
        width, height = viewport
        context = chromium.new_context(viewport={"width": width, "height": height}, **context_options)
        contexts.append(context)
        # Shorter than Playwright's 30 s: a missing element fails the test soon, and the
        # slowest thing a page does here (compiling the e2ee wasm) takes a few seconds.
        context.set_default_timeout(20_000)
        attach_log(context)
        return context.new_page()

    yield make
    for context in contexts:
        try:
            context.close()
        finally:
            detach_log(context)


@pytest.fixture(scope="session")
def aio() -> Iterator[AsyncRunner]:
    runner = AsyncRunner()
    yield runner
    runner.close()
