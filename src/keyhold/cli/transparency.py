"""`keyhold transparency report`: the transparency report of a period, from the access log."""

from __future__ import annotations

import asyncio
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer

from keyhold.cli.common import HomeOption, console, fail, require_initialized, settings_for

transparency_app = typer.Typer(
    help="Transparency reports computed from the access log (recomputable by any auditor).",
    no_args_is_help=True,
)


class ReportFormat(StrEnum):
    html = "html"
    json = "json"


@transparency_app.command("report")
def report(
    period: Annotated[str, typer.Option(help="2026-H2, 2026-H1, 2026-Q3 or 2026 (UTC).")],
    fmt: Annotated[ReportFormat, typer.Option("--format", help="html or json.")] = ReportFormat.html,
    out: Annotated[Path | None, typer.Option(help="Write here instead of to stdout.")] = None,
    home: HomeOption = None,
) -> None:
    """Legal requests, user reports and staff content accesses of a period, from the access log
    as of its newest signed tree head (the report names that head's size and root)."""
    # Loaded here, not at the top: see cli/common.py.
    from sqlalchemy.exc import SQLAlchemyError

    from keyhold.governance.transparency import period_bounds, render_html, report_from_storage

    try:
        period_bounds(period)
    except ValueError as exc:
        fail(str(exc), 2)
    settings = settings_for(home)
    require_initialized(settings)
    try:
        result = asyncio.run(report_from_storage(settings.effective_database_url, period))
    except ValueError as exc:
        fail(str(exc))
        return
    except SQLAlchemyError as exc:  # e.g. a data dir whose database was never migrated
        fail(
            f"cannot read the access log of {settings.home}: {getattr(exc, 'orig', None) or type(exc).__name__}"
        )
        return
    if fmt is ReportFormat.json:
        text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n"
    else:
        text = render_html(result)
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    out.write_text(text, encoding="utf-8")
    console.print(
        f"wrote {out}: {result['period']} over {result['tree_size']} log entries (root {result['root'][:16]}…)",
        highlight=False,
    )

