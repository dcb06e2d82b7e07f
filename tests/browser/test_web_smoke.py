"""The app's pages load in Chromium from the server itself, under the strict CSP, cleanly.

Each page: no console error, no uncaught exception, no CSP violation, no request to another
host, no serious or critical axe-core finding, at phone and desktop widths. A same-origin
WebSocket to /api/v1/stream opens under `connect-src 'self'`, and the member documents may
compile WebAssembly while the staff console's and the transparency page's may not. The last
tests check the checkers: a violation, a foreign request and an axe finding are all caught.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page

from browser.conftest import NewPage
from browser.helpers import WEB_DIST, AsyncRunner, check_axe, page_log, page_problems, wait_for_problem
from conftest import Server, new_member

PAGES = ["/", "/staff", "/transparency"]
VIEWPORTS = {"phone": (375, 812), "desktop": (1280, 800)}
# The smallest valid WebAssembly module: the magic number and version 1.
EMPTY_WASM = [0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00]


def open_app(
    new_page: NewPage, path: str, viewport: tuple[int, int] = (1280, 800)
) -> tuple[Page, dict[str, str]]:
    page = new_page(viewport=viewport)
    response = page.goto(path, wait_until="load")
    assert response is not None and response.status == 200, path
    # The app has rendered something into its root (main.tsx mounts every area there).
    page.wait_for_function("() => document.getElementById('app')?.childElementCount > 0")
    page.wait_for_load_state("networkidle")
    return page, response.headers


@pytest.mark.parametrize("viewport", VIEWPORTS.values(), ids=VIEWPORTS.keys())
@pytest.mark.parametrize("path", PAGES)
def test_page_loads_clean(
    web_server: Server, new_page: NewPage, path: str, viewport: tuple[int, int]
) -> None:
    page, headers = open_app(new_page, path, viewport)
    assert "connect-src 'self'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert page_problems(page) == []
    assert check_axe(page) == []
    # Running axe is no problem of the page either (it is evaluated outside the page's CSP).
    assert page_problems(page) == []


@pytest.mark.parametrize("viewport", VIEWPORTS.values(), ids=VIEWPORTS.keys())
def test_api_docs_render_without_inline_script(
    web_server: Server, new_page: NewPage, viewport: tuple[int, int]
) -> None:
    """Swagger UI starts from a script of this origin: no inline script or style is allowed or
    needed, and using the page (an operation opened, its form shown) breaks no rule."""
    page = new_page(viewport=viewport)
    response = page.goto("/api/v1/docs", wait_until="load")
    assert response is not None and response.status == 200
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    # The operations of the OpenAPI document are listed: the start-up script ran.
    page.locator(".opblock").first.wait_for()
    assert page.locator(".opblock").count() > 50
    # Opening an operation and its "Try it out" form renders more (styles, schemas, inputs).
    page.locator(".opblock-summary").first.click()
    page.get_by_role("button", name="Try it out").first.click()
    page.locator(".opblock .execute").first.wait_for()
    page.wait_for_load_state("networkidle")
    assert page_problems(page) == []
    # An inline script is refused by the page's policy (and reported as a violation).
    page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1'; document.body.append(s); }")
    assert page.evaluate("() => window.ran") is None
    assert wait_for_problem(page, r"script-src")
    # So is an inline style: the clean run above would have shown one of Swagger UI's.
    page.evaluate("() => document.body.insertAdjacentHTML('beforeend', '<p style=\"color: red\">x</p>')")
    assert wait_for_problem(page, r"style-src")


def test_websocket_same_origin_under_csp(web_server: Server, new_page: NewPage, aio: AsyncRunner) -> None:
    """Chromium counts a same-origin ws:// as 'self' for connect-src (CSP Level 3)."""
    member = aio.run(new_member(web_server))
    try:
        page, headers = open_app(new_page, "/")
        assert "connect-src 'self'" in headers["content-security-policy"]
        ready: dict[str, Any] = page.evaluate(
            """(token) => new Promise((resolve, reject) => {
                const ws = new WebSocket(`ws://${location.host}/api/v1/stream?since=latest`);
                const timer = setTimeout(() => reject(new Error("no ready frame in 10 s")), 10000);
                ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token }));
                ws.onerror = () => reject(new Error("the WebSocket failed"));
                ws.onmessage = (event) => {
                    const frame = JSON.parse(event.data);
                    if (frame.type === "ready") { clearTimeout(timer); ws.close(); resolve(frame); }
                };
            })""",
            member.token,
        )
        assert ready["type"] == "ready" and isinstance(ready["seq"], int)
        assert page_problems(page) == []
    finally:
        aio.run(member.close())


def compile_wasm(page: Page) -> str:
    return str(
        page.evaluate(
            """async (bytes) => {
                try { await WebAssembly.compile(new Uint8Array(bytes)); return "compiled"; }
                catch (e) { return e.name; }
            }""",
            EMPTY_WASM,
        )
    )


def test_member_documents_may_compile_wasm(web_server: Server, new_page: NewPage) -> None:
    page, headers = open_app(new_page, "/")
    assert "'wasm-unsafe-eval'" in headers["content-security-policy"]
    assert compile_wasm(page) == "compiled"
    assert page_problems(page) == []


@pytest.mark.parametrize("path", ["/staff", "/transparency"])
def test_other_documents_may_not(web_server: Server, new_page: NewPage, path: str) -> None:
    page, headers = open_app(new_page, path)
    assert "wasm-unsafe-eval" not in headers["content-security-policy"]
    assert compile_wasm(page) == "CompileError"
    assert wait_for_problem(page, "CSP violation: script-src blocked wasm-eval")
    assert page_problems(page, allow=["CSP violation: script-src blocked wasm-eval", "WebAssembly"]) == []
    assert [(v["directive"], v["blocked"]) for v in page_log(page).csp_violations] == [
        ("script-src", "wasm-eval")
    ]


# -- the checkers catch what they are there for ------------------------------------------------


def test_problems_are_caught(web_server: Server, new_page: NewPage) -> None:
    page, _ = open_app(new_page, "/")
    assert page_problems(page) == []
    # An inline script: refused by the CSP, and reported.
    page.evaluate(
        """() => { const s = document.createElement("script"); s.textContent = "window.x = 1";
                   document.head.append(s); }"""
    )
    # (Waited for before leaving the page: the report would be lost with the document.)
    assert wait_for_problem(page, r"^CSP violation: script-src-elem blocked inline")
    # A request to another host: a navigation is not subject to connect-src, so it is made.
    with pytest.raises(Exception, match="ERR_"):
        page.goto("http://localhost:9/elsewhere", timeout=5000)
    assert wait_for_problem(page, r"^request to another host: http://localhost:9/elsewhere$")
    assert page_problems(page, allow=["CSP violation", "another host", "inline script violates"]) == []


def test_axe_finds_violations(web_server: Server, new_page: NewPage) -> None:
    page, _ = open_app(new_page, "/")
    page.evaluate(
        """() => { const img = document.createElement("img");
                   img.src = "data:image/gif;base64,R0lGODlhAQABAAAAACwAAAAAAQABAAA=";
                   document.body.append(img); }"""
    )
    found = check_axe(page)
    assert [v["id"] for v in found] == ["image-alt"], found
    assert found[0]["impact"] == "critical" and found[0]["nodes"]
    assert page_problems(page) == []


def test_built_wasm_compiles_in_member_documents(web_server: Server, new_page: NewPage) -> None:
    """The e2ee core as built: served as application/wasm (compileStreaming insists) and
    allowed by the member documents' policy."""
    built = sorted((WEB_DIST / "assets").glob("*.wasm"))
    if not built:
        pytest.skip("this build has no .wasm")
    page, _ = open_app(new_page, "/")
    outcome = page.evaluate(
        """async (url) => {
            try { await WebAssembly.compileStreaming(fetch(url)); return "compiled"; }
            catch (e) { return `${e.name}: ${e.message}`; }
        }""",
        f"/assets/{built[0].name}",
    )
    assert outcome == "compiled"
    assert page_problems(page) == []
