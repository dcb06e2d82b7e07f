"""The routes of the app, read from the app itself (never started), for the tests that must
cover every one: test_text_types.py (their validators) and hostile/test_every_route.py (who
may call them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from keyhold.api.app import create_app
from keyhold.config import load_settings


def app_routes(home: Path) -> Iterator[tuple[str, Any]]:
    """(path prefix, route) for every route, inside included routers too: FastAPI keeps an
    included router's routes behind it, with the prefix it was included under."""
    app = create_app(load_settings(home), None)  # type: ignore[arg-type]  # never started

    def walk(routes: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for route in routes:
            included = getattr(route, "original_router", None)
            if included is not None:
                yield from walk(included.routes, prefix + route.include_context.prefix)
            else:
                yield prefix, route

    yield from walk(app.routes, "")
