"""Self-hosted API docs: Swagger UI from the `fastapi-offline` package's assets, served by Keyhold.

The page loads nothing from a third party: the script, stylesheet and icon come from this server,
Swagger UI's online validator is switched off, and a Content-Security-Policy tells the browser to
fetch from this origin only (an offline install shows the docs; a visitor's browser tells no CDN).

No script on the page is inline: Swagger UI is started by a script of this origin
(`docs-init.js`), so the policy allows no `'unsafe-inline'`, and a script or style injected into
the page (say, through a description in the OpenAPI document) would not apply.
"""

from __future__ import annotations

import json
from html import escape
from importlib.resources import files

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response

# Swagger UI sets its styles through the DOM, which style-src does not govern: no inline style
# is needed either (tests/browser/test_web_smoke.py opens an operation's form under it).
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SWAGGER_SETTINGS = {
    "dom_id": "#swagger-ui",
    "layout": "BaseLayout",
    "deepLinking": True,
    "showExtensions": True,
    "showCommonExtensions": True,
    "validatorUrl": None,  # Swagger UI's online validator would send the document to swagger.io
}


def docs_page(title: str, assets: str, script_url: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="{escape(assets)}/swagger-ui.css">
<link rel="icon" href="{escape(assets)}/favicon.png">
<title>{escape(title)}</title>
</head>
<body>
<div id="swagger-ui"></div>
<script src="{escape(assets)}/swagger-ui-bundle.js"></script>
<script src="{escape(script_url)}"></script>
</body>
</html>
"""


def init_script(openapi_url: str) -> str:
    settings = {"url": openapi_url, **SWAGGER_SETTINGS}
    return (
        '"use strict";\n'
        f"const settings = {json.dumps(settings)};\n"
        "settings.presets = [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset];\n"
        "window.ui = SwaggerUIBundle(settings);\n"
    )


def install_api_docs(app: FastAPI, prefix: str) -> None:
    """Serve Swagger UI at `{prefix}/docs`, its start-up script at `{prefix}/docs-init.js` and
    its assets under `{prefix}/docs-assets`."""
    assets = f"{prefix}/docs-assets"
    directory = str(files("fastapi_offline") / "static")
    app.mount(assets, StaticFiles(directory=directory), name="docs-assets")
    openapi_url = app.openapi_url or f"{prefix}/openapi.json"
    page = docs_page(f"{app.title} API", assets, f"{prefix}/docs-init.js")
    script = init_script(openapi_url)

    @app.get(f"{prefix}/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": DOCS_POLICY})

    @app.get(f"{prefix}/docs-init.js", include_in_schema=False)
    async def api_docs_init() -> Response:
        return Response(script, media_type="text/javascript")  # nosniff: SecurityHeaders, as everywhere
