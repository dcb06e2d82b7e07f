"""Staff workflows from the terminal, over the API (never the database).

`keyhold staff login` signs in (password + TOTP) and stores the short-lived staff session in
`$KEYHOLD_STAFF_SESSION`, else `~/.config/keyhold/staff-session.json` (mode 0600); every other
command here reads it (or the file named by `--session`) and calls the server through
`keyhold.sdk.StaffClient`, so every content read is logged by the server as usual.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.table import Table
from rich.text import Text

from keyhold.clients.terminal import ServerUrlOption, command_name, console, fail, server_url
from keyhold.sdk import KeyholdConnectionError, KeyholdError
from keyhold.sdk.staff import LegalRequest, StaffClient

T = TypeVar("T")
SESSION_ENV = "KEYHOLD_STAFF_SESSION"
ACTIONS = "no_violation, remove_message, warn, suspend, ban, escalate_legal"

SessionOption = Annotated[
    Path | None,
    typer.Option(
        "--session",
        help=f"Staff session file (default: ${SESSION_ENV}, else ~/.config/keyhold/staff-session.json).",
        show_default=False,
    ),
]
CaseArg = Annotated[int, typer.Argument(help="The case id.")]


# -- the session file and the one helper every command goes through ------------------------------


def session_path(option: Path | None) -> Path:
    if option is not None:
        return option
    env = os.environ.get(SESSION_ENV)
    return Path(env) if env else Path.home() / ".config" / "keyhold" / "staff-session.json"


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 (atomically: a private temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_session(option: Path | None) -> dict[str, Any]:
    path = session_path(option)
    try:
        session = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        fail(f"no staff session at {path}: log in first with `keyhold staff login`")
    except (OSError, orjson.JSONDecodeError) as exc:
        fail(f"cannot read the staff session {path} ({exc}): log in first with `keyhold staff login`")
    if not isinstance(session, dict) or not session.get("token") or not session.get("url"):
        fail(f"{path} is not a staff session: log in first with `keyhold staff login`")
    return dict(session)


def run_api(make: Callable[[], Coroutine[Any, Any, T]], url: str) -> T:
    """Run one coroutine; a refusal or network failure becomes a clean error (exit 1)."""
    try:
        return asyncio.run(make())
    except KeyholdConnectionError as exc:
        fail(f"cannot reach {url}: {exc.problem['detail']}")
    except KeyholdError as exc:
        detail = exc.problem.get("detail") or exc.problem.get("title") or str(exc)
        hint = f" (log in again with `{command_name()} staff login`)" if exc.status == 401 else ""
        fail(f"refused ({exc.status}): {detail}{hint}")
    raise AssertionError("unreachable")


def with_staff(option: Path | None, fn: Callable[[StaffClient], Awaitable[T]]) -> T:
    """Load the session, open a `StaffClient`, run `fn` with it, close it; errors exit 1."""
    s = load_session(option)
    ca = s.get("ca_file")
    client_args = (s["url"], s["token"], s.get("username", ""), s.get("role", ""), s.get("region", ""))

    async def run() -> T:
        client = StaffClient(*client_args, expires_at=s.get("expires_at", ""), verify=ca or True)
        try:
            return await fn(client)
        finally:
            await client.close()

    return run_api(run, s["url"])


# -- output ---------------------------------------------------------------------------------------


def cell(value: Any) -> Text:
    """A table cell as plain text (member content must never be read as Rich markup)."""
    if value is None:
        return Text("-")
    if isinstance(value, dict | list):
        return Text(orjson.dumps(value).decode())
    return Text(str(value))


def table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    t = Table(*columns, title=title)
    for row in rows:
        t.add_row(*(cell(v) for v in row))
    console.print(t)


def show_fields(data: dict[str, Any], title: str) -> None:
    table(["field", "value"], [[k, v] for k, v in data.items()], title=title)


def refused_if(case: dict[str, Any], what: str) -> None:
    """Print the case; a case the rules refused is a refusal (exit 1)."""
    if case.get("status") == "refused":
        ruling = (case.get("details") or {}).get("ruling") or "refused"
        fail(f"case {case['id']} {what} refused: {ruling}")
    console.print(f"case {case['id']}: {case.get('status')}")


# -- staff: session -----------------------------------------------------------------------------------


def staff_login(
    username: Annotated[str, typer.Option(help="Your staff username.")],
    url: ServerUrlOption = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
    totp: Annotated[str | None, typer.Option(help="The current code of your authenticator app.")] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="PEM CA bundle to trust (for a self-signed server certificate).")
    ] = None,
    session: SessionOption = None,
) -> None:
    """Sign in with password and TOTP; the session (1 h) is stored in a 0600 file."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    code = totp or typer.prompt("TOTP code", hide_input=True)
    verify: bool | str = str(ca_file) if ca_file else True
    server = server_url(url)

    async def run() -> dict[str, Any]:
        client = await StaffClient.login(server, username, password, code.strip(), verify=verify)
        try:
            return {
                "url": client.base_url,
                "token": client.token,
                "username": client.username,
                "role": client.role,
                "region": client.region,
                "expires_at": client.expires_at,
                "ca_file": str(ca_file.resolve()) if ca_file else None,
            }
        finally:
            await client.close()

    stored = run_api(run, server)
    path = session_path(session)
    write_private(path, orjson.dumps(stored, option=orjson.OPT_INDENT_2))
    console.print(
        f"signed in as {stored['username']} ({stored['role']}, region {stored['region']}),"
        f" until {stored['expires_at']}; session in {path}"
    )


def staff_logout(session: SessionOption = None) -> None:
    """End the session on the server and delete the session file."""
    path = session_path(session)

    async def run(client: StaffClient) -> None:
        try:
            await client.logout()
        except KeyholdError as exc:
            if exc.status != 401:  # an expired session is over anyway
                raise

    with_staff(session, run)
    path.unlink(missing_ok=True)
    console.print("signed out")


def staff_whoami(session: SessionOption = None) -> None:
    """Who the stored session belongs to (asks the server, so it also checks the session)."""
    me = with_staff(session, lambda c: c.me())
    show_fields(me, "staff session")


# -- staff: report cases (moderators) -------------------------------------------------------------


def staff_reports(
    status: Annotated[str | None, typer.Option(help="Only cases of this status (e.g. open).")] = None,
    session: SessionOption = None,
) -> None:
    """Report cases of your region."""
    cases = with_staff(session, lambda c: c.reports(status=status))
    rows = [
        [c["id"], c["status"], c["created_at"], (c.get("details") or {}).get("category"), c.get("assigned_to_name")]
        for c in cases
    ]
    table(["id", "status", "created", "category", "assigned to"], rows, title="report cases")


def staff_report(case_id: CaseArg, session: SessionOption = None) -> None:
    """One report case: status, reported messages, details and decision (no content)."""
    show_fields(with_staff(session, lambda c: c.report(case_id)), f"report case {case_id}")


def staff_claim(case_id: CaseArg, session: SessionOption = None) -> None:
    """Assign a report case (or an appeal) to yourself."""
    case = with_staff(session, lambda c: c.claim(case_id))
    console.print(f"case {case['id']}: {case['status']}, assigned to {case.get('assigned_to_name')}")


def staff_content(
    case_id: CaseArg,
    reason: Annotated[str, typer.Option(help="Why you read it; written to the access log.")],
    session: SessionOption = None,
) -> None:
    """Read the reported messages and the context around them (logged before it is shown)."""
    items = with_staff(session, lambda c: c.report_content(case_id, reason))
    rows = [
        [m["id"], m.get("sender"), m["sent_at"], "(deleted)" if m.get("deleted") else m["text"]] for m in items
    ]
    table(["id", "sender", "time", "text"], rows, title=f"content of case {case_id}")


def staff_decide(
    case_id: CaseArg,
    action: Annotated[str, typer.Option(help=f"One of: {ACTIONS}.")],
    note: Annotated[str, typer.Option(help="Shown to the people concerned.")] = "",
    suspend_hours: Annotated[int | None, typer.Option(help="For --action suspend.")] = None,
    hotline_reference: Annotated[
        str | None, typer.Option(help="Hotline report reference (child-safety cases).")
    ] = None,
    session: SessionOption = None,
) -> None:
    """Decide a report case assigned to you."""
    case = with_staff(session, lambda c: c.decide(case_id, action, note, suspend_hours, hotline_reference))
    console.print(f"case {case['id']}: {case['status']} ({action})")


def staff_appeal_decide(
    case_id: CaseArg,
    uphold: Annotated[
        bool | None, typer.Option("--uphold/--overturn", help="Keep the decision, or overturn it.")
    ] = None,
    note: Annotated[str, typer.Option(help="Shown to the people concerned.")] = "",
    session: SessionOption = None,
) -> None:
    """Decide an appeal assigned to you (a different moderator from the first decision)."""
    if uphold is None:
        fail("say --uphold or --overturn")
    upheld = bool(uphold)
    case = with_staff(session, lambda c: c.decide_appeal(case_id, upheld, note))
    console.print(f"case {case['id']}: {case['status']} ({'upheld' if upheld else 'overturned'})")


# -- legal cases (legal staff) ------------------------------------------------------------------------


def legal_create(
    agency: Annotated[str, typer.Option(help="The requesting agency.")],
    officer: Annotated[str, typer.Option(help="The requesting officer.")],
    contact: Annotated[str, typer.Option(help="How to reach the officer.")],
    country: Annotated[str, typer.Option(help="ISO country of the agency, e.g. US.")],
    process: Annotated[str, typer.Option(help="Legal process, e.g. subpoena, court_order, search_warrant.")],
    target: Annotated[list[str], typer.Option(help="Target username (repeatable).")],
    date_from: Annotated[str, typer.Option("--from", help="First day covered, YYYY-MM-DD.")],
    date_to: Annotated[str, typer.Option("--to", help="Last day covered, YYYY-MM-DD.")],
    category: Annotated[list[str], typer.Option(help="Data category, e.g. message_content (repeatable).")],
    document: Annotated[Path, typer.Option(help="The request document (e.g. the warrant PDF).")],
    justification: Annotated[str, typer.Option(help="Why (required for emergencies).")] = "",
    nondisclosure_until: Annotated[
        str | None, typer.Option(help="Members are not told before this day, YYYY-MM-DD.")
    ] = None,
    session: SessionOption = None,
) -> None:
    """Record a law-enforcement request; the rules rule on it at once (exit 1 if refused)."""
    try:
        body = document.read_bytes()
    except OSError as exc:
        fail(f"cannot read {document}: {exc}")
    case = with_staff(
        session,
        lambda c: c.create_legal_case(
            LegalRequest(
                agency=agency, officer=officer, contact=contact, country=country, process=process,
                targets=target, date_from=date_from, date_to=date_to, categories=category, document=body,
                justification=justification, nondisclosure_until=nondisclosure_until, document_name=document.name,
            )
        ),
    )
    refused_if(case, "was")


def legal_list(
    status: Annotated[str | None, typer.Option(help="Only cases of this status (e.g. pending).")] = None,
    session: SessionOption = None,
) -> None:
    """Legal cases of your region."""
    cases = with_staff(session, lambda c: c.legal_cases(status=status))
    rows = [
        [c["id"], c["status"], (c.get("details") or {}).get("process"), ", ".join(c.get("targets") or []),
         c["created_at"], c.get("created_by_name"), c.get("approved_by_name")]
        for c in cases
    ]  # fmt: skip
    table(["id", "status", "process", "targets", "created", "by", "approved by"], rows, title="legal cases")


def legal_show(case_id: CaseArg, session: SessionOption = None) -> None:
    """One legal case."""
    show_fields(with_staff(session, lambda c: c.legal_case(case_id)), f"legal case {case_id}")


def legal_approve(case_id: CaseArg, session: SessionOption = None) -> None:
    """Approve a pending case (four eyes: not the person who recorded it)."""
    refused_if(with_staff(session, lambda c: c.approve(case_id)), "approval")


def legal_refuse(
    case_id: CaseArg,
    reason: Annotated[str, typer.Option(help="Why the request is refused.")],
    session: SessionOption = None,
) -> None:
    """Refuse a pending case."""
    case = with_staff(session, lambda c: c.refuse(case_id, reason))
    console.print(f"case {case['id']}: {case['status']}")


def legal_extend(case_id: CaseArg, session: SessionOption = None) -> None:
    """Extend a preservation hold."""
    case = with_staff(session, lambda c: c.extend(case_id))
    console.print(f"case {case['id']}: {case['status']}, expires {case.get('expires_at')}")


def legal_release(case_id: CaseArg, session: SessionOption = None) -> None:
    """Release a preservation hold."""
    case = with_staff(session, lambda c: c.release(case_id))
    console.print(f"case {case['id']}: {case['status']}")


def legal_disclose(
    case_id: CaseArg,
    out: Annotated[Path, typer.Option(help="Where to write the signed package (JSON, mode 0600).")],
    session: SessionOption = None,
) -> None:
    """Produce the signed disclosure package of an approved case over the API (reads are logged)."""
    package = with_staff(session, lambda c: c.disclosure(case_id))
    write_private(out, orjson.dumps(package, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    console.print(f"wrote {out} (sha256 {package.get('signature', {}).get('sha256')})")


# -- access log (auditors) ------------------------------------------------------------------------


def audit_entries(
    start: Annotated[int, typer.Option(help="Index of the first entry.")] = 0,
    limit: Annotated[int, typer.Option(help="How many entries at most.")] = 100,
    session: SessionOption = None,
) -> None:
    """Access-log entries up to the newest signed tree head: index, type, time, case."""
    items = with_staff(session, lambda c: c.log_entries(start, limit))
    rows = []
    for item in items:
        entry = orjson.loads(item["entry"])
        details = entry.get("details") or {}
        case = details.get("case") or details.get("about")
        about = f"{case.get('kind')} {case.get('id')}" if isinstance(case, dict) else case
        rows.append([item["index"], entry.get("type"), entry.get("time"), about])
    table(["index", "type", "time", "case"], rows, title="access log")


STAFF_COMMANDS: dict[str, Callable[..., None]] = {
    "login": staff_login, "logout": staff_logout, "whoami": staff_whoami,
    "reports": staff_reports, "report": staff_report, "claim": staff_claim,
    "content": staff_content, "decide": staff_decide, "appeal-decide": staff_appeal_decide,
}  # fmt: skip
LEGAL_COMMANDS: dict[str, Callable[..., None]] = {
    "create": legal_create, "list": legal_list, "show": legal_show, "approve": legal_approve,
    "refuse": legal_refuse, "extend": legal_extend, "release": legal_release, "disclose": legal_disclose,
}  # fmt: skip

