"""What every operator command shares: the data-dir option, settings, and running the services
of a data dir in this process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from keyhold.cli.lock import DataDirBusy, acquire
from keyhold.clients.terminal import console, err, fail
from keyhold.config import Settings, load_settings

# The server's modules load only inside the commands that use them: client commands (chat,
# staff) and `--help` start without FastAPI, SQLAlchemy and the services.
if TYPE_CHECKING:
    from keyhold.app import Keyhold

T = TypeVar("T")

__all__ = ["HomeOption", "console", "ensure_initialized", "err", "fail", "settings_for", "with_service"]

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Data dir (default: $KEYHOLD_HOME, else ./var).", show_default=False),
]


def settings_for(home: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(home, **overrides)
    except ValueError as exc:
        fail(str(exc))


def ensure_initialized(settings: Settings, self_signed: bool = False, hostnames: list[str] | None = None) -> bool:
    """The data dir, made on first use (see `keyhold.app.initialize`); True if it was new."""
    from keyhold.app import DataDirError, initialize

    try:
        new, certificate = initialize(settings, self_signed, hostnames)
    except DataDirError as exc:
        fail(str(exc))
    if certificate is not None:
        cert, key = certificate
        console.print(f"self-signed certificate: {cert}\n  serve with: keyhold serve --tls-cert {cert} --tls-key {key}")
    return new


def require_initialized(settings: Settings) -> None:
    """Refuse a data dir that does not exist yet, instead of silently making a second one."""
    if not (settings.home / "config.toml").exists():
        fail(
            f"{settings.home} is not a Keyhold data dir: give --home (or set KEYHOLD_HOME) to the one "
            "your server uses, or make one with `keyhold init --home DIR`"
        )


def with_service(settings: Settings, fn: Callable[[Keyhold], Awaitable[T]], exclusive: bool = False) -> T:
    """Run `fn` against the data dir in-process. `exclusive` commands append events or
    access-log entries and so must not run beside a server on the same data dir."""
    from keyhold.app import DataDirError, start_keyhold
    from keyhold.core.errors import Problem

    if exclusive:
        try:
            _lock = acquire(settings.home, "keyhold " + " ".join(sys.argv[1:3]))
        except DataDirBusy as exc:
            fail(str(exc))

    async def run() -> T:
        # A one-shot command scans what it sends (`demo seed`) in-process: a scan child would
        # cost a second interpreter's start-up for a command that ends in a moment.
        svc = await start_keyhold(replace(settings, scanning_process="off"))
        try:
            return await fn(svc)
        finally:
            await svc.stop()

    try:
        return asyncio.run(run())
    except Problem as problem:
        fail(problem.detail)
    except (DataDirError, FileNotFoundError) as exc:
        fail(f"{exc} (is {settings.home} an initialized data dir? `keyhold init --home DIR` makes one)")
