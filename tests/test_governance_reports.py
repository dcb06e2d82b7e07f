"""Report cases and staff sign-in against a real server (staff made as `keyhold staff add` makes them).

A moderator with a report case reads exactly the reported message and K=10 before and after
it, nothing else; other moderators (not assigned, other region) and closed cases read
nothing. Decisions act on the offender and tell both people; an appeal is heard once, by a
different moderator. Staff sign in with password and TOTP, are locked after five failures,
and their tokens and member tokens never open each other's routes.

Each staff member signs in once per module (a TOTP code is accepted once per 30 s step).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp
import pytest

from conftest import TLS, Server, new_member, raw, start_server, stop_server
from e2ee_helpers import Megolm
from keyhold.sdk import Client, KeyholdError, StaffClient
from staff_helpers import STAFF_PASSWORD, add_all_staff

API = "/api/v1"
K = 10  # report_context_messages default

# name -> (role, region). Every us moderator can be assigned a new case (least loaded first).
STAFF = {
    "mod_a": ("moderator", "us"),
    "mod_b": ("moderator", "us"),
    "mod_c": ("moderator", "us"),
    "mod_eu": ("moderator", "eu"),
    "locky": ("auditor", "us"),  # only used to be locked out
}
US_MODERATORS = ("mod_a", "mod_b", "mod_c")


# -- helpers --------------------------------------------------------------------------------------


def totp(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


def not_a_code(secret: str) -> str:
    """A six-digit code the server will not accept now (outside its ±1 step window)."""
    valid = {totp(secret, d) for d in (-2, -1, 0, 1, 2)}
    return next(c for c in (f"{n:06d}" for n in range(123456, 999999, 7919)) if c not in valid)


def member_auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.token}"}


async def call(base_url: str, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(verify=TLS, base_url=base_url + API, headers=headers, timeout=30) as http:
        return await http.request(method, path, **kw)


async def refused(awaitable: Any, status: int, *needles: str) -> dict[str, Any]:
    """Await a call that must fail with `status`; its problem detail must contain each needle."""
    with pytest.raises(KeyholdError) as caught:
        await awaitable
    assert caught.value.status == status, caught.value.problem
    detail = str(caught.value.problem.get("detail", ""))
    for needle in needles:
        assert needle in detail, detail
    return caught.value.problem


async def stored_events(client: Client) -> list[dict[str, Any]]:
    """Every event stored for the member so far (replayed from seq 0)."""
    out: list[dict[str, Any]] = []
    async with await client.connect(0) as stream:
        await asyncio.wait_for(stream.ready.wait(), 10)
        while True:
            try:
                event = await stream.next_event(0.1)
            except TimeoutError:
                return out
            out.append(event.data)


async def events_of(client: Client, kind: str, case_id: int) -> list[dict[str, Any]]:
    return [e for e in await stored_events(client) if e["type"] == kind and e.get("case_id") == case_id]


async def report(
    client: Client, conversation_id: int, message_ids: list[int], category: str = "harassment"
) -> int:
    return int((await client.report(conversation_id, message_ids, category))["id"])


async def appeal(client: Client, case_id: int, statement: str = "I did nothing wrong") -> int:
    """The status the appeal got: 204, or the refusal's."""
    try:
        await client.appeal(case_id, statement)
    except KeyholdError as exc:
        return exc.status
    return 204


# -- fixtures -------------------------------------------------------------------------------------


@dataclass
class World:
    server: Server
    secrets: dict[str, str]
    staff: dict[str, StaffClient]
    codes_used: dict[str, str]

    def by_id(self, staff_id: int) -> StaffClient:
        return next(s for s in self.staff.values() if s.id == staff_id)

    def assignee(self, case: dict[str, Any]) -> StaffClient:
        assert case["assigned_to"] is not None, case
        return self.by_id(int(case["assigned_to"]))

    def other_moderator(self, *not_these: StaffClient) -> StaffClient:
        ids = {s.id for s in not_these}
        return next(self.staff[n] for n in US_MODERATORS if self.staff[n].id not in ids)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gov_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, dict[str, str]]]:
    server = start_server(tmp_path_factory.mktemp("gov-reports") / "kh", request.param)
    try:
        secrets = add_all_staff(server, STAFF)
        yield server, secrets
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
async def world(gov_server: tuple[Server, dict[str, str]]) -> AsyncIterator[World]:
    server, secrets = gov_server
    staff: dict[str, StaffClient] = {}
    codes: dict[str, str] = {}
    for name in (*US_MODERATORS, "mod_eu"):
        codes[name] = totp(secrets[name])
        staff[name] = await StaffClient.login(server.url, name, STAFF_PASSWORD, codes[name])
    yield World(server, secrets, staff, codes)
    for client in staff.values():
        await client.close()


async def conversation_with(a: Client, b: Client, count: int, prefix: str) -> tuple[int, list[int]]:
    """A conversation of `count` messages, alternating b, a, b, ...; returns (id, message ids)."""
    conv = await a.start_conversation([b.username])
    ids = []
    for i in range(count):
        sender = b if i % 2 == 0 else a
        ids.append((await sender.send(conv.id, f"{prefix} {i}")).id)
    return conv.id, ids


# -- the window: exactly the reported message and K either side ----------------------------------


async def test_moderator_reads_exactly_the_reported_message_and_k_around_it(world: World) -> None:
    server = world.server
    a, b, c, d = [await new_member(server) for _ in range(4)]
    conv, ids = await conversation_with(a, b, 41, "line")
    other_ac, other_ac_ids = await conversation_with(a, c, 3, "a-c")
    other_bd, other_bd_ids = await conversation_with(b, d, 3, "b-d")
    case_id = await report(a, conv, [ids[20]])

    case = await world.staff["mod_a"].report(case_id)
    assert case["reported_messages"] == [ids[20]]
    assert case["conversation_id"] == conv
    moderator = world.assignee(case)

    items = await moderator.report_content(case_id, reason="review of a harassment report")
    assert [m["id"] for m in items] == ids[20 - K : 20 + K + 1]
    assert len(items) == 2 * K + 1
    assert [m["text"] for m in items] == [f"line {i}" for i in range(20 - K, 20 + K + 1)]
    assert {m["conversation_id"] for m in items} == {conv}

    # The edges of the window are readable one by one; one step further is not, on either side.
    edge = await moderator.read(case_id, [ids[20 - K], ids[20 + K]], reason="edges")
    assert [m["id"] for m in edge] == [ids[20 - K], ids[20 + K]]
    for outside in (ids[20 - K - 1], ids[20 + K + 1], ids[0], ids[40]):
        problem = await refused(moderator.read(case_id, [outside], "beyond"), 403, "outside the scope")
        assert str(outside) not in problem["detail"]
    # Mixed with in-scope ids, the whole read is refused (nothing is returned).
    await refused(moderator.read(case_id, [ids[20], ids[31]], "mixed"), 403, "outside the scope")
    # Every message of every other conversation, including ones the reporter is in.
    for other in other_ac_ids + other_bd_ids:
        await refused(moderator.read(case_id, [other], "other conversation"), 403, "outside the scope")
    assert other_ac != conv and other_bd != conv

    # Another moderator of the region, not assigned: refused.
    stranger = world.other_moderator(moderator)
    await refused(stranger.read(case_id, [ids[20]], "curious"), 403, "not assigned to you")
    await refused(stranger.report_content(case_id, "curious"), 403, "not assigned to you")
    # A moderator of another region: refused, and the case is not even visible to them.
    eu = world.staff["mod_eu"]
    await refused(eu.read(case_id, [ids[20]], "curious"), 403, "region")
    await refused(eu.report_content(case_id, "curious"), 403, "region")
    await refused(eu.report(case_id), 404)
    assert case_id not in {c["id"] for c in await eu.reports()}
    assert case_id in {c["id"] for c in await moderator.reports(status="open")}

    # Once decided, the case opens nothing any more.
    decided = await moderator.decide(case_id, "warn", note="keep it civil")
    assert decided["status"] == "decided"
    await refused(moderator.read(case_id, [ids[20]], "after"), 403, "decided")
    await refused(moderator.report_content(case_id, "after"), 403, "decided")
    for client in (a, b, c, d):
        await client.close()


# -- decisions and what people are told ------------------------------------------------------------


async def reported_pair(
    world: World, category: str = "harassment"
) -> tuple[Client, Client, int, list[int], int, StaffClient]:
    """Reporter a, offender b, a conversation of 6 messages, a case on b's message ids[2]."""
    a, b = await new_member(world.server), await new_member(world.server)
    conv, ids = await conversation_with(a, b, 6, "msg")
    case_id = await report(a, conv, [ids[2]], category)
    moderator = world.assignee(await world.staff["mod_a"].report(case_id))
    return a, b, conv, ids, case_id, moderator


async def test_e2ee_content_is_refused_to_moderators_and_nothing_is_logged(world: World) -> None:
    """A report of an e2ee message opens a case, but there is nothing the service can open:
    the read is refused before any access-log entry is made."""
    a, b = await new_member(world.server), await new_member(world.server)
    conversation = await a.start_conversation([b.username], encryption="e2ee")
    body = {"encrypted": Megolm().content("reported words")}
    sent = await raw(b, "POST", f"/conversations/{conversation.id}/messages", json=body)
    assert sent.status_code == 201, sent.text
    message_id = int(sent.json()["id"])
    case_id = await report(a, conversation.id, [message_id])
    moderator = world.assignee(await world.staff["mod_a"].report(case_id))
    logged = (await a.transparency_head())["size"]
    await refused(moderator.report_content(case_id, reason="review"), 403, "end-to-end encrypted")
    await refused(moderator.read(case_id, [message_id], "review"), 403, "end-to-end encrypted")
    assert (await a.transparency_head())["size"] == logged
    await a.close()
    await b.close()


async def test_warn_tells_the_reporter_and_the_offender(world: World) -> None:
    a, b, _conv, _ids, case_id, moderator = await reported_pair(world)
    decided = await moderator.decide(case_id, "warn", note="be kind")
    assert decided["decision"]["action"] == "warn"
    assert decided["decision"]["offenders"] and decided["decision"]["decided_by"] == moderator.id
    outcome = await events_of(a, "report.outcome", case_id)
    assert [(e["action"], e["appeal"]) for e in outcome] == [("warn", False)]
    action = await events_of(b, "moderation.action", case_id)
    assert [(e["action"], e["can_appeal"]) for e in action] == [("warn", True)]
    # The moderator's note reaches both people it concerns.
    assert [e["note"] for e in outcome] == [e["note"] for e in action] == ["be kind"]
    # The reporter is not told of a moderation action, the offender not of the outcome.
    assert await events_of(a, "moderation.action", case_id) == []
    assert await events_of(b, "report.outcome", case_id) == []
    await a.close()
    await b.close()


async def test_no_violation_tells_only_the_reporter(world: World) -> None:
    a, b, _conv, _ids, case_id, moderator = await reported_pair(world)
    await moderator.decide(case_id, "no_violation")
    assert [e["action"] for e in await events_of(a, "report.outcome", case_id)] == ["no_violation"]
    assert await events_of(b, "moderation.action", case_id) == []
    # Nothing to appeal.
    assert await appeal(b, case_id) == 409
    await a.close()
    await b.close()


async def test_remove_message_leaves_a_tombstone_for_members(world: World) -> None:
    a, b, conv, ids, case_id, moderator = await reported_pair(world)
    await moderator.decide(case_id, "remove_message")
    for member in (a, b):
        history = {m.id: m for m in await member.history(conv)}
        assert history[ids[2]].deleted and history[ids[2]].text is None
        assert history[ids[1]].text == "msg 1" and history[ids[3]].text == "msg 3"
    assert [e["action"] for e in await events_of(b, "moderation.action", case_id)] == ["remove_message"]
    await a.close()
    await b.close()


async def test_suspend_refuses_the_offenders_sends(world: World) -> None:
    a, b, conv, _ids, case_id, moderator = await reported_pair(world)
    await refused(moderator.decide(case_id, "suspend"), 422, "suspend_hours")
    await moderator.decide(case_id, "suspend", suspend_hours=24)
    # A suspended member reads but acts on nothing (tests/test_enforcement.py has the rest).
    assert (await raw(b, "GET", "/account")).status_code == 200
    response = await raw(b, "PATCH", "/account", json={"display_name": "renamed"})
    assert response.status_code == 403 and "suspended" in response.json()["detail"]
    with pytest.raises(KeyholdError) as caught:
        await b.send(conv, "still here?")
    assert caught.value.status == 403
    assert (await raw(a, "GET", "/account")).status_code == 200  # the reporter is untouched
    await a.close()
    await b.close()


async def test_ban_locks_the_offender_out_of_everything_but_an_appeal(world: World) -> None:
    a, b, conv, _ids, case_id, moderator = await reported_pair(world)
    await moderator.decide(case_id, "ban")
    # Every session was revoked; the ban, not the revocation, is the reason given.
    revoked = await raw(b, "GET", "/account")
    assert revoked.status_code == 403 and "banned" in revoked.json()["detail"]
    # A banned member can still sign in, but only to appeal: every other route is refused.
    again = await Client.login(world.server.url, b.username, "correct horse battery")
    for response in (
        await raw(again, "GET", "/account"),
        await raw(again, "GET", f"/conversations/{conv}/messages"),
        await raw(again, "POST", f"/conversations/{conv}/messages", json={"text": "still here?"}),
    ):
        assert response.status_code == 403 and "banned" in response.json()["detail"]
    assert await appeal(again, case_id, "I was banned by mistake") == 204
    assert await appeal(again, case_id, "and again") == 409  # once only
    await again.close()
    await a.close()
    await b.close()


async def test_child_safety_needs_the_hotline_reference(world: World) -> None:
    for category in ("grooming", "child_sexual_content", "sexual_extortion"):
        a, b, _conv, _ids, case_id, moderator = await reported_pair(world, category)
        assert (await moderator.report(case_id))["details"]["child_safety"] is True
        await refused(moderator.decide(case_id, "ban"), 422, "hotline")
        assert (await moderator.report(case_id))["status"] == "open"  # nothing was applied
        assert (await raw(b, "GET", "/account")).status_code == 200
        decided = await moderator.decide(case_id, "ban", hotline_reference=f"NCMEC-{case_id}")
        assert decided["decision"]["hotline_reference"] == f"NCMEC-{case_id}"
        await a.close()
        await b.close()
    # Not a violation: no mandatory report to file.
    a, b, _conv, _ids, case_id, moderator = await reported_pair(world, "grooming")
    assert (await moderator.decide(case_id, "no_violation"))["status"] == "decided"
    await a.close()
    await b.close()


# -- appeals --------------------------------------------------------------------------------------


async def test_appeal_once_decided_by_a_different_moderator(world: World) -> None:
    a, b, _conv, ids, case_id, first = await reported_pair(world)
    await first.decide(case_id, "warn")
    # Only the member the decision is about may appeal.
    assert await appeal(a, case_id) == 404
    assert await appeal(b, case_id) == 204
    await refused(b.appeal(case_id, "again"), 409, "once")

    # The moderator who decided cannot hear the appeal, neither by claiming nor directly.
    await refused(first.claim(case_id), 403, "different moderator")
    await refused(first.decide_appeal(case_id, uphold=True), 403, "different moderator")
    other = world.other_moderator(first)
    await refused(other.decide_appeal(case_id, uphold=False), 409, "claim")
    claimed = await other.claim(case_id)
    assert claimed["assigned_to"] == other.id and claimed["status"] == "appealed"
    # While hearing the appeal the new moderator sees the same window (and only that).
    window = await other.report_content(case_id, "appeal review")
    assert [m["id"] for m in window] == ids  # 6 messages: all within K of ids[2]
    decided = await other.decide_appeal(case_id, uphold=False, note="warning withdrawn")
    assert decided["status"] == "appeal_decided"
    assert decided["decision"]["appeal"]["upheld"] is False
    assert decided["decision"]["appeal"]["decided_by"] == other.id

    offender_events = await events_of(b, "moderation.action", case_id)
    assert [(e["action"], e["appeal"]) for e in offender_events] == [("warn", False), ("overturned", True)]
    assert offender_events[-1]["can_appeal"] is False
    reporter_events = await events_of(a, "report.outcome", case_id)
    assert [(e["action"], e["appeal"]) for e in reporter_events] == [("warn", False), ("overturned", True)]
    assert await appeal(b, case_id, "third time") == 409
    await refused(other.read(case_id, [ids[2]], "after the appeal"), 403, "appeal_decided")
    await a.close()
    await b.close()


async def test_overturning_a_suspension_lifts_it(world: World) -> None:
    """The suspended member must be able to appeal (it is the decision they most need to
    contest); a different moderator who overturns it lifts the suspension."""
    a, b, _conv, _ids, case_id, first = await reported_pair(world)
    await first.decide(case_id, "suspend", suspend_hours=48)
    assert (await raw(b, "PATCH", "/account", json={"display_name": "renamed"})).status_code == 403
    response = await appeal(b, case_id, "this was a joke between friends")
    assert response == 204, f"a suspended member cannot appeal their suspension: {response}"
    other = world.other_moderator(first)
    await other.claim(case_id)
    await other.decide_appeal(case_id, uphold=False, note="context shows a joke")
    assert (await raw(b, "PATCH", "/account", json={"display_name": "renamed"})).status_code == 200
    await a.close()
    await b.close()


# -- staff sign-in and tokens ---------------------------------------------------------------------


async def test_wrong_totp_is_refused_and_five_failures_lock(world: World) -> None:
    url, secret = world.server.url, world.secrets["locky"]
    body = {"username": "locky", "password": STAFF_PASSWORD}
    first = await call(url, "POST", "/staff/sessions", json={**body, "totp": not_a_code(secret)})
    assert first.status_code == 401 and "code" in first.json()["detail"]
    wrong_password = await call(
        url, "POST", "/staff/sessions", json={**body, "password": "not-the-password", "totp": totp(secret)}
    )
    assert wrong_password.status_code == 401
    for _ in range(3):  # failures 3..5
        response = await call(url, "POST", "/staff/sessions", json={**body, "totp": not_a_code(secret)})
        assert response.status_code == 401
    locked = await call(url, "POST", "/staff/sessions", json={**body, "totp": totp(secret, 1)})
    assert locked.status_code == 429, locked.text
    assert "too many failed sign-ins" in locked.json()["detail"]
    assert STAFF_PASSWORD not in locked.text and secret not in locked.text


async def test_a_totp_code_is_accepted_once(world: World) -> None:
    name = "mod_c"
    replay = await call(
        world.server.url,
        "POST",
        "/staff/sessions",
        json={"username": name, "password": STAFF_PASSWORD, "totp": world.codes_used[name]},
    )
    assert replay.status_code == 401
    # The session made with that code is still good.
    assert (await world.staff[name].me())["username"] == name


async def test_member_and_staff_tokens_do_not_cross(world: World) -> None:
    url = world.server.url
    member = await new_member(world.server)
    staff = world.staff["mod_a"]
    for path in ("/staff/me", "/staff/reports", "/staff/legal", "/transparency/entries"):
        response = await call(url, "GET", path, member.token)
        assert response.status_code == 401, (path, response.text)
        assert "staff token" in response.json()["detail"]
    read = await call(
        url, "POST", "/staff/cases/1/read", member.token, json={"message_ids": [1], "reason": "x"}
    )
    assert read.status_code == 401
    for path in ("/account", "/conversations", "/account/access-events", "/relations"):
        response = await call(url, "GET", path, staff.token)
        assert response.status_code == 401, (path, response.text)
    reported = await call(
        url,
        "POST",
        "/reports",
        staff.token,
        json={"conversation_id": 1, "message_ids": [1], "category": "spam"},
    )
    assert reported.status_code == 401
    assert (await call(url, "GET", "/staff/me")).status_code == 401  # no token at all
    await member.close()


@pytest.fixture(scope="module")
def short_session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    server = start_server(
        tmp_path_factory.mktemp("gov-short") / "kh", env={"KEYHOLD_STAFF_SESSION_SECONDS": "2"}
    )
    try:
        yield server, add_all_staff(server, {"shorty": ("moderator", "us")})["shorty"]
    finally:
        stop_server(server)


async def test_staff_sessions_expire_and_sign_out(short_session_server: tuple[Server, str]) -> None:
    server, secret = short_session_server
    code = totp(secret)
    first = await StaffClient.login(server.url, "shorty", STAFF_PASSWORD, code)
    # The next step's code is accepted too (clock drift), once; the same code never twice.
    second = await StaffClient.login(server.url, "shorty", STAFF_PASSWORD, totp(secret, 1))
    await refused(StaffClient.login(server.url, "shorty", STAFF_PASSWORD, code), 401)
    assert first.role == "moderator" and first.region == "us" and first.id == second.id
    await second.logout()
    await refused(second.me(), 401, "revoked")
    assert (await first.me())["username"] == "shorty"
    await asyncio.sleep(2.3)
    await refused(first.me(), 401, "expired")
    await refused(first.reports(), 401, "expired")
    await first.close()
    await second.close()
