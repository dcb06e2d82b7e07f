"""Operator commands as a newcomer meets them: `serve` on a busy port, a lost authenticator,
output that survives a pipe."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pyotp
import pytest

from conftest import Server, free_port, keyhold_cli
from keyhold.sdk import KeyholdError, StaffClient
from staff_helpers import STAFF_PASSWORD, TOTP_LINE, add_staff, cli_env


def test_serve_on_a_busy_port_says_so_before_touching_the_data_dir(tmp_path: Path) -> None:
    home = tmp_path / "kh"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        result = keyhold_cli("serve", "--home", str(home), "--port", str(port), check=False)
    assert result.returncode == 1, result
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout and "Errno" not in result.stderr
    assert "serving" not in result.stdout.lower()  # no banner for a server that never ran
    assert not home.exists()  # nothing initialized for it


async def test_totp_reset_replaces_the_second_factor_and_ends_staff_sessions(
    sqlite_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sqlite_server
    monkeypatch.delenv("COLUMNS", raising=False)  # output to a pipe, no width given
    old_secret = add_staff(server, "lost_phone", "moderator", "us")
    before = await StaffClient.login(server.url, "lost_phone", STAFF_PASSWORD, pyotp.TOTP(old_secret).now())
    await before.me()

    reset = keyhold_cli(
        "staff",
        "totp-reset",
        "lost_phone",
        "--home",
        str(server.home),
        env={k: v for k, v in cli_env(server).items() if k != "COLUMNS"},
    )
    assert "1 staff session(s) ended" in reset.stdout, reset.stdout
    found = TOTP_LINE.search(reset.stdout)
    assert found, reset.stdout
    new_secret = found.group(1)
    assert new_secret != old_secret
    # Piped, Rich wraps nothing: the long otpauth URI stays on one line, whole.
    uri = re.search(r"^otpauth URI: (otpauth://\S+)$", reset.stdout, re.MULTILINE)
    assert uri and f"secret={new_secret}" in uri.group(1) and "issuer=" in uri.group(1), reset.stdout

    with pytest.raises(KeyholdError) as ended:
        await before.me()
    assert ended.value.status == 401
    with pytest.raises(KeyholdError) as old_code:
        await StaffClient.login(server.url, "lost_phone", STAFF_PASSWORD, pyotp.TOTP(old_secret).now())
    assert old_code.value.status == 401
    after = await StaffClient.login(server.url, "lost_phone", STAFF_PASSWORD, pyotp.TOTP(new_secret).now())
    assert (await after.me())["username"] == "lost_phone"
    await after.close()
    await before.close()

    unknown = keyhold_cli(
        "staff", "totp-reset", "nobody_here", "--home", str(server.home), env=cli_env(server), check=False
    )
    assert unknown.returncode == 1 and "no such staff account" in unknown.stderr
