"""Terminal output shared by every `keyhold` command: one console for results, one for errors.

On a terminal, Rich wraps to its width. Piped or captured, nothing is wrapped: hashes, ids and
commands printed for copying must survive as one line (Rich would otherwise wrap at 80).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console


def _console(stderr: bool) -> Console:
    # Not bound to a stream: Rich writes to whatever sys.stdout/sys.stderr is at print time.
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or os.environ.get("COLUMNS"):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=100_000, soft_wrap=True)


console = _console(stderr=False)
err = _console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _shortest(path: Path) -> str:
    relative = os.path.relpath(path)
    return relative if len(relative) < len(str(path)) else str(path)


def command_name() -> str:
    """How to type this program in a hint, so that the hint works when pasted: `keyhold` when
    that name on PATH is this program, else its path (`.venv/bin/keyhold`, say), or
    `python -m keyhold` when run that way."""
    script = Path(sys.argv[0])
    if script.name == "__main__.py":
        return f"{_shortest(Path(sys.executable))} -m keyhold"
    found = shutil.which(script.name)
    if found and Path(found).resolve() == script.resolve():
        return script.name
    return _shortest(script.absolute())


# The `--url` option of every client command: typer falls back to $KEYHOLD_URL, then
# `server_url` to this machine on $KEYHOLD_PORT.
ServerUrlOption = Annotated[
    str | None,
    typer.Option(
        envvar="KEYHOLD_URL",
        help="The Keyhold server (https://… for TLS); default http://127.0.0.1:$KEYHOLD_PORT (8000).",
        show_default=False,
    ),
]


def server_url(url: str | None) -> str:
    """`--url`, else `$KEYHOLD_URL` (typer reads it), else this machine on `$KEYHOLD_PORT`,
    the port `make run` and `keyhold serve` use."""
    return (url or f"http://127.0.0.1:{os.environ.get('KEYHOLD_PORT') or 8000}").rstrip("/")
