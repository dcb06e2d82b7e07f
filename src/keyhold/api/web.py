"""The web app: the built single-page app (web/dist) served by Keyhold itself, at `/`.

Every GET outside `/api` that names no file of the build answers `index.html`, and the app picks
its screen from the path (`/`, `/c/<id>`, `/settings`, `/staff/...`, `/transparency`...). Files
under `/assets/` carry a content hash in their names, so they are cached for a year; a name the
build does not have answers 404 problem+json there (and so does a missing `/x.png` anywhere),
never the app's HTML. `index.html` is never cached: a rebuild is seen on the next load.

Without a build (a Python-only install) every app path answers a short page that says the API
is running and how to build the app; the API is unaffected either way.

The path is never joined to the directory unchecked: segments `..`, `.` and dotfiles, NUL and
other control characters, and backslashes are refused (404) before any file system call, and what
remains is resolved (symlinks included) and must still lie inside the build directory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio
from fastapi import APIRouter
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import FileResponse, HTMLResponse, Response

from keyhold.api.schemas import Text
from keyhold.config import Settings
from keyhold.core.errors import Problem

ASSETS = "assets"
IMMUTABLE = "public, max-age=31536000, immutable"
# The app's documents. No inline script or style anywhere: Vite emits module scripts and
# stylesheets as files; img-src allows blob: and data: for attachment previews and QR codes.
_POLICY = (
    "default-src 'self'; script-src 'self'{wasm}; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# 'wasm-unsafe-eval' lets a page compile WebAssembly (and nothing else: eval and new Function
# stay refused). The e2ee crypto core (matrix-sdk-crypto-wasm) is compiled by a chunk that runs
# in the member app's own document, not in a worker with a policy of its own, so the member
# documents must carry it: a member opens an e2ee conversation without a page load. The staff
# console and the public transparency page never load that chunk, and main.tsx chooses the area
# once per page load (going from one area to another loads a page), so their documents go
# without it.
MEMBER_POLICY = _POLICY.format(wasm=" 'wasm-unsafe-eval'")
STRICT_POLICY = _POLICY.format(wasm="")

# Content types by extension: the ones a Vite build emits, spelled out rather than taken from
# the host's mime.types (which may lack .wasm or .mjs, or call .js application/javascript).
# WebAssembly.instantiateStreaming insists on application/wasm.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".txt": "text/plain; charset=utf-8",
}
# Unknown extensions are served as bytes, and nosniff (SecurityHeaders) keeps browsers from
# guessing otherwise.
DEFAULT_TYPE = "application/octet-stream"

NO_BUILD_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Keyhold</title>
</head>
<body>
<main>
<h1>Keyhold is running</h1>
<p>The API answers at <a href="/api/v1/docs">/api/v1/docs</a>, but the web app has not been built
on this server.</p>
<p>To build it, run <code>make run</code> in a checkout of Keyhold (it builds the app when it is
missing or stale, then starts the server), or build it by hand with
<code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code> (Node 20 and npm) and reload this
page. A build kept elsewhere is served when the <code>KEYHOLD_WEB_DIR</code> setting names its
directory.</p>
</main>
</body>
</html>
"""


class WebPathConvertor(Convertor[str]):
    """Any path that is not the API's: `/api` and everything under it never reach the app, so
    unknown API paths keep their 404 and wrong methods on API paths their 405."""

    # [\s\S], not `.`: a decoded %0a must reach the handler (and its 404), not end the match
    # early, where `$` would accept it as a trailing newline.
    regex = r"(?!api(?:/|$))[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("webpath", WebPathConvertor())


def _not_found() -> Problem:
    return Problem(404, "not-found", "Not found", "no such file in the web app")


def _safe_parts(path: str) -> list[str] | None:
    """The path's segments, or None when it could name something outside the build (or a
    hidden file): checked on the decoded path, so %2e%2e is caught here too. Control characters
    (%00 included) never get here: the path is `Text`, refused with a 422 like any input."""
    if "\\" in path:
        return None
    parts = [p for p in path.split("/") if p]
    if any(p.startswith(".") for p in parts):  # `.`, `..`, and dotfiles such as the .built stamp
        return None
    return parts


def _find_file(root: Path, parts: list[str]) -> tuple[Path, os.stat_result] | None:
    """The regular file `parts` names under `root` and its stat, if it exists and, resolved
    (symlinks followed), still lies inside `root`. Blocking: run it in a thread."""
    try:
        base = root.resolve()
        candidate = base.joinpath(*parts).resolve()
        if not candidate.is_relative_to(base):
            return None
        st = candidate.stat()
    except (OSError, ValueError):  # missing, not a directory, name too long...
        return None
    return (candidate, st) if stat.S_ISREG(st.st_mode) else None


def _looks_like_file(name: str) -> bool:
    return Path(name).suffix.lower() in CONTENT_TYPES


def _content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), DEFAULT_TYPE)


def _policy_for(parts: list[str]) -> str:
    if parts[:1] == ["staff"] or parts == ["transparency"]:
        return STRICT_POLICY
    return MEMBER_POLICY


def _html_headers(policy: str) -> dict[str, str]:
    return {
        "content-security-policy": policy,
        "cache-control": "no-store",
        # The app opens no cross-origin windows and is never embedded (frame-ancestors too).
        "cross-origin-opener-policy": "same-origin",
    }


def web_router(settings: Settings) -> APIRouter:
    """The app's routes; include it after every API router (it answers any other GET)."""
    root = settings.effective_web_dir
    router = APIRouter(include_in_schema=False)

    async def serve_file(path: Path, st: os.stat_result, cache: str) -> Response:
        return FileResponse(
            path,
            stat_result=st,
            media_type=_content_type(path),
            headers={"cache-control": cache, "cross-origin-resource-policy": "same-origin"},
        )

    async def index_page(policy: str) -> Response:
        index = root / "index.html"
        try:
            body = await anyio.Path(index).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            # A Python-only install: the API works, the app is not built. No script on this page.
            return HTMLResponse(NO_BUILD_PAGE, headers=_html_headers(STRICT_POLICY))
        return Response(body, media_type="text/html; charset=utf-8", headers=_html_headers(policy))

    @router.api_route("/{path:webpath}", methods=["GET", "HEAD"])
    async def app_path(path: Text) -> Response:
        parts = _safe_parts(path)
        if parts is None:
            raise _not_found()
        is_asset = parts[:1] == [ASSETS]
        if parts and parts != ["index.html"]:
            # Assets, and the files of web/public copied to the build's top (favicon, robots.txt).
            found = await anyio.to_thread.run_sync(_find_file, root, parts)
            if found is not None:
                # Only hashed names are immutable; top-level files keep their names across builds.
                return await serve_file(*found, IMMUTABLE if is_asset else "no-cache")
            # A missing asset, or a missing file by its extension (/favicon.ico): the build has
            # no such file, and answering the app's HTML would hide the mistake. App routes
            # (`/c/12`, `/staff/cases`) have no extension.
            if is_asset or _looks_like_file(parts[-1]):
                raise _not_found()
        return await index_page(_policy_for(parts))

    return router
