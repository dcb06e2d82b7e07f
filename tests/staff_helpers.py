"""Staff accounts for tests, beside a running server.

`add_staff` / `add_all_staff_cli` run the real `keyhold staff add` (one process per account):
test_cli_staff.py and test_cli_operator.py use them, so the command itself stays tested.
`add_all_staff` (and `server_with_staff`) makes the accounts through the same service call
that command makes (`svc.governance.staff.add`, on the same data dir and database), in this
process and with one start of the services for all of them: a `keyhold` process costs about
two seconds of CPU at start-up (imports, services), and the governance tests make dozens of
accounts. What the accounts are (argon2id hash, sealed TOTP secret, role, region) is the same
either way.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pyotp
import pytest

from conftest import Server, keyhold_cli, settings_overrides, start_server, stop_server
from keyhold.sdk import StaffClient

STAFF_PASSWORD = "staff-password-123"
TOTP_LINE = re.compile(r"TOTP secret \(shown once\): ([A-Z2-7]+)")


def cli_env(server: Server) -> dict[str, str]:
    """Environment for a `keyhold` command beside the running server (same database)."""
    return {
        "COLUMNS": "200",
        **({"KEYHOLD_DATABASE_URL": server.database_url} if server.database_url else {}),
    }


def add_staff(server: Server, name: str, role: str, region: str) -> str:
    """`keyhold staff add` beside the running server; returns the TOTP secret it prints once."""
    out = keyhold_cli(
        "staff", "add", name, "--role", role, "--region", region, "--home", str(server.home),
        "--password", STAFF_PASSWORD, env=cli_env(server),
    ).stdout  # fmt: skip
    found = TOTP_LINE.search(out)
    assert found, out
    return found.group(1)


def add_all_staff_cli(server: Server, staff: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Staff accounts made with the CLI, a few at a time."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(lambda n: (n, add_staff(server, n, *staff[n])), staff))


def create_staff(home: Path, database_url: str, staff: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Staff accounts (name: (role, region)) made by the services of the data dir `home` in this
    process, as `keyhold staff add` makes each; their TOTP secrets. The settings are those the
    CLI would run with beside the test servers (TEST_ENV, the database URL), with scanning off:
    nothing here scans a message, so the scanner is not built."""
    from keyhold.app import start_keyhold
    from keyhold.config import load_settings

    overrides = {**settings_overrides(), "scanning": "off"}
    settings = load_settings(home, **overrides, database_url=database_url or None)

    async def run() -> dict[str, str]:
        svc = await start_keyhold(settings)
        try:
            secrets = {}
            for name, (role, region) in staff.items():
                made = await svc.governance.staff.add(name, STAFF_PASSWORD, role, region)
                secrets[name] = str(made["totp_secret"])
            return secrets
        finally:
            await svc.stop()

    # In a thread of its own: the caller may be a coroutine on the test's running event loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run()).result()


def add_all_staff(server: Server, staff: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Staff accounts (name: (role, region)) beside the running server; their TOTP secrets."""
    return create_staff(server.home, server.database_url, staff)


async def login_all(server: Server, secrets: dict[str, str], shift_s: int = 0) -> dict[str, StaffClient]:
    """One signed-in client per staff member (a TOTP code is accepted once per step);
    `shift_s` matches a server whose clock runs that far ahead."""
    return {
        name: await StaffClient.login(
            server.url, name, STAFF_PASSWORD, pyotp.TOTP(secret).at(time.time() + shift_s)
        )
        for name, secret in secrets.items()
    }


@contextmanager
def server_with_staff(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    backend: str,
    staff: dict[str, tuple[str, str]],
    files: dict[str, str] | None = None,
) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server of its own with these staff (name: (role, region)); their TOTP secrets.
    `files` (name: text) are written into its data dir before it first starts (the rules)."""
    home = tmp_path_factory.mktemp(name) / "kh"
    home.mkdir()
    for file_name, text in (files or {}).items():
        (home / file_name).write_text(text)
    server = start_server(home, backend)
    try:
        yield server, add_all_staff(server, staff)
    finally:
        stop_server(server)


def staff_server_fixture(
    name: str, staff: dict[str, tuple[str, str]], files: dict[str, str] | None = None
) -> Any:
    """A module fixture: a server of its own on each backend (SQLite, then PostgreSQL) with
    these staff (name: (role, region)) and `files` in its data dir; it gives (server, their
    TOTP secrets)."""

    @pytest.fixture(scope="module", params=["sqlite", "postgres"])
    def served(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[tuple[Server, dict[str, str]]]:
        with server_with_staff(tmp_path_factory, name, request.param, staff, files) as found:
            yield found

    return served


@asynccontextmanager
async def signed_in(server: Server, secrets: dict[str, str]) -> AsyncIterator[dict[str, StaffClient]]:
    """Every staff member signed in once (a TOTP code is accepted once per step)."""
    staff = await login_all(server, secrets)
    try:
        yield staff
    finally:
        for client in staff.values():
            await client.close()
