"""`keyhold staff …`, `keyhold audit …`, `keyhold legal …`: governed access from the terminal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from keyhold.cli.main import HomeOption, console, fail, initialize, settings_for, with_service
from keyhold.clock import iso
from keyhold.core.service import Keyhold
from keyhold.governance.audit import verify_log
from keyhold.governance.service import Governance
from keyhold.governance.staff import ROLES, StaffMember
from keyhold.store import staff as staff_store

staff_app = typer.Typer(
    help="Staff accounts (moderator, legal, auditor, admin), each bound to a region.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="Check the access log: re-derive the Merkle tree and every signed head.", no_args_is_help=True
)
legal_app = typer.Typer(help="Legal cases: export a signed disclosure package.", no_args_is_help=True)


def gov_of(svc: Keyhold) -> Governance:
    assert svc.governance is not None
    return svc.governance


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
    initialize(settings)
    made = with_service(settings, lambda svc: gov_of(svc).staff.add(username, password, role, region))
    console.print(f"created staff {made['username']} ({made['role']}, region {made['region']})")
    console.print(f"TOTP secret (shown once): {made['totp_secret']}")
    console.print(f"otpauth URI: {made['otpauth_uri']}")


@staff_app.command("list")
def staff_list(home: HomeOption = None) -> None:
    """List staff accounts."""
    settings = settings_for(home)

    async def run(svc: Keyhold) -> None:
        async with svc.engine.connect() as conn:
            rows = await staff_store.list_staff(conn)
        table = Table("id", "username", "role", "region", "created", "status")
        for r in rows:
            table.add_row(
                str(r.id),
                r.username,
                r.role,
                r.region,
                iso(r.created_ms),
                "disabled" if r.disabled else "active",
            )
        console.print(table)

    with_service(settings, run)


@audit_app.command("verify")
def audit_verify(home: HomeOption = None) -> None:
    """Re-derive the access log from storage; exit 1 naming the first entry that does not match."""
    settings = settings_for(home)
    if not (settings.home / "config.toml").exists():
        fail(f"{settings.home} is not a Keyhold data dir")
    from keyhold.crypto.signing import ServiceSigner
    from keyhold.store.db import create_engine

    try:
        signer = ServiceSigner.load(settings.signing_key_file)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
        raise AssertionError from exc

    async def run() -> None:
        engine = create_engine(settings.effective_database_url)
        try:
            result = await verify_log(engine, signer.public_key_bytes)
        finally:
            await engine.dispose()
        summary = f"{result.entries} entries, {result.heads} signed tree heads, {result.blocks} member blocks"
        if result.ok:
            console.print(f"[green]access log verified[/green]: {summary}")
            return
        console.print(f"[red]access log does NOT verify[/red] ({summary})")
        for problem in result.problems:
            console.print(f"  first bad: {problem}")
        raise typer.Exit(1)

    asyncio.run(run())


@legal_app.command("export")
def legal_export(
    case_id: int,
    out: Annotated[Path, typer.Option(help="Where to write the signed package (JSON).")],
    acting: Annotated[str, typer.Option("--as", help="The legal staff member fulfilling the request.")],
    home: HomeOption = None,
) -> None:
    """Build the signed disclosure package of an approved case (content reads are logged)."""
    settings = settings_for(home)

    async def run(svc: Keyhold) -> dict[str, object]:
        async with svc.engine.connect() as conn:
            row = await staff_store.by_username(conn, acting)
        if row is None or row.disabled:
            fail(f"no active staff member named {acting!r}")
        assert row is not None
        staff = StaffMember(row.id, row.username, row.role, row.region)
        return await gov_of(svc).legal.disclose(staff, case_id)

    package = with_service(settings, run, exclusive=True)
    out.write_bytes(orjson.dumps(package, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    console.print(f"wrote {out} (sha256 {package['signature']['sha256']})")  # type: ignore[index]


def register(app: typer.Typer) -> None:
    from keyhold.cli.staff_client import register_workflows

    register_workflows(staff_app, legal_app, audit_app)
    app.add_typer(staff_app, name="staff")
    app.add_typer(audit_app, name="audit")
    app.add_typer(legal_app, name="legal")
