"""Finding 1, by a moderator: a ban closes the offender's open streams (4403), and the
reporter's stream stays open. (A suspension leaves them open for reading: test_enforcement.py.)"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pyotp
import pytest

from conftest import Server, new_member
from hostile_helpers import http, open_stream
from keyhold.sdk import Client, StaffClient
from staff_helpers import STAFF_PASSWORD, server_with_staff


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def moderated_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str]]:
    with server_with_staff(tmp_path_factory, "moderated", request.param, {"mod_revoke": ("moderator", "us")}) as (server, secrets):
        yield server, secrets["mod_revoke"]


@pytest.fixture(scope="module")
async def moderator(moderated_server: tuple[Server, str]) -> AsyncIterator[StaffClient]:
    server, secret = moderated_server
    staff = await StaffClient.login(server.url, "mod_revoke", STAFF_PASSWORD, pyotp.TOTP(secret).at(time.time()))
    yield staff
    await staff.close()


async def reported(server: Server, moderator: StaffClient) -> tuple[Client, Client, int]:
    """reporter, offender and the claimed case about one of the offender's messages."""
    reporter, offender = await new_member(server), await new_member(server)
    conv = await reporter.start_conversation([offender.username])
    message = await offender.send(conv.id, "something a moderator will act on")
    async with http(server, reporter.token) as client:
        response = await client.post(
            "/reports", json={"conversation_id": conv.id, "message_ids": [message.id], "category": "harassment"}
        )
    assert response.status_code == 201, response.text
    case_id = int(response.json()["id"])
    await moderator.claim(case_id)
    return reporter, offender, case_id


@pytest.mark.parametrize("action", ["ban"])
async def test_a_ban_closes_the_offenders_stream(
    moderated_server: tuple[Server, str], moderator: StaffClient, action: str
) -> None:
    server, _ = moderated_server
    reporter, offender, case_id = await reported(server, moderator)
    offender_stream = await open_stream(server, offender.token)
    reporter_stream = await open_stream(server, reporter.token)

    await moderator.decide(case_id, action, suspend_hours=24 if action == "suspend" else None)

    code, reason = await offender_stream.closed()
    assert code == 4403 and reason, (code, reason)
    outcome = await reporter_stream.next_frame("report.outcome")
    assert outcome["action"] == action
    await reporter_stream.close()
    await reporter.close()
    await offender.close()
