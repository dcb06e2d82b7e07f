"""`keyhold staff …`, `keyhold audit …`, `keyhold legal …`: governed access from the terminal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table

from keyhold.cli.common import (
    HomeOption,
    console,
    ensure_initialized,
    fail,
    require_initialized,
    settings_for,
    with_service,
)
from keyhold.crypto.signing import ServiceSigner
from keyhold.governance.roles import ROLES

# The server's modules load only inside the commands that use them (see cli/common.py).
if TYPE_CHECKING:
    from keyhold.app import Keyhold

staff_app = typer.Typer(
    help="Staff accounts (moderator, legal, auditor, admin), each bound to a region.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="Check the access log: re-derive the Merkle tree and every signed head.", no_args_is_help=True
)
legal_app = typer.Typer(help="Legal cases: export a signed disclosure package.", no_args_is_help=True)


@staff_app.command("add")
def staff_add(
    username: str,
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}.")],
    region: Annotated[str, typer.Option(help="The jurisdiction whose data this person may act on.")],
    home: HomeOption = None,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)] = "",
) -> None:
    """Create a staff account. Prints its TOTP secret once: enrol it in an authenticator app."""
    settings = settings_for(home)
    ensure_initialized(settings)
    made = with_service(settings, lambda svc: svc.governance.staff.add(username, password, role, region))
    console.print(f"created staff {made['username']} ({made['role']}, region {made['region']})")
    console.print(f"TOTP secret (shown once): {made['totp_secret']}")
    console.print(f"otpauth URI: {made['otpauth_uri']}")


@staff_app.command("list")
def staff_list(home: HomeOption = None) -> None:
    """List staff accounts."""
    settings = settings_for(home)
    rows = with_service(settings, lambda svc: svc.governance.staff.list_staff())
    table = Table("id", "username", "role", "region", "created", "status")
    for r in rows:
        table.add_row(str(r["id"]), r["username"], r["role"], r["region"], r["created_at"], r["status"])
    console.print(table)


@staff_app.command("totp-reset")
def staff_totp_reset(username: str, home: HomeOption = None) -> None:
    """Give a staff member a new TOTP secret (they lost their authenticator): the old codes and
    their open staff sessions stop working; the new secret is printed once."""
    settings = settings_for(home)
    require_initialized(settings)
    made = with_service(settings, lambda svc: svc.governance.staff.reset_totp(username))
    console.print(f"new second factor for {made['username']}; {made['sessions_ended']} staff session(s) ended")
    console.print(f"TOTP secret (shown once): {made['totp_secret']}")
    console.print(f"otpauth URI: {made['otpauth_uri']}")


@audit_app.command("verify")
def audit_verify(home: HomeOption = None) -> None:
    """Re-derive the access log and the key-transparency log from storage; exit 1 naming, per
    log, the first entry that does not match."""
    from keyhold.e2ee.key_log import audit_stored_key_log
    from keyhold.governance.audit import verify_stored_log

    settings = settings_for(home)
    require_initialized(settings)
    try:
        signer = ServiceSigner.load(settings.signing_key_file)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    result = asyncio.run(verify_stored_log(settings.effective_database_url, signer.public_key_bytes))
    summary = f"{result.entries} entries, {result.heads} signed tree heads, {result.blocks} member blocks"
    if result.ok:
        console.print(f"[green]access log verified[/green]: {summary}")
    else:
        console.print(f"[red]access log does NOT verify[/red] ({summary})")
        for problem in result.problems:
            console.print(f"  first bad: {problem}")
    keys = asyncio.run(
        audit_stored_key_log(settings.effective_database_url, signer.public_key_bytes, settings.server_name)
    )
    key_summary = f"{keys.entries} entries, {keys.heads} signed tree heads, {keys.keys} published keys"
    if keys.problem is None:
        console.print(f"[green]key-transparency log verified[/green]: {key_summary}")
    else:
        console.print(f"[red]key-transparency log does NOT verify[/red] ({key_summary})")
        console.print(f"  first bad: {keys.problem}")
    if not result.ok or keys.problem is not None:
        raise typer.Exit(1)



@legal_app.command("export")
def legal_export(
    case_id: int,
    out: Annotated[Path, typer.Option(help="Where to write the signed package (JSON).")],
    acting: Annotated[str, typer.Option("--as", help="The legal staff member fulfilling the request.")],
    home: HomeOption = None,
) -> None:
    """Build the signed disclosure package of an approved case (content reads are logged)."""
    settings = settings_for(home)

    async def run(svc: Keyhold) -> dict[str, Any]:
        staff = await svc.governance.staff.acting_as(acting)
        if staff is None:
            fail(f"no active staff member named {acting!r}")
        return await svc.governance.legal.disclose(staff, case_id)

    package = with_service(settings, run, exclusive=True)
    out.write_bytes(orjson.dumps(package, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    console.print(f"wrote {out} (sha256 {package['signature']['sha256']})")

