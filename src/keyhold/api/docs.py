"""Self-hosted API docs: Swagger UI from the `fastapi-offline` package's assets, served by Keyhold.

The page loads nothing from a third party: the script, stylesheet and icon come from this server,
Swagger UI's online validator is switched off, and a Content-Security-Policy tells the browser to
fetch from this origin only (an offline install shows the docs; a visitor's browser tells no CDN).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

# Swagger UI's page is one inline script; everything else is this origin's (data: for its icons).
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def install_api_docs(app: FastAPI, prefix: str) -> None:
    """Serve Swagger UI at `{prefix}/docs` and its assets under `{prefix}/docs-assets`."""
    assets = f"{prefix}/docs-assets"
    directory = str(files("fastapi_offline") / "static")
    app.mount(assets, StaticFiles(directory=directory), name="docs-assets")
    openapi_url = app.openapi_url or f"{prefix}/openapi.json"

    @app.get(f"{prefix}/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["content-security-policy"] = DOCS_POLICY
        return page
