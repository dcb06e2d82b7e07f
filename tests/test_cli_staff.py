"""Staff workflows from the terminal (`keyhold staff|legal|audit …`) against a real server.

Each staff member logs in once (a TOTP code is accepted once per 30 s step per account) and
keeps their own `--session` file; every command is a real `keyhold` subprocess over the API.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pyotp

from conftest import TEST_ENV, Server, new_member
from staff_helpers import STAFF_PASSWORD, add_all_staff_cli, cli_env


def day(offset_days: int) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=offset_days)).date().isoformat()


def cli(
    server: Server, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyhold", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **TEST_ENV, **cli_env(server), **(env or {})},
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def row_of(table: str, first_cell: str) -> str:
    """The table line whose first cell is `first_cell`."""
    rows = [line for line in table.splitlines() if line.strip("│┃ ").split(" ", 1)[0] == first_cell]
    assert len(rows) == 1, table
    return rows[0]


def login(server: Server, name: str, secret: str, session: Path, find_server: str = "--url") -> None:
    """Sign in, naming the server by `--url`, `$KEYHOLD_URL`, or only `$KEYHOLD_PORT` (this machine)."""
    where: tuple[str, ...] = ("--url", server.url) if find_server == "--url" else ()
    env = {"KEYHOLD_URL": server.url} if find_server == "KEYHOLD_URL" else {}
    if find_server == "KEYHOLD_PORT":
        env = {"KEYHOLD_PORT": server.url.rsplit(":", 1)[1]}
    args = ("--username", name, "--password-stdin", "--totp", pyotp.TOTP(secret).now(), "--session", str(session))
    ok(cli(server, "staff", "login", *where, *args, stdin=STAFF_PASSWORD + "\n", env=env))


async def test_staff_workflows_from_the_terminal(sqlite_server: Server, tmp_path: Path) -> None:
    server = sqlite_server
    secrets = add_all_staff_cli(
        server,
        {
            "cli_mod": ("moderator", "us"),
            "cli_legal_a": ("legal", "us"),
            "cli_legal_b": ("legal", "us"),
            "cli_auditor": ("auditor", "us"),
        },
    )
    sessions = {name: tmp_path / f"{name}.json" for name in secrets}
    find_server = {"cli_legal_a": "KEYHOLD_URL", "cli_legal_b": "KEYHOLD_PORT"}
    for name, secret in secrets.items():
        login(server, name, secret, sessions[name], find_server.get(name, "--url"))
        assert orjson.loads(sessions[name].read_bytes())["url"] == server.url
    mode = stat.S_IMODE(sessions["cli_mod"].stat().st_mode)
    assert mode == 0o600, oct(mode)
    stored = orjson.loads(sessions["cli_mod"].read_bytes())
    assert {"url", "token", "username", "role", "region", "expires_at"} <= set(stored)
    assert stored["role"] == "moderator" and stored["region"] == "us"

    # A member reports a message.
    a, b = await new_member(server), await new_member(server)
    conv = await a.start_conversation([b.username])
    message = await b.send(conv.id, "you will regret this, cli-test")
    case_id = str((await a.report(conv.id, [message.id], "harassment"))["id"])

    mod = ("--session", str(sessions["cli_mod"]))
    assert "cli_mod" in ok(cli(server, "staff", "whoami", *mod))
    assert case_id in ok(cli(server, "staff", "reports", "--status", "open", *mod))
    assert "harassment" in ok(cli(server, "staff", "report", case_id, *mod))
    assert "assigned to cli_mod" in ok(cli(server, "staff", "claim", case_id, *mod))
    # Tables name people: the assignee by staff username, senders by member username.
    claimed = row_of(ok(cli(server, "staff", "reports", *mod)), case_id)
    assert "cli_mod" in claimed, claimed
    content = ok(cli(server, "staff", "content", case_id, "--reason", "review of a report", *mod))
    line = row_of(content, str(message.id))
    assert "you will regret this, cli-test" in line and b.username in line, content
    assert "decided" in ok(
        cli(server, "staff", "decide", case_id, "--action", "warn", "--note", "be kind", *mod)
    )
    # A decided case opens nothing any more: a refusal, exit 1, with the server's reason.
    again = cli(server, "staff", "content", case_id, "--reason", "again", *mod)
    assert again.returncode == 1 and "decided" in again.stderr

    # Legal: A records a search warrant, A cannot approve it (four eyes), B can and discloses.
    document = tmp_path / "warrant.pdf"
    document.write_bytes(b"%PDF-1.4 search warrant")
    legal_a = ("--session", str(sessions["cli_legal_a"]))
    legal_b = ("--session", str(sessions["cli_legal_b"]))
    created = ok(
        cli(
            server,
            "legal",
            "create",
            "--agency",
            "Federal Bureau of Investigation",
            "--officer",
            "Special Agent Dana Scully",
            "--contact",
            "dscully@fbi.example",
            "--country",
            "US",
            "--process",
            "search_warrant",
            "--target",
            b.username,
            "--from",
            day(-1),
            "--to",
            day(1),
            "--category",
            "message_content",
            "--document",
            str(document),
            *legal_a,
        )
    )
    assert "pending" in created, created
    legal_id = created.split("case ", 1)[1].split(":", 1)[0]
    pending = row_of(ok(cli(server, "legal", "list", "--status", "pending", *legal_b)), legal_id)
    assert b.username in pending and "cli_legal_a" in pending, pending  # the target and who recorded it
    assert "search_warrant" in ok(cli(server, "legal", "show", legal_id, *legal_b))
    own = cli(server, "legal", "approve", legal_id, *legal_a)
    assert own.returncode == 1 and "four eyes" in own.stderr, own.stderr
    assert "approved" in ok(cli(server, "legal", "approve", legal_id, *legal_b))
    approved = row_of(ok(cli(server, "legal", "list", *legal_b)), legal_id)
    assert "cli_legal_a" in approved and "cli_legal_b" in approved, approved
    out = tmp_path / "package.json"
    ok(cli(server, "legal", "disclose", legal_id, "--out", str(out), *legal_b))
    package = orjson.loads(out.read_bytes())
    assert package["signature"]["sha256"] and package["signature"]["value"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    # The auditor sees the content reads in the access log.
    entries = ok(
        cli(server, "audit", "entries", "--limit", "1000", "--session", str(sessions["cli_auditor"]))
    )
    assert "content_accessed" in entries and "disclosure_produced" in entries

    # Logging out ends the session on the server and removes the file.
    ok(cli(server, "staff", "logout", *mod))
    assert not sessions["cli_mod"].exists()
    await a.close()
    await b.close()


def test_a_command_without_a_session_says_log_in_first(sqlite_server: Server, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "session.json"
    for args in (("staff", "reports"), ("legal", "list"), ("audit", "entries")):
        result = cli(sqlite_server, *args, env={"KEYHOLD_STAFF_SESSION": str(missing)})
        assert result.returncode == 1, result
        assert "log in first" in result.stderr and "Traceback" not in result.stderr
    explicit = cli(sqlite_server, "staff", "whoami", "--session", str(missing))
    assert explicit.returncode == 1 and "log in first" in explicit.stderr
