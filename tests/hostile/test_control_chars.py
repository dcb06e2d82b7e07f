"""Findings 3 and 5: NUL and other control characters, and one member's bad send.

Every string a client can submit — JSON body fields, path and query parameters, WebSocket
frames — is checked at the edge, the same way on SQLite and PostgreSQL: C0 and C1 control
characters (and DEL) get a 422 that names the field, and nothing is written. Message text and
a few free-text fields may keep newlines and tabs. Behind that, the group commit isolates a
send that fails in the database, so that every other send of its batch commits, and SQL
parameters never reach the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from conftest import PASSWORD, Server, new_member, unique
from db_snapshot import snapshot
from hostile_helpers import assert_problem, http, member_in_process, open_stream, service_in_process
from keyhold.core.errors import Problem
from keyhold.core.messages import SendRequest, Sent
from keyhold.sdk import Client, StaffClient
from staff_helpers import STAFF_PASSWORD, server_with_staff

NUL = "a\x00b"
LONE = "\ud800"  # an unpaired surrogate
NUL_IN_PATH = "a%00b"  # as it travels in a URL path (httpx refuses a raw NUL there)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def edge_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    with server_with_staff(tmp_path_factory, "edge", request.param, {"staff_edge": ("legal", "us")}) as (server, secrets):
        yield server, secrets["staff_edge"]


@dataclass
class World:
    server: Server
    member: Client
    peer: Client
    staff: StaffClient
    values: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
async def world(edge_server: tuple[Server, str]) -> AsyncIterator[World]:
    server, secret = edge_server
    member, peer = await new_member(server), await new_member(server)
    group = await member.start_conversation([peer.username], title="edge cases")
    staff = await StaffClient.login(server.url, "staff_edge", STAFF_PASSWORD, pyotp.TOTP(secret).at(time.time()))
    yield World(server, member, peer, staff, {"cid": group.id})
    for client in (member, peer, staff):
        await client.close()


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    field: str  # how the problem names the field
    body: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    auth: str = "member"  # member | staff | none


def register(**changes: str) -> dict[str, Any]:
    return {"username": unique("edge"), "password": PASSWORD, "birthdate": "1990-05-17", "region": "us", **changes}


LEGAL = {
    "agency": "Agency",
    "officer": "Officer",
    "contact": "officer@agency.example",
    "country": "US",
    "process": "subpoena",
    "targets": ["nobody_here"],
    "date_from": "2026-01-01",
    "date_to": "2026-01-02",
    "categories": ["subscriber_info"],
    "document_base64": "JVBERi0xLjQ=",
}

CASES = [
    Case("register-username-nul", "POST", "/accounts", "username", register(username=NUL), auth="none"),
    Case("register-username-newline", "POST", "/accounts", "username", register(username="alice\n"), auth="none"),
    Case("register-password-nul", "POST", "/accounts", "password", register(password="pass\x00word!"), auth="none"),
    Case("register-birthdate-nul", "POST", "/accounts", "birthdate", register(birthdate="1990-05\x007"), auth="none"),
    Case("register-region-nul", "POST", "/accounts", "region", register(region="u\x00s"), auth="none"),
    Case("login-username-nul", "POST", "/sessions", "username", {"username": NUL, "password": PASSWORD}, auth="none"),
    Case("login-password-nul", "POST", "/sessions", "password", {"username": "x_y_z", "password": NUL * 5}, auth="none"),
    Case(
        "staff-login-username-nul", "POST", "/staff/sessions", "username",
        {"username": NUL, "password": STAFF_PASSWORD, "totp": "123456"}, auth="none",
    ),
    Case(
        "staff-login-totp-nul", "POST", "/staff/sessions", "totp",
        {"username": "staff_edge", "password": STAFF_PASSWORD, "totp": "12345\x00"}, auth="none",
    ),
    Case("display-name-nul", "PATCH", "/account", "display_name", {"display_name": NUL}),
    Case("display-name-c1", "PATCH", "/account", "display_name", {"display_name": "a\u0085b"}),
    Case("display-name-del", "PATCH", "/account", "display_name", {"display_name": "a\x7fb"}),
    Case("display-name-newline", "PATCH", "/account", "display_name", {"display_name": "two\nlines"}),
    Case(
        "new-password-nul", "PUT", "/account/password", "new_password",
        {"current_password": PASSWORD, "new_password": "new\x00password"},
    ),
    Case("start-member-nul", "POST", "/conversations", "members.0", {"members": [NUL]}),
    Case("start-title-nul", "POST", "/conversations", "title", {"members": ["someone"], "title": "t\x00"}),
    Case("add-member-nul", "POST", "/conversations/{cid}/members", "members.0", {"members": [NUL]}),
    Case("text-nul", "POST", "/conversations/{cid}/messages", "text", {"text": NUL}),
    Case("text-c1", "POST", "/conversations/{cid}/messages", "text", {"text": "a\u009b31mred"}),
    Case("text-escape", "POST", "/conversations/{cid}/messages", "text", {"text": "a\x1b[2Jb"}),
    Case(
        "idempotency-key-nul", "POST", "/conversations/{cid}/messages", "idempotency_key",
        {"text": "hi", "idempotency_key": NUL},
    ),
    Case(
        "attachment-id-nul", "POST", "/conversations/{cid}/messages", "attachment_id",
        {"text": "hi", "attachment_id": NUL},
    ),
    Case("profile-path-nul", "GET", f"/users/{NUL_IN_PATH}", "path.username"),
    Case("follow-path-nul", "PUT", f"/following/{NUL_IN_PATH}", "path.username"),
    Case("unfollow-path-nul", "DELETE", f"/following/{NUL_IN_PATH}", "path.username"),
    Case(
        "upload-filename-nul", "POST", "/conversations/{cid}/attachments", "header.Keyhold-Filename",
        headers={"Keyhold-Filename": "a%00b.txt"},
    ),
    Case(
        "upload-filename-escape", "POST", "/conversations/{cid}/attachments", "header.Keyhold-Filename",
        headers={"Keyhold-Filename": "%1B%5B31mred.txt"},
    ),
    Case(
        "upload-filename-lone-surrogate", "POST", "/conversations/{cid}/attachments", "header.Keyhold-Filename",
        headers={"Keyhold-Filename": "%ED%A0%80.txt"},
    ),
    Case(
        "report-comment-nul", "POST", "/reports", "comment",
        {"conversation_id": 1, "message_ids": [1], "category": "spam", "comment": NUL},
    ),
    Case(
        "report-category-nul", "POST", "/reports", "category",
        {"conversation_id": 1, "message_ids": [1], "category": NUL},
    ),
    Case("appeal-statement-nul", "POST", "/reports/1/appeal", "statement", {"statement": NUL}),
    Case("staff-reason-query-nul", "GET", "/staff/reports/1/content", "query.reason", params={"reason": NUL}, auth="staff"),
    Case("staff-status-query-nul", "GET", "/staff/legal", "query.status", params={"status": NUL}, auth="staff"),
    Case("staff-read-reason-nul", "POST", "/staff/cases/1/read", "reason", {"message_ids": [1], "reason": NUL}, auth="staff"),
    Case("staff-decision-note-nul", "POST", "/staff/reports/1/decision", "note", {"action": "warn", "note": NUL}, auth="staff"),
    Case("legal-agency-nul", "POST", "/staff/legal", "agency", {**LEGAL, "agency": NUL}, auth="staff"),
    Case("legal-target-nul", "POST", "/staff/legal", "targets.0", {**LEGAL, "targets": [NUL]}, auth="staff"),
    Case("legal-refuse-reason-nul", "POST", "/staff/legal/1/refuse", "reason", {"reason": NUL}, auth="staff"),
    # A lone surrogate is valid JSON (`"\ud800"`) but no text: a database cannot store it.
    Case("login-username-surrogate", "POST", "/sessions", "username", {"username": LONE, "password": PASSWORD}, auth="none"),
    Case("login-password-surrogate", "POST", "/sessions", "password", {"username": "x_y_z", "password": LONE * 8}, auth="none"),
    Case(
        "staff-login-surrogate", "POST", "/staff/sessions", "password",
        {"username": "staff_edge", "password": LONE, "totp": "123456"}, auth="none",
    ),
    Case("register-password-surrogate", "POST", "/accounts", "password", register(password="pass" + LONE + "word!"), auth="none"),
    Case("display-name-surrogate", "PATCH", "/account", "display_name", {"display_name": "a" + LONE}),
    Case("title-surrogate", "POST", "/conversations", "title", {"members": ["someone"], "title": LONE}),
    Case("text-surrogate", "POST", "/conversations/{cid}/messages", "text", {"text": "hi " + LONE}),
    Case("idempotency-key-surrogate", "POST", "/conversations/{cid}/messages", "idempotency_key", {"text": "hi", "idempotency_key": LONE}),
    Case(
        "report-comment-surrogate", "POST", "/reports", "comment",
        {"conversation_id": 1, "message_ids": [1], "category": "spam", "comment": LONE},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_control_characters_are_refused_naming_the_field(world: World, case: Case) -> None:
    token = {"member": world.member.token, "staff": world.staff.token, "none": None}[case.auth]
    path = case.path.format(**world.values)
    before = await asyncio.to_thread(snapshot, world.server)

    async with http(world.server, token) as client:
        # Encoded here with JSON escapes (`\u0000`, `\ud800`), as any client may send them.
        body = json.dumps(case.body).encode() if case.body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        headers.update(case.headers or {})
        response = await client.request(case.method, path, content=body, headers=headers, params=case.params)

    problem = assert_problem(response, 422)
    assert case.field in [e["field"] for e in problem.get("errors", [])], problem
    assert "\\u0000" not in response.text and "\x00" not in response.text
    assert await asyncio.to_thread(snapshot, world.server) == before, "a refused request wrote to the database"


async def test_message_text_keeps_newlines_and_tabs(world: World) -> None:
    text = "first line\n\tindented second line"
    sent = await world.member.send(world.values["cid"], text)
    assert sent.text == text
    assert text in [m.text for m in await world.peer.history(world.values["cid"])]


async def test_websocket_frames_with_control_characters_are_refused(world: World) -> None:
    cid = world.values["cid"]
    stream = await open_stream(world.server, world.member.token)
    for ref, frame, named in (
        ("text", {"text": NUL}, "text"),
        ("key", {"text": "hi", "idempotency_key": NUL}, "idempotency_key"),
    ):
        await stream.send({"type": "send", "ref": ref, "conversation_id": cid, **frame})
        error = await stream.next_frame("error")
        assert error["ref"] == ref and error["problem"]["status"] == 422, error
        assert named in error["problem"]["detail"], error
    await stream.send({"type": "ping", "ref": "still-open"})
    assert (await stream.next_frame("pong"))["ref"] == "still-open"
    assert NUL not in [m.text for m in await world.peer.history(cid)]
    await stream.close()


async def test_nul_idempotency_keys_do_not_fail_other_members_sends(world: World) -> None:
    server = world.server
    attacker, victim, peer = await new_member(server), await new_member(server), await new_member(server)
    attacked = await attacker.start_conversation([peer.username])
    honest = await victim.start_conversation([peer.username])

    async def post(client: Client, cid: int, body: dict[str, str]) -> httpx.Response:
        async with http(server, client.token) as raw:
            return await raw.post(f"/conversations/{cid}/messages", json=body)

    sends = []
    for i in range(50):
        sends.append(post(attacker, attacked.id, {"text": f"attack {i}", "idempotency_key": f"k\x00{i}"}))
        sends.append(post(victim, honest.id, {"text": f"honest {i}", "idempotency_key": f"honest-{i}"}))
    answers = await asyncio.gather(*sends)

    attacks, honests = answers[0::2], answers[1::2]
    assert [r.status_code for r in honests] == [201] * 50, [r.text for r in honests if r.status_code != 201]
    assert [r.status_code for r in attacks] == [422] * 50
    history = [m.text for m in await peer.history(honest.id, limit=200)]
    assert sorted(history) == sorted(f"honest {i}" for i in range(50))
    log = server.log()
    assert "[parameters:" not in log and "k\\x00" not in log and "CharacterNotInRepertoire" not in log
    for client in (attacker, victim, peer):
        await client.close()


# -- the group commit isolates a send that fails in the database ---------------------------------


async def test_a_send_that_fails_in_the_database_fails_only_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Core accepts what the edge let through; PostgreSQL refuses an idempotency key longer
    than its column (SQLite does not check lengths), which stands here for any item that fails
    inside a batch. The other 99 sends of the batch commit and are acknowledged."""
    caplog.set_level(logging.INFO)
    async with service_in_process(tmp_path / "kh", "postgres") as svc:
        alice = await member_in_process(svc, unique("iso"))
        bob = await member_in_process(svc, unique("iso"))
        view, _ = await svc.conversations.start(alice, [bob.username], "standard", "", None)
        poison = "p" * 150
        results: dict[int, Sent | Problem] = {}
        # Submitted without a pause: the writer takes them as one batch.
        for i in range(100):
            key = poison + str(i) if i % 10 == 3 else f"good-{i}"
            request = SendRequest(alice.id, alice.username, view["id"], f"message {i}", key)
            svc.messages.submit(request, lambda result, i=i: results.__setitem__(i, result))
        async with asyncio.timeout(60):
            while len(results) < 100:
                await asyncio.sleep(0.01)
        failed = sorted(i for i, r in results.items() if isinstance(r, Problem))
        assert failed == [i for i in range(100) if i % 10 == 3], failed
        assert all(isinstance(results[i], Problem) and results[i].status < 500 for i in failed)  # type: ignore[union-attr]
        async with svc.engine.connect() as conn:
            stored = await svc.messages.history(conn, view["id"], None, None, 200, alice.id)
        assert sorted(m["text"] for m in stored) == sorted(f"message {i}" for i in range(100) if i % 10 != 3)
    assert "[parameters:" not in caplog.text and poison not in caplog.text


async def test_a_failure_after_the_commit_does_not_stop_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug past a committed transaction (here: publishing to the bus raises) answers the
    sends of that batch with a retryable 503 instead of stopping the single writer, which would
    leave every later write waiting for ever. The retry finds the committed message."""
    async with service_in_process(tmp_path / "kh", "sqlite") as svc:
        alice = await member_in_process(svc, unique("wr"))
        bob = await member_in_process(svc, unique("wr"))
        view, _ = await svc.conversations.start(alice, [bob.username], "standard", "", None)

        def broken_publish(*_args: object) -> None:
            raise RuntimeError("a bug in the fan-out")

        monkeypatch.setattr(svc.bus, "publish", broken_publish)
        request = SendRequest(alice.id, alice.username, view["id"], "first", "key-1")
        with pytest.raises(Problem) as refused:
            async with asyncio.timeout(30):
                await svc.messages.send(request)
        assert refused.value.status == 503
        monkeypatch.undo()

        async with asyncio.timeout(30):
            retried = await svc.messages.send(request)
            later = await svc.messages.send(SendRequest(alice.id, alice.username, view["id"], "second", "key-2"))
        async with svc.engine.connect() as conn:
            stored = await svc.messages.history(conn, view["id"], None, None, 10, alice.id)
        assert sorted(m["text"] for m in stored) == ["first", "second"]
        assert retried["id"] != later["id"]
