"""Finding 1 and 6: revoking a session reaches the sockets already open with it.

Logout, logout everywhere, a password change (which ends every other session), `keyhold user
disable`, account deletion and token expiry close the affected streams with a 44xx code and a
reason — 4401 when the session ended, 4403 when the account may no longer act — and only those:
another device of the same member keeps its stream. A frame arriving after the revocation is
refused and never stored. (Suspension and ban by a moderator: test_revocation_moderation.py.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hostile_helpers import http, login_token, open_stream

from conftest import PASSWORD, Server, keyhold_cli, new_member, start_server, stop_server
from staff_helpers import cli_env

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
