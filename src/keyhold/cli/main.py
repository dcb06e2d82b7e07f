"""The `keyhold` command. Every command that touches a data dir takes `--home DIR`."""

from __future__ import annotations

import asyncio
import enum
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from keyhold.cli.lock import DataDirBusy, acquire
from keyhold.clock import iso
from keyhold.config import CONFIG_FILE, Settings, load_settings, render_config, resolve_home
from keyhold.core.errors import Problem
from keyhold.core.keys import rewrap_all
from keyhold.core.service import Keyhold, MissingKeyMaterial, open_key_provider, start_keyhold
from keyhold.crypto.keyprovider import KeyFileProvider
from keyhold.crypto.signing import ServiceSigner
from keyhold.crypto.tls import write_self_signed
from keyhold.store import accounts as account_store
from keyhold.store import keys as key_store
from keyhold.store.db import create_engine, migrate

T = TypeVar("T")
console = Console()
err = Console(stderr=True)
app = typer.Typer(
    help="Keyhold: direct messaging that says, enforces and proves who can read each conversation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
user_app = typer.Typer(help="Manage member accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="Region key-encryption keys (KEKs): status and rotation.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(keys_app, name="keys")


class LogLevel(enum.StrEnum):
    """Levels `serve` accepts: not uvicorn's `trace`, which logs whole requests, queries included."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Data dir (default: $KEYHOLD_HOME, else ./var).", show_default=False),
]


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def settings_for(home: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(home, **overrides)
    except ValueError as exc:
        fail(str(exc))
        raise AssertionError from exc  # unreachable: fail() exits


def key_provider(settings: Settings, create: bool = False) -> KeyFileProvider:
    try:
        return open_key_provider(settings, create=create)
    except MissingKeyMaterial as exc:
        fail(str(exc))
        raise AssertionError from exc


def initialize(settings: Settings, self_signed: bool = False, hostnames: list[str] | None = None) -> bool:
    """Create the data dir on first use; returns True if it was new. Safe to run again."""
    home = settings.home
    new = not (home / CONFIG_FILE).exists()
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    key_provider(settings, create=new)  # a new dir gets keys.json (0600), one KEK per region
    if new:
        if not settings.signing_key_file.exists():
            ServiceSigner.create(settings.signing_key_file)
        (home / CONFIG_FILE).write_text(render_config(settings))
    elif not settings.signing_key_file.exists():
        fail(
            f"{settings.signing_key_file} is missing: restore it from your backup (signed tree heads and packages "
            "made so far can only be checked against its public key)"
        )
    settings.blob_dir.mkdir(exist_ok=True)

    async def _migrate() -> None:
        engine = create_engine(settings.effective_database_url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(_migrate())
    except (OSError, SQLAlchemyError) as exc:
        fail(f"cannot open the database: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    if self_signed:
        cert, key = home / "tls-cert.pem", home / "tls-key.pem"
        write_self_signed(cert, key, hostnames or ["localhost", "127.0.0.1"])
        console.print(
            f"self-signed certificate: {cert}\n  serve with: keyhold serve --tls-cert {cert} --tls-key {key}"
        )
    return new


def with_service(settings: Settings, fn: Callable[[Keyhold], Awaitable[T]], exclusive: bool = False) -> T:
    """Run `fn` against the data dir in-process. `exclusive` commands append events or
    access-log entries and so must not run beside a server on the same data dir."""
    if exclusive:
        try:
            _lock = acquire(settings.home, "keyhold " + " ".join(sys.argv[1:3]))
        except DataDirBusy as exc:
            fail(str(exc))

    async def run() -> T:
        svc = await start_keyhold(settings)
        try:
            return await fn(svc)
        finally:
            await svc.stop()

    try:
        return asyncio.run(run())
    except Problem as problem:
        fail(problem.detail)
        raise AssertionError from problem
    except (MissingKeyMaterial, FileNotFoundError) as exc:
        fail(f"{exc} (is {settings.home} an initialized data dir? `keyhold init --home DIR` makes one)")
        raise AssertionError from exc


@app.command()
def init(
    home: HomeOption = None,
    self_signed: Annotated[
        bool, typer.Option("--self-signed", help="Also make a local TLS certificate.")
    ] = False,
    hostname: Annotated[list[str] | None, typer.Option(help="Names for the self-signed certificate.")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL instead of the embedded SQLite.")
    ] = None,
) -> None:
    """Initialize a data dir: config, database, local key file, blob store."""
    settings = settings_for(home, database_url=database_url)
    new = initialize(settings, self_signed, hostname)
    console.print(f"{'initialized' if new else 'already initialized'}: {settings.home}")


@app.command()
def serve(
    home: HomeOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="KEYHOLD_PORT", help="Port to listen on.")] = 8000,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    insecure_http: Annotated[
        bool, typer.Option("--insecure-http", help="Allow plain HTTP on a non-loopback address.")
    ] = False,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL instead of the embedded SQLite.")
    ] = None,
    log_level: Annotated[LogLevel, typer.Option(help="How much to log (never tokens or message text).")] = LogLevel.info,
) -> None:
    """Start the server (initializes the data dir on first run)."""
    from keyhold.cli.serve import InsecureBindRefused, build_server, check_bind

    if bool(tls_cert) != bool(tls_key):
        fail("give both --tls-cert and --tls-key, or neither")
    settings = settings_for(
        home,
        database_url=database_url,
        tls_certfile=str(tls_cert) if tls_cert else None,
        tls_keyfile=str(tls_key) if tls_key else None,
    )
    try:
        check_bind(host, bool(settings.tls_certfile), insecure_http)
    except InsecureBindRefused as exc:
        fail(str(exc), 2)
    if initialize(settings):
        console.print(f"initialized a new data dir at {settings.home}")
    try:
        _lock = acquire(settings.home, f"the server on port {port}")
    except DataDirBusy as exc:
        fail(str(exc))
    scheme = "https" if settings.tls_certfile else "http"
    url = f"{scheme}://{host}:{port}"
    console.print(
        f"Keyhold on [bold]{url}[/bold]  (data: {settings.home})\n"
        f"  API docs:     {url}/api/v1/docs\n"
        f"  create users: keyhold user create alice --home {settings.home}   (or: keyhold demo seed)\n"
        f"  chat:         keyhold chat --url {url}"
    )
    build_server(settings, host, port, log_level.value).run()


@user_app.command("create")
def user_create(
    username: str,
    home: HomeOption = None,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)] = "",
    birthdate: Annotated[str, typer.Option(help="YYYY-MM-DD")] = "2000-01-01",
    region: Annotated[str, typer.Option(help="Data region, e.g. us, eu, row.")] = "us",
) -> None:
    """Create a member account."""
    settings = settings_for(home)
    initialize(settings)
    profile = with_service(settings, lambda svc: svc.accounts.register(username, password, birthdate, region))
    console.print(f"created {profile['username']} (region {profile['region']})")


@user_app.command("list")
def user_list(
    home: HomeOption = None,
    after: Annotated[int, typer.Option(help="Show users after this id (pagination).")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """List member accounts."""
    settings = settings_for(home)

    async def run(svc: Keyhold) -> None:
        async with svc.engine.connect() as conn:
            rows = await account_store.list_users(conn, after, limit)
        table = Table("id", "username", "region", "created", "status")
        for r in rows:
            status = "deleted" if r.deleted_ms else "disabled" if r.disabled else "active"
            table.add_row(str(r.id), r.username, r.region, iso(r.created_ms), status)
        console.print(table)
        if len(rows) == limit:
            console.print(f"more: keyhold user list --after {rows[-1].id}")

    with_service(settings, run)


@user_app.command("disable")
def user_disable(username: str, home: HomeOption = None) -> None:
    """Disable an account and revoke all its sessions."""
    settings = settings_for(home)

    async def run(svc: Keyhold) -> None:
        revoked = await svc.accounts.disable(username)
        console.print(f"disabled {username}; revoked {revoked} session(s); open streams close within a second")

    with_service(settings, run)


@keys_app.command("status")
def keys_status(home: HomeOption = None) -> None:
    """KEK versions per region and how many conversation keys each wraps."""
    settings = settings_for(home)
    provider = key_provider(settings)

    async def run(svc: Keyhold) -> None:
        async with svc.engine.connect() as conn:
            counts = {(r, v): n for r, v, n in await key_store.counts_by_version(conn)}
        table = Table("region", "KEK version", "current", "wrapped DEKs")
        for region, versions in sorted(provider.versions().items()):
            current = provider.current_version(region)
            for version in versions:
                table.add_row(
                    region,
                    str(version),
                    "yes" if version == current else "",
                    str(counts.get((region, version), 0)),
                )
        console.print(table)

    with_service(settings, run)


@keys_app.command("rotate")
def keys_rotate(
    home: HomeOption = None,
    region: Annotated[
        list[str] | None, typer.Option(help="Rotate only these regions (default: all).")
    ] = None,
) -> None:
    """Add a new KEK version and rewrap every conversation key under it. Old messages stay
    readable; the old KEK versions stay in the key file until nothing uses them."""
    settings = settings_for(home)
    provider = key_provider(settings)
    regions = region or list(provider.versions())
    for r in regions:
        if r not in provider.versions():
            fail(f"unknown region {r!r}")
        console.print(f"region {r}: new KEK version {provider.rotate(r)}")

    async def run(svc: Keyhold) -> int:
        async with svc.engine.connect() as conn:
            total = await key_store.count_live(conn)
        columns = (TextColumn("rewrapping"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, disable=not sys.stdout.isatty() and total < 1) as progress:
            task = progress.add_task("rewrap", total=total)
            return await rewrap_all(svc.engine, provider, lambda n: progress.advance(task, n))

    done = with_service(settings, run)
    console.print(f"rewrapped {done} conversation key(s)")


@keys_app.command("shred")
def keys_shred(
    conversation: Annotated[int, typer.Option(help="The conversation whose keys to destroy.")],
    home: HomeOption = None,
    epoch: Annotated[int | None, typer.Option(help="Only this key epoch (default: all).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Destroy a conversation's keys: its content becomes unrecoverable for everyone, staff
    included. Refused while a legal preservation hold covers any member."""
    if not yes:
        typer.confirm(f"Destroy the keys of conversation {conversation} for good?", abort=True)
    settings = settings_for(home)
    shredded = with_service(
        settings, lambda svc: svc.conversations.shred_keys(conversation, epoch), exclusive=True
    )
    console.print(f"shredded {shredded} wrapped key(s) of conversation {conversation}")


def _register_optional_commands() -> None:
    """Commands in their own modules (chat, demo, bench), registered if present."""
    import importlib

    for module in (
        "keyhold.cli.governance",
        "keyhold.cli.transparency",
        "keyhold.cli.chat",
        "keyhold.cli.demo",
        "keyhold.cli.bench",
    ):
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(app)


def main() -> None:
    _register_optional_commands()
    app()


__all__ = ["app", "initialize", "main", "resolve_home", "settings_for", "with_service"]
