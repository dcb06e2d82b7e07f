"""Operator commands on a data dir: `init`, `serve`, `user …`, `keys …` (in this process)."""

from __future__ import annotations

import enum
import errno
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from keyhold.cli.common import HomeOption, console, ensure_initialized, fail, settings_for, with_service
from keyhold.cli.lock import DataDirBusy, acquire
from keyhold.clients.terminal import command_name
from keyhold.config import Settings
from keyhold.crypto.keyprovider import KeyFileProvider

# The server's modules load only inside the commands that use them (see cli/common.py).
if TYPE_CHECKING:
    from keyhold.app import Keyhold

user_app = typer.Typer(help="Manage member accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="Region key-encryption keys (KEKs): status and rotation.", no_args_is_help=True)


class LogLevel(enum.StrEnum):
    """Levels `serve` accepts: not uvicorn's `trace`, which logs whole requests, queries included."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def key_provider(settings: Settings) -> KeyFileProvider:
    from keyhold.app import MissingKeyMaterial, open_key_provider

    try:
        return open_key_provider(settings)
    except MissingKeyMaterial as exc:
        fail(str(exc))


def init(
    home: HomeOption = None,
    self_signed: Annotated[bool, typer.Option("--self-signed", help="Also make a local TLS certificate.")] = False,
    hostname: Annotated[list[str] | None, typer.Option(help="Names for the self-signed certificate.")] = None,
    database_url: Annotated[str | None, typer.Option(help="PostgreSQL URL instead of the embedded SQLite.")] = None,
) -> None:
    """Initialize a data dir: config, database, local key file, blob store."""
    settings = settings_for(home, database_url=database_url)
    new = ensure_initialized(settings, self_signed, hostname)
    console.print(f"{'initialized' if new else 'already initialized'}: {settings.home}")


def port_in_use(host: str, port: int) -> bool:
    """Whether another process listens on (host, port) already: checked before anything is
    initialized or printed, so that a busy port is one clear error, not a banner and a crash."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def serve(
    home: HomeOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="KEYHOLD_PORT", help="Port to listen on ($KEYHOLD_PORT).")] = 8000,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    insecure_http: Annotated[
        bool, typer.Option("--insecure-http", help="Allow plain HTTP on a non-loopback address.")
    ] = False,
    database_url: Annotated[str | None, typer.Option(help="PostgreSQL URL instead of the embedded SQLite.")] = None,
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
    if port_in_use(host, port):
        fail(f"port {port} on {host} is in use by another program: stop it, or give --port (or KEYHOLD_PORT)")
    if ensure_initialized(settings):
        console.print(f"initialized a new data dir at {settings.home}")
    try:
        _lock = acquire(settings.home, f"the server on port {port}")
    except DataDirBusy as exc:
        fail(str(exc))
    scheme = "https" if settings.tls_certfile else "http"
    url = f"{scheme}://{host}:{port}"
    keyhold = command_name()
    console.print(
        f"Keyhold on [bold]{url}[/bold]  (data: {settings.home})\n"
        f"  API docs:     {url}/api/v1/docs\n"
        f"  create users: {keyhold} user create alice --home {settings.home}   (or: {keyhold} demo seed --home {settings.home})\n"
        f"  chat:         {keyhold} chat --url {url}"
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
    ensure_initialized(settings)
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
    accounts = with_service(settings, lambda svc: svc.accounts.list_accounts(after, limit))
    table = Table("id", "username", "region", "created", "status")
    for account in accounts:
        table.add_row(str(account["id"]), account["username"], account["region"], account["created_at"], account["status"])
    console.print(table)
    if len(accounts) == limit:
        console.print(f"more: {command_name()} user list --after {accounts[-1]['id']}")


@user_app.command("disable")
def user_disable(username: str, home: HomeOption = None) -> None:
    """Disable an account and revoke all its sessions (its open streams close)."""
    settings = settings_for(home)
    revoked = with_service(settings, lambda svc: svc.accounts.disable(username))
    console.print(f"disabled {username}; revoked {revoked} session(s); open streams close within a second")


@keys_app.command("status")
def keys_status(home: HomeOption = None) -> None:
    """KEK versions per region and how many conversation keys each wraps."""
    from keyhold.core.keys import wraps_by_kek_version

    settings = settings_for(home)
    provider = key_provider(settings)
    counts = with_service(settings, lambda svc: wraps_by_kek_version(svc.engine))
    table = Table("region", "KEK version", "current", "wrapped DEKs")
    for region, versions in sorted(provider.versions().items()):
        current = provider.current_version(region)
        for version in versions:
            table.add_row(region, str(version), "yes" if version == current else "", str(counts.get((region, version), 0)))
    console.print(table)


@keys_app.command("rotate")
def keys_rotate(
    home: HomeOption = None,
    region: Annotated[list[str] | None, typer.Option(help="Rotate only these regions (default: all).")] = None,
) -> None:
    """Add a new KEK version and rewrap every conversation key under it. Old messages stay
    readable; the old KEK versions stay in the key file until nothing uses them."""
    from keyhold.core.keys import live_wraps, rewrap_all

    settings = settings_for(home)
    provider = key_provider(settings)
    regions = region or list(provider.versions())
    for r in regions:
        if r not in provider.versions():
            fail(f"unknown region {r!r}")
        console.print(f"region {r}: new KEK version {provider.rotate(r)}")

    async def run(svc: Keyhold) -> int:
        total = await live_wraps(svc.engine)
        columns = (TextColumn("rewrapping"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, disable=not sys.stdout.isatty() and total < 1) as progress:
            task = progress.add_task("rewrap", total=total)
            return await rewrap_all(svc.engine, provider, lambda n: progress.advance(task, n))

    done = with_service(settings, run)
    console.print(f"rewrapped {done} conversation key(s)")


@keys_app.command("rotate-franking")
def keys_rotate_franking(home: HomeOption = None) -> None:
    """Add a new franking key (the MAC key that binds e2ee franking commitments to their
    messages). New messages are tagged with it once the server restarts; reports of messages
    tagged with older keys still verify: those keys stay in franking-keys.json."""
    from keyhold.crypto.franking_keys import FrankingKeys

    settings = settings_for(home)
    key_id = FrankingKeys.open(settings.franking_key_file).rotate()
    console.print(f"new franking key {key_id}; restart the server to tag new messages with it")


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
    shredded = with_service(settings, lambda svc: svc.conversations.shred_keys(conversation, epoch), exclusive=True)
    console.print(f"shredded {shredded} wrapped key(s) of conversation {conversation}")
