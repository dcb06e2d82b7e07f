"""Finding 1 and 6: revoking a session reaches the sockets already open with it.

Logout, logout everywhere, a password change (which ends every other session), `keyhold user
disable`, account deletion and token expiry close the affected streams with a 44xx code and a
reason — 4401 when the session ended, 4403 when the account may no longer act — and only those:
another device of the same member keeps its stream. A frame arriving after the revocation is
refused and never stored. (Suspension and ban by a moderator: test_revocation_moderation.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from clock_shift import shifted_env
from conftest import PASSWORD, Server, keyhold_cli, new_member, start_server, stop_server, unique
from hostile_helpers import http, login_token, member_in_process, open_stream, service_in_process
from keyhold.clock import now_ms
from keyhold.core import revocation
from keyhold.core.accounts import Member
from keyhold.core.errors import Problem
from keyhold.store import accounts as account_store
from keyhold.store import devices as device_store
from staff_helpers import cli_env

ORIGINAL_REVOKED_SINCE = account_store.revoked_since

NEW_PASSWORD = "a brand new passphrase"


async def test_logout_closes_that_sessions_stream_and_no_other(server: Server) -> None:
    alice, bob = await new_member(server), await new_member(server)
    other_device = await login_token(server, alice.username)
    conv = await alice.start_conversation([bob.username])
    this_one = await open_stream(server, alice.token)
    kept = await open_stream(server, other_device)

    await alice.logout()

    code, reason = await this_one.closed()
    assert code == 4401 and reason, (code, reason)
    await bob.send(conv.id, "for the device still signed in")
    event = await kept.next_frame("message.new")
    assert event["message"]["text"] == "for the device still signed in"
    await kept.close()
    await bob.close()


async def test_logout_everywhere_closes_every_device(server: Server) -> None:
    alice = await new_member(server)
    tokens = [alice.token, await login_token(server, alice.username), await login_token(server, alice.username)]
    streams = [await open_stream(server, token) for token in tokens]

    assert await alice.logout_everywhere() == 3

    for stream in streams:
        code, reason = await stream.closed()
        assert code == 4401 and reason, (code, reason)
    await alice.close()


async def test_password_change_ends_every_other_session_and_its_stream(server: Server) -> None:
    alice, bob = await new_member(server), await new_member(server)
    other_device = await login_token(server, alice.username)
    conv = await alice.start_conversation([bob.username])
    current = await open_stream(server, alice.token)
    other = await open_stream(server, other_device)

    await alice.change_password(PASSWORD, NEW_PASSWORD)

    code, reason = await other.closed()
    assert code == 4401 and reason, (code, reason)
    async with http(server, other_device) as client:
        assert (await client.get("/account")).status_code == 401
    # The session that changed the password goes on, socket included.
    assert (await alice.me())["username"] == alice.username
    await bob.send(conv.id, "after the change")
    assert (await current.next_frame("message.new"))["message"]["text"] == "after the change"
    await current.close()
    await alice.close()
    await bob.close()


async def test_disabling_an_account_closes_its_stream(server: Server) -> None:
    alice = await new_member(server)
    stream = await open_stream(server, alice.token)

    keyhold_cli("user", "disable", alice.username, "--home", str(server.home), env=cli_env(server))

    code, reason = await stream.closed()
    assert code == 4403 and reason, (code, reason)
    await alice.close()


async def test_deleting_the_account_closes_the_other_devices_streams(server: Server) -> None:
    alice = await new_member(server)
    other = await open_stream(server, await login_token(server, alice.username))

    await alice.delete_account(PASSWORD)

    code, reason = await other.closed()
    assert code in (4401, 4403) and reason, (code, reason)
    await alice.close()


async def test_a_frame_sent_after_revocation_is_refused_and_never_stored(server: Server) -> None:
    alice, bob = await new_member(server), await new_member(server)
    conv = await alice.start_conversation([bob.username])
    stream = await open_stream(server, alice.token)
    text = "sent on a socket whose session just ended"

    await alice.logout()
    await stream.send({"type": "send", "ref": "late", "conversation_id": conv.id, "text": text})

    code, _ = await stream.closed()
    assert code == 4401
    assert not [f for f in stream.of_type("ack") if f.get("ref") == "late"], stream.frames
    assert text not in [m.text for m in await bob.history(conv.id)]
    await bob.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def short_token_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("short-tokens") / "kh", request.param, env={"KEYHOLD_TOKEN_TTL_SECONDS": "3"}
    )
    yield srv
    stop_server(srv)


async def test_an_expiring_token_closes_its_stream(short_token_server: Server) -> None:
    alice = await new_member(short_token_server)
    stream = await open_stream(short_token_server, alice.token)

    code, reason = await stream.closed(wait=15)

    assert code == 4401 and "expired" in reason, (code, reason)
    await alice.close()


# -- what the review of the first fix found ---------------------------------------------------



async def test_a_cli_host_whose_clock_is_behind_still_closes_the_stream(server: Server, tmp_path: Path) -> None:
    """`keyhold user disable` from a machine whose clock runs 20 s behind: the revocation is
    stamped by the database's clock, so the server's watch still sees it."""
    alice = await new_member(server)
    stream = await open_stream(server, alice.token)
    skewed = shifted_env(tmp_path / "shim", -20)

    keyhold_cli("user", "disable", alice.username, "--home", str(server.home), env={**cli_env(server), **skewed})

    code, reason = await stream.closed()
    assert code == 4403 and reason, (code, reason)
    await alice.close()


@dataclass(eq=False)
class Watched:
    """An open stream as the revocation watch sees it (the watch needs only these two)."""

    member: Member
    closed_with: tuple[int, str] | None = None

    def revoke(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


class StorageAway(ConnectionRefusedError):
    pass


async def _away(*_args: object) -> NoReturn:
    raise StorageAway("the database is restarting")


async def closed_in_time(stream: Watched, wait: float = 10.0) -> tuple[int, str]:
    """The close the watch gave the stream (a bound on liveness, not a measurement)."""
    async with asyncio.timeout(wait):
        while stream.closed_with is None:
            await asyncio.sleep(0.05)
    return stream.closed_with


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_an_expiry_during_an_outage_still_closes_the_stream(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session expires while storage is away, so the watch's sweeps fail then; once storage
    is back, the stream is closed all the same."""
    async with service_in_process(tmp_path / "kh", backend, token_ttl_seconds=1) as svc:
        alice = await member_in_process(svc, unique("a"))
        stream = Watched(alice)
        monkeypatch.setattr(account_store, "revoked_since", _away)
        svc.revocations.watch(stream)
        await asyncio.sleep(max(0.0, (alice.session_expires_ms - now_ms()) / 1000) + 0.6)  # sweeps fail
        assert stream.closed_with is None

        monkeypatch.setattr(account_store, "revoked_since", ORIGINAL_REVOKED_SINCE)

        assert (await closed_in_time(stream))[0] == 4401


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_revocation_during_a_long_outage_still_closes_the_stream(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A logout while every sweep fails for longer than the look-back (shortened here to
    50 ms): once storage is back, the stream is closed all the same."""
    async with service_in_process(tmp_path / "kh", backend) as svc:
        alice = await member_in_process(svc, unique("a"))
        stream = Watched(alice)
        svc.revocations.watch(stream)
        await asyncio.sleep(0.6)  # a few good sweeps: the watch has a checkpoint
        monkeypatch.setattr(revocation, "LOOKBACK_MS", 50)
        monkeypatch.setattr(account_store, "revoked_since", _away)

        await svc.accounts.logout(alice)
        await asyncio.sleep(0.8)  # sweeps fail, for far longer than the look-back
        assert stream.closed_with is None
        monkeypatch.setattr(account_store, "revoked_since", ORIGINAL_REVOKED_SINCE)

        assert (await closed_in_time(stream))[0] == 4401


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_sign_in_checked_against_the_old_password_gets_no_session(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sign-in whose password was verified just before a password change commits must not
    end with a session: the change ends every other session, this one included. The sign-in
    is held as its transaction starts, before its first write (on SQLite a write takes the
    database's lock, which the change would then wait for)."""
    async with service_in_process(tmp_path / "kh", backend) as svc:
        alice = await member_in_process(svc, unique("a"))
        verified, proceed = asyncio.Event(), asyncio.Event()
        real_sign_in_on = device_store.sign_in_on

        async def held_sign_in_on(*args: Any) -> bool:
            verified.set()
            await proceed.wait()  # the change commits here
            return await real_sign_in_on(*args)

        monkeypatch.setattr(device_store, "sign_in_on", held_sign_in_on)
        signing_in = asyncio.create_task(svc.accounts.login(alice.username, PASSWORD, address="127.0.0.9"))
        await verified.wait()
        monkeypatch.undo()
        await svc.accounts.change_password(alice, PASSWORD, NEW_PASSWORD)
        proceed.set()

        with pytest.raises(Problem) as refused:
            await signing_in
        assert refused.value.status == 401
