"""Finding 7: the smaller leaks.

Logs carry no query strings and no tracebacks for clients that simply go away; error details
never echo what was submitted; a staff member with a live case cannot tell a missing message
id from one out of scope; the public transparency report covers ended periods only; a former
member's retry gets the same 404 as any send to a conversation they left; attachments are
served so that a browser never renders them as a page.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from conftest import Server, keyhold_cli, new_member, start_server, stop_server
from hostile_helpers import assert_problem, http, ws_url
from keyhold.sdk import Client, StaffClient
from staff_helpers import signed_in, staff_server_fixture

STAFF = {"mod_leaks": ("moderator", "us"), "audit_leaks": ("auditor", "us"), "legal_leaks": ("legal", "us")}


leaky = staff_server_fixture("leaks", STAFF)


@dataclass
class World:
    server: Server
    staff: dict[str, StaffClient]


@pytest.fixture(scope="module")
async def world(leaky: tuple[Server, dict[str, str]]) -> AsyncIterator[World]:
    server, secrets = leaky
    async with signed_in(server, secrets) as staff:
        yield World(server, staff)


def marker() -> str:
    return "zq" + uuid.uuid4().hex[:12]


# -- logs -------------------------------------------------------------------------------------


async def test_websocket_access_lines_carry_no_query_string(world: World) -> None:
    alice = await new_member(world.server)
    secret = marker()
    async with websockets.connect(
        ws_url(world.server, f"since=latest&token={secret}"),
        additional_headers={"Authorization": f"Bearer {alice.token}"},
    ) as ws:
        await ws.recv()  # ready: the connection was accepted (and its access line written)
    await asyncio.sleep(0.5)
    assert secret not in world.server.log()
    await alice.close()


async def test_a_client_gone_before_authenticating_leaves_no_traceback(world: World) -> None:
    for _ in range(3):
        ws = await websockets.connect(ws_url(world.server, "since=0"))
        await ws.close()
    await asyncio.sleep(1.0)  # let the server notice the three departures
    log = world.server.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


# -- error details ------------------------------------------------------------------------------


async def test_error_details_never_echo_submitted_values(world: World) -> None:
    server = world.server
    taken = marker()
    alice = await Client.register(server.url, taken, "correct horse battery", birthdate="1990-05-17")
    bob = await new_member(server)
    group = await alice.start_conversation([bob.username], title="a group")
    unknown = marker()
    async with http(server, alice.token) as member, http(server) as anonymous:
        answers = {
            "register a taken name": await anonymous.post(
                "/accounts",
                json={"username": taken, "password": "correct horse battery", "birthdate": "1990-05-17", "region": "us"},
            ),
            "profile": await member.get(f"/users/{unknown}"),
            "follow": await member.put(f"/following/{unknown}"),
            "start": await member.post("/conversations", json={"members": [unknown]}),
            "add": await member.post(f"/conversations/{group.id}/members", json={"members": [unknown]}),
            "send an unknown attachment": await member.post(
                f"/conversations/{group.id}/messages", json={"text": "", "attachment_id": unknown}
            ),
            "download": await member.get(f"/attachments/{unknown}"),
        }
    async with http(server, world.staff["legal_leaks"].token) as legal:
        answers["legal targets"] = await legal.post(
            "/staff/legal",
            json={
                "agency": "Agency", "officer": "Officer", "contact": "o@agency.example", "country": "US",
                "process": "subpoena", "targets": [unknown], "date_from": "2026-01-01", "date_to": "2026-01-02",
                "categories": ["subscriber_info"], "document_base64": "JVBERi0xLjQ=",
            },
        )  # fmt: skip
    for what, response in answers.items():
        assert 400 <= response.status_code < 500, (what, response.text)
        assert taken not in response.text and unknown not in response.text, (what, response.text)
    await alice.close()
    await bob.close()


# -- staff with a live case ----------------------------------------------------------------------


async def test_a_case_read_answers_alike_for_a_missing_id_and_one_out_of_scope(world: World) -> None:
    server, moderator = world.server, world.staff["mod_leaks"]
    reporter, offender = await new_member(server), await new_member(server)
    conv = await reporter.start_conversation([offender.username])
    reported = await offender.send(conv.id, "reported")
    elsewhere = await offender.start_conversation([(await new_member(server)).username])
    foreign = await offender.send(elsewhere.id, "in another conversation")
    async with http(server, reporter.token) as client:
        created = await client.post(
            "/reports", json={"conversation_id": conv.id, "message_ids": [reported.id], "category": "spam"}
        )
    case_id = int(created.json()["id"])
    await moderator.claim(case_id)

    async with http(server, moderator.token) as staff:
        missing = await staff.post(f"/staff/cases/{case_id}/read", json={"message_ids": [foreign.id + 7919], "reason": "r"})
        out_of_scope = await staff.post(f"/staff/cases/{case_id}/read", json={"message_ids": [foreign.id], "reason": "r"})

    assert assert_problem(missing, 403)["detail"] == assert_problem(out_of_scope, 403)["detail"]
    await reporter.close()
    await offender.close()


# -- transparency --------------------------------------------------------------------------------


def current_half(today: dt.date) -> str:
    return f"{today.year}-H{1 if today.month <= 6 else 2}"


def ended_half(today: dt.date) -> str:
    return f"{today.year}-H1" if today.month > 6 else f"{today.year - 1}-H2"


async def test_the_public_report_covers_only_ended_periods(world: World) -> None:
    today = dt.datetime.now(dt.UTC).date()
    async with http(world.server) as public, http(world.server, world.staff["audit_leaks"].token) as auditor:
        for period in (current_half(today), str(today.year)):
            assert_problem(await public.get("/transparency/report", params={"period": period}), 403)
            assert (await auditor.get("/transparency/report", params={"period": period})).status_code == 200
        assert (await public.get("/transparency/report", params={"period": ended_half(today)})).status_code == 200


# -- membership before idempotency ---------------------------------------------------------------


async def test_a_former_members_retry_with_an_old_key_is_404(world: World) -> None:
    server = world.server
    alice, bob, carol = await new_member(server), await new_member(server), await new_member(server)
    group = await alice.start_conversation([bob.username, carol.username], title="three")
    await carol.send(group.id, "before leaving", idempotency_key="carol-1")
    await carol.leave(group.id)

    async with http(server, carol.token) as client:
        retry = await client.post(f"/conversations/{group.id}/messages", json={"text": "before leaving", "idempotency_key": "carol-1"})
        fresh = await client.post(f"/conversations/{group.id}/messages", json={"text": "x", "idempotency_key": "carol-2"})

    assert_problem(retry, 404)
    assert retry.json()["detail"] == assert_problem(fresh, 404)["detail"]
    for client in (alice, bob, carol):
        await client.close()


# -- attachments ---------------------------------------------------------------------------------

PAGE = b"<html><script>alert(document.cookie)</script></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")


@pytest.mark.parametrize(
    ("declared", "data", "served", "inline"),
    [
        ("text/html", PAGE, "application/octet-stream", False),
        ("image/svg+xml", SVG, "application/octet-stream", False),
        ("application/javascript", b"alert(1)", "application/octet-stream", False),
        ("image/png", PNG, "image/png", True),
    ],
)
async def test_attachments_are_served_safely(
    world: World, declared: str, data: bytes, served: str, inline: bool
) -> None:
    alice, bob = await new_member(world.server), await new_member(world.server)
    conv = await alice.start_conversation([bob.username])
    sent = await alice.send_file(conv.id, data, "file", content_type=declared)
    assert sent.attachment is not None

    async with http(world.server, bob.token) as client:
        response: httpx.Response = await client.get(f"/attachments/{sent.attachment.id}")

    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"].split(";")[0] == served
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("inline" if inline else "attachment"), disposition
    await alice.close()
    await bob.close()



@pytest.fixture(scope="module")
def debug_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("debug-log") / "kh", "sqlite", ("--log-level", "debug"))
    yield server
    stop_server(server)


async def test_even_debug_logs_carry_no_token_frame_or_query(debug_server: Server) -> None:
    alice, bob = await new_member(debug_server), await new_member(debug_server)
    conv = await alice.start_conversation([bob.username])
    query, text = marker(), "words nobody logs " + marker()
    async with websockets.connect(
        ws_url(debug_server, f"since=latest&q={query}"),
        additional_headers={"Authorization": f"Bearer {bob.token}"},
    ) as ws:
        await ws.recv()  # ready
        await alice.send(conv.id, text)
        await ws.recv()  # the message, as a frame
        await ws.send('{"type":"ping","ref":"' + query + '"}')
        await ws.recv()
    await asyncio.sleep(0.5)
    log = debug_server.log()
    assert '"WebSocket /api/v1/stream" [accepted]' in log  # debug does log the handshake ...
    for secret in (bob.token, alice.token, query, text):
        assert secret not in log  # ... but no token, query, frame or text
    await alice.close()
    await bob.close()


def test_serve_refuses_settings_that_would_leak_or_let_clients_name_their_address(tmp_path: Path) -> None:
    """`--log-level trace` (uvicorn's, which logs whole requests, query strings with them) and
    `trusted_proxies = "*"` (every client could name its own address and escape the sign-in
    throttle) are refused before anything starts."""
    home = str(tmp_path / "kh")
    trace = keyhold_cli("serve", "--home", home, "--port", "9", "--log-level", "trace", check=False)
    assert trace.returncode == 2 and "trace" in trace.stderr, trace.stderr
    star = keyhold_cli("serve", "--home", home, "--port", "9", env={"KEYHOLD_TRUSTED_PROXIES": "*"}, check=False)
    assert star.returncode != 0 and "trusted_proxies" in star.stderr, (star.stdout, star.stderr)
