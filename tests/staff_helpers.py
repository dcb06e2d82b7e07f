"""Staff accounts for tests: made with the real `keyhold staff add` beside a running server."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager

import pyotp
import pytest

from conftest import Server, keyhold_cli, start_server, stop_server
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


def add_all_staff(server: Server, staff: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Staff accounts made with the CLI, a few at a time."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(lambda n: (n, add_staff(server, n, *staff[n])), staff))


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
    tmp_path_factory: pytest.TempPathFactory, name: str, backend: str, staff: dict[str, tuple[str, str]]
) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server of its own with these staff (name: (role, region)); their TOTP secrets."""
    server = start_server(tmp_path_factory.mktemp(name) / "kh", backend)
    try:
        yield server, add_all_staff(server, staff)
    finally:
        stop_server(server)


@asynccontextmanager
async def signed_in(server: Server, secrets: dict[str, str]) -> AsyncIterator[dict[str, StaffClient]]:
    """Every staff member signed in once (a TOTP code is accepted once per step)."""
    staff = await login_all(server, secrets)
    try:
        yield staff
    finally:
        for client in staff.values():
            await client.close()
