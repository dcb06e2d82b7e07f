"""The web app's files as the server serves them (api/web.py), without a browser.

Against real servers on SQLite: serving the app reads files only, never the database, so the
backend makes no difference here. The build is a small one made by the test (an index.html, a
hashed script, a .wasm, a top-level file, a dotfile stamp, a symlink out of the directory), so
that the test does not depend on npm and covers file types the real build may not have yet.
Traversal attempts go over a raw socket: HTTP clients normalize `..` away before sending.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import TLS, Server, start_server, stop_server

PROBLEM_JSON = "application/problem+json"
INDEX = b'<!doctype html><html lang="en"><head><title>Keyhold test build</title></head><body></body></html>'
SCRIPT = b"console.log('hashed');\n"
WASM = b"\x00asm\x01\x00\x00\x00"
SECRET = b"outside the build directory"
MEMBER_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
STRICT_CSP = MEMBER_CSP.replace(" 'wasm-unsafe-eval'", "")


@dataclass
class Site:
    server: Server
    dist: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("web")
    dist = base / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_bytes(INDEX)
    (dist / "assets" / "index-AbC123xy.js").write_bytes(SCRIPT)
    (dist / "assets" / "index-AbC123xy.css").write_bytes(b"body{margin:0}\n")
    (dist / "assets" / "crypto_bg-Zz9.wasm").write_bytes(WASM)
    (dist / "robots.txt").write_bytes(b"User-agent: *\n")
    (dist / ".built").write_bytes(b"")
    (base / "secret.txt").write_bytes(SECRET)
    # A link inside the build to a file outside it: still outside once resolved.
    (dist / "assets" / "leak.txt").symlink_to(base / "secret.txt")
    srv = start_server(base / "kh", env={"KEYHOLD_WEB_DIR": str(dist)})
    yield Site(srv, dist)
    stop_server(srv)


@pytest.fixture(scope="module")
def unbuilt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Python-only install: the web dir exists but holds no build."""
    base = tmp_path_factory.mktemp("unbuilt")
    (base / "dist").mkdir()
    srv = start_server(base / "kh", env={"KEYHOLD_WEB_DIR": str(base / "dist")})
    yield srv
    stop_server(srv)


def get(server: Server, path: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, server.url + path, verify=TLS, timeout=10)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_get(server: Server, target: bytes) -> RawResponse:
    """One GET with the request target exactly as given (no normalization, no re-encoding)."""
    parts = urlsplit(server.url)
    assert parts.hostname and parts.port
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(lines[0].split()[1]), headers, body)


def assert_app_html(response: httpx.Response, csp: str = MEMBER_CSP) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == csp
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == INDEX


def assert_problem(response: httpx.Response | RawResponse, status: int = 404) -> None:
    if isinstance(response, httpx.Response):
        status_code, headers, body = response.status_code, response.headers, response.content
    else:
        status_code, headers, body = response.status, response.headers, response.body
    assert status_code == status, body
    assert headers["content-type"].startswith(PROBLEM_JSON), headers
    assert b'"status":%d' % status in body
    assert SECRET not in body and INDEX not in body


# -- the app's HTML ---------------------------------------------------------------------------


def test_root_serves_index_with_csp(site: Site) -> None:
    response = get(site.server, "/")
    assert_app_html(response)
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert response.headers["referrer-policy"] == "no-referrer"
    # One Cache-Control only: the security middleware adds no-store only where none was set.
    assert response.headers.get_list("cache-control") == ["no-store"]


@pytest.mark.parametrize(
    "path", ["/index.html", "/c/12", "/settings", "/requests", "/access", "/signup", "/login", "/apix", "//x"]
)
def test_member_paths_serve_index(site: Site, path: str) -> None:
    assert_app_html(get(site.server, path))


@pytest.mark.parametrize("path", ["/staff", "/staff/", "/staff/cases/7", "/transparency"])
def test_staff_and_public_pages_do_without_wasm(site: Site, path: str) -> None:
    """They never load the e2ee core, so their documents may not compile WebAssembly."""
    assert_app_html(get(site.server, path), STRICT_CSP)


def test_head(site: Site) -> None:
    response = get(site.server, "/c/3", method="HEAD")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-security-policy"] == MEMBER_CSP
    assert int(response.headers["content-length"]) == len(INDEX)
    asset = get(site.server, "/assets/index-AbC123xy.js", method="HEAD")
    assert asset.status_code == 200 and asset.content == b""
    assert int(asset.headers["content-length"]) == len(SCRIPT)


def test_other_methods_are_refused(site: Site) -> None:
    response = httpx.post(site.server.url + "/staff", verify=TLS, json={}, timeout=10)
    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


# -- assets -----------------------------------------------------------------------------------


def test_hashed_assets_are_immutable(site: Site) -> None:
    response = get(site.server, "/assets/index-AbC123xy.js")
    assert response.status_code == 200
    assert response.content == SCRIPT
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers.get_list("cache-control") == ["public, max-age=31536000, immutable"]
    assert response.headers["x-content-type-options"] == "nosniff"
    css = get(site.server, "/assets/index-AbC123xy.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"


def test_wasm_content_type(site: Site) -> None:
    response = get(site.server, "/assets/crypto_bg-Zz9.wasm")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/wasm"
    assert response.content == WASM


def test_top_level_files_are_served_but_revalidated(site: Site) -> None:
    response = get(site.server, "/robots.txt")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers.get_list("cache-control") == ["no-cache"]


@pytest.mark.parametrize(
    "path", ["/assets/nope.js", "/assets/", "/assets", "/assets/leak.txt", "/favicon.ico", "/x/y.png"]
)
def test_missing_files_answer_404_problem(site: Site, path: str) -> None:
    response = get(site.server, path)
    assert_problem(response)
    assert response.headers["cache-control"] == "no-store"


# -- traversal --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        b"/../secret.txt",
        b"/assets/../../secret.txt",
        b"/assets/../index.html",
        b"/%2e%2e/secret.txt",
        b"/%2E%2E/%2e%2e/etc/passwd",
        b"/assets/%2e%2e/%2e%2e/secret.txt",
        b"/assets/..%2f..%2fsecret.txt",
        b"/..%5csecret.txt",
        b"/assets/..\\..\\secret.txt",
        b"/assets%5c..%5c..%5csecret.txt",
        b"/index.html%00",
        b"/assets/index-AbC123xy.js%00.png",
        b"/%00",
        b"/./index.html",
        b"/.built",
        b"/assets/%2e/index-AbC123xy.js",
        b"/c/%0a",
    ],
)
def test_traversal_is_impossible(site: Site, target: bytes) -> None:
    response = raw_get(site.server, target)
    assert 400 <= response.status < 500, (target, response.status)
    if response.status == 404:
        assert_problem(response)
    assert SECRET not in response.body


def test_symlink_out_of_the_build_is_not_followed(site: Site) -> None:
    response = raw_get(site.server, b"/assets/leak.txt")
    assert_problem(response)


def test_odd_names_are_no_server_error(site: Site) -> None:
    """Names the file system refuses (too long) or cannot decode are just missing files."""
    assert_problem(raw_get(site.server, b"/assets/" + b"a" * 5000 + b".js"))
    assert raw_get(site.server, b"/c/" + b"a" * 5000).status == 200
    assert_problem(raw_get(site.server, b"/assets/%ff%fe.js"))


def test_double_encoding_is_just_a_name(site: Site) -> None:
    """`%252e%252e` decodes once, to the name `%2e%2e`: no file, so the app (no traversal)."""
    response = raw_get(site.server, b"/%252e%252e/secret")
    assert response.status == 200 and response.body == INDEX
    assert raw_get(site.server, b"/assets/%252e%252e/secret.txt").status == 404


# -- the API keeps its own answers ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api", "/api/", "/api/v1/nope", "/api/v1/assets/x.js", "/api/v2/x"])
def test_unknown_api_paths_stay_problem_json(site: Site, path: str) -> None:
    assert_problem(get(site.server, path))


def test_api_wrong_method_is_still_405(site: Site) -> None:
    assert_problem(httpx.delete(site.server.url + "/api/v1/accounts", timeout=10), 405)


def test_api_and_docs_still_work(site: Site) -> None:
    health = get(site.server, "/api/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.headers["cache-control"] == "no-store"
    docs = get(site.server, "/api/v1/docs")
    assert docs.status_code == 200
    policy = docs.headers["content-security-policy"]
    # Swagger UI's own policy: this origin's scripts and styles, none inline.
    assert "script-src 'self';" in policy and "style-src 'self';" in policy and "unsafe" not in policy
    assert "<script>" not in docs.text and "<script src=" in docs.text
    init = get(site.server, "/api/v1/docs-init.js")
    assert init.status_code == 200 and init.headers["content-type"].startswith("text/javascript")
    assert init.headers["x-content-type-options"] == "nosniff"
    assert '"url": "/api/v1/openapi.json"' in init.text and '"validatorUrl": null' in init.text
    assert get(site.server, "/api/v1/openapi.json").status_code == 200
    # The app's routes are no part of the API's description.
    assert not any(
        not p.startswith("/api/") for p in get(site.server, "/api/v1/openapi.json").json()["paths"]
    )


def test_the_html_transparency_report_runs_nothing(site: Site) -> None:
    # A page on the app's origin that the transparency page links to: no script, no frames.
    page = get(site.server, "/api/v1/transparency/report?period=2025-Q1&format=html")
    assert page.status_code == 200 and "<html" in page.text
    policy = page.headers["content-security-policy"]
    assert policy.startswith("default-src 'none'") and "frame-ancestors 'none'" in policy
    assert "script-src" not in policy


# -- no build ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/staff", "/c/5"])
def test_without_a_build_root_says_how_to_build(unbuilt: Server, path: str) -> None:
    response = get(unbuilt, path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == STRICT_CSP
    assert response.headers["cache-control"] == "no-store"
    page = response.text
    assert "make run" in page and "npm ci" in page and "npm run build" in page
    assert 'href="/api/v1/docs"' in page
    assert "<script" not in page.lower() and "style=" not in page.lower()


def test_without_a_build_the_api_works(unbuilt: Server) -> None:
    assert get(unbuilt, "/api/v1/health").status_code == 200
    assert_problem(get(unbuilt, "/assets/index-AbC123xy.js"))
    assert_problem(get(unbuilt, "/api/v1/nope"))
