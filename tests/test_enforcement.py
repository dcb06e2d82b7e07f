"""Enforcement (issue 9, item 6) against real servers: strikes from moderators' decisions and
from the system, expiry, automatic escalation to suspension and ban with its access-log
entries, what a suspended member may still do (read, receive, appeal) and may not (send,
start, change), the end of a suspension, appeals of automatic actions, and bans that stay
appeal-only.

The module's servers run with an enforcement ladder of their own (below), not the defaults,
so that every figure checked here comes from the policy file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from clock_shift import shifted_env
from conftest import (
    PASSWORD,
    REQUESTS_OFF,
    Server,
    create_pg_database,
    keyhold_cli,
    new_member,
    raw,
    settings_overrides,
    start_server,
    stop_server,
    unique,
)
from keyhold.app import Keyhold, start_keyhold
from keyhold.clock import now_ms
from keyhold.config import load_settings
from keyhold.core.errors import Problem
from keyhold.core.writer import EventSink
from keyhold.governance.strikes import EscalationResult
from keyhold.safety.enforcement_policy import DEFAULT_ENFORCEMENT, EnforcementPolicy, parse_enforcement
from keyhold.safety.policy import PolicyError, parse
from keyhold.sdk import Client, KeyholdError, StaffClient
from keyhold.store import merkle_log
from keyhold.store.merkle_log import ACCESS_LOG
from staff_helpers import add_all_staff, login_all
from stream_helpers import live, next_of

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
LADDER = """
[enforcement]
strike_days = 30
suspend_at = 2
suspend_hours = 12
long_suspend_at = 3
long_suspend_hours = 48
ban_at = 4
"""
STAFF = {"enf_mod_a": ("moderator", "us"), "enf_mod_b": ("moderator", "us"), "enf_audit": ("auditor", "us")}
MODERATORS = ("enf_mod_a", "enf_mod_b")


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def with_policy(home: Path, policy: str) -> Path:
    """A data dir whose safety policy is written before its server first starts."""
    home.mkdir(parents=True)
    (home / "safety-policy.toml").write_text(REQUESTS_OFF + policy)
    return home


# -- the policy file ------------------------------------------------------------------------------


def test_the_enforcement_table_is_read_checked_and_shown() -> None:
    assert parse("").enforcement == DEFAULT_ENFORCEMENT == EnforcementPolicy()
    policy = parse(LADDER)
    assert policy.enforcement == EnforcementPolicy(30, 2, 12, 3, 48, 4)
    assert parse(policy.to_toml()) == policy  # what `show` prints reads back the same
    assert "[enforcement]" in policy.to_toml() and "ban_at = 4" in policy.to_toml()
    # A rung may be turned off; the others still have to climb.
    assert parse_enforcement({"ban_at": 0, "long_suspend_at": 0}).ban_at == 0
    for table, needle in (
        ({"strike_days": 0}, "strike_days: must be a whole number of days from 1"),
        ({"suspend_hours": 9000}, "suspend_hours"),
        ({"suspend_at": True}, "suspend_at"),
        ({"suspend_at": 4}, "need suspend_at < long_suspend_at"),
        ({"long_suspend_at": 0, "suspend_at": 5}, "need suspend_at < ban_at"),
        ({"warn_at": 1}, "unknown setting 'warn_at'"),
    ):
        with pytest.raises(PolicyError) as caught:
            parse("[enforcement]\n" + "\n".join(f"{k} = {str(v).lower()}" for k, v in table.items()))
        assert needle in str(caught.value), caught.value


# -- the entry point the system calls -------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def in_process(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Keyhold]:
    """A data dir made by the real `keyhold init`, served in this process (default ladder)."""
    home = tmp_path / "kh"
    init = ["init", "--home", str(home)]
    if request.param == "postgres":
        init += ["--database-url", await asyncio.to_thread(create_pg_database)]
    keyhold_cli(*init)
    cheap = settings_overrides()
    svc = await start_keyhold(load_settings(home, **cheap))
    try:
        yield svc
    finally:
        await svc.stop()


async def system_strike(
    svc: Keyhold, user_id: int, category: str = "spam", fail: bool = False
) -> EscalationResult:
    gov = svc.governance

    async def job(conn: Any, sink: EventSink) -> EscalationResult:
        result = await gov.strikes.strike(conn, sink, user_id, category, "automatic", None, now_ms())
        if fail:
            raise Problem(409, "conflict", "Conflict", "the caller's own write failed")
        return result

    return await gov.writer.run(job)


async def test_system_strikes_escalate_in_the_callers_transaction(in_process: Keyhold) -> None:
    svc = in_process
    username = unique("sys")
    await svc.accounts.register(username, PASSWORD, "1990-05-17", "us")
    token = (await svc.accounts.login(username, PASSWORD, address="in-process"))["token"]
    member = await svc.accounts.authenticate(token)

    first = await system_strike(svc, member.id)
    assert first.strike_id is not None and first.active_strikes == 1 and first.action is None
    # Self-harm is never punished: nothing is recorded, nothing counts.
    helped = await system_strike(svc, member.id, "self_harm")
    assert helped.strike_id is None and helped.active_strikes == 1
    # A strike whose caller's transaction fails is not kept (nor anything it escalated).
    with pytest.raises(Problem):
        await system_strike(svc, member.id, fail=True)
    assert (await system_strike(svc, member.id)).active_strikes == 2
    log_size = svc.governance.log.size
    before = now_ms()
    third = await system_strike(svc, member.id)
    # The default ladder: a 24-hour suspension at three active strikes, as an appealable case.
    assert (third.active_strikes, third.action) == (3, "suspend") and third.case_id is not None
    assert third.until_ms is not None and before + 24 * HOUR_MS <= third.until_ms <= now_ms() + 24 * HOUR_MS
    async with svc.engine.connect() as conn:
        bodies = await merkle_log.entries(conn, ACCESS_LOG, log_size, svc.governance.log.size)
    entries = [orjson.loads(row.entry) for row in bodies]
    assert [e["type"] for e in entries] == ["case_decided"]
    details = entries[0]["details"]
    assert details["case"] == {"id": third.case_id, "kind": "report"} and details["automatic"] is True
    assert (details["action"], details["category"], details["active_strikes"]) == ("suspend", "spam", 3)
    assert entries[0]["subjects"] == []  # no member named in the entry
    # Reading is still allowed; acting is not.
    assert (await svc.accounts.authenticate(token, "read")).id == member.id
    with pytest.raises(Problem) as caught:
        await svc.accounts.authenticate(token)
    assert caught.value.status == 403 and "suspended until" in caught.value.detail
    with pytest.raises(ValueError, match="source"):
        await system_strike_with_source(svc, member.id, "scanner")


async def system_strike_with_source(svc: Keyhold, user_id: int, source: str) -> EscalationResult:
    gov = svc.governance
    return await gov.writer.run(
        lambda conn, sink: gov.strikes.strike(conn, sink, user_id, "spam", source, None, now_ms())
    )


# -- servers with staff ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def enf_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, dict[str, str]]]:
    home = with_policy(tmp_path_factory.mktemp("enforcement") / "kh", LADDER)
    server = start_server(home, request.param)
    try:
        yield server, add_all_staff(server, STAFF)
    finally:
        stop_server(server)


@dataclass
class World:
    server: Server
    staff: dict[str, StaffClient]

    def assignee(self, case: dict[str, Any]) -> StaffClient:
        return next(s for s in self.staff.values() if s.id == case["assigned_to"])

    def other_than(self, moderator: StaffClient | None) -> StaffClient:
        return next(
            self.staff[n] for n in MODERATORS if moderator is None or self.staff[n].id != moderator.id
        )


@pytest.fixture(scope="module")
async def world(enf_server: tuple[Server, dict[str, str]]) -> AsyncIterator[World]:
    server, secrets = enf_server
    staff = await login_all(server, secrets)
    yield World(server, staff)
    for client in staff.values():
        await client.close()


async def pair(server: Server, messages: int) -> tuple[Client, Client, int, list[int]]:
    """Reporter a and member b in a conversation where b sent `messages` messages."""
    a, b = await new_member(server), await new_member(server)
    conv = await a.start_conversation([b.username])
    ids = [(await b.send(conv.id, f"line {i}")).id for i in range(messages)]
    return a, b, conv.id, ids


async def decided(
    world: World, reporter: Client, conv: int, message_id: int, action: str, **kw: Any
) -> tuple[int, StaffClient]:
    """A report of one message, decided by the moderator it went to."""
    case_id = int((await reporter.report(conv, [message_id], "harassment"))["id"])
    moderator = world.assignee(await world.staff[MODERATORS[0]].report(case_id))
    await moderator.decide(case_id, action, note=f"{action} by a moderator", **kw)
    return case_id, moderator


async def standing(client: Client) -> dict[str, Any]:
    response = await raw(client, "GET", "/account/standing")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def automatic_entries(world: World, case_id: int) -> list[dict[str, Any]]:
    entries = [orjson.loads(e["entry"]) for e in await world.staff["enf_audit"].all_log_entries()]
    return [e for e in entries if (e["details"].get("case") or {}).get("id") == case_id]


async def overturn(
    world: World, case_id: int, first: StaffClient | None = None, uphold: bool = False
) -> None:
    other = world.other_than(first)
    await other.claim(case_id)
    await other.decide_appeal(case_id, uphold=uphold, note="on appeal")


async def close(*clients: Client) -> None:
    for client in clients:
        await client.close()


# -- strikes from decisions -----------------------------------------------------------------------


@pytest.mark.parametrize("action", ["warn", "remove_message", "no_violation", "escalate_legal"])
async def test_which_decisions_give_a_strike(world: World, action: str) -> None:
    a, b, conv, ids = await pair(world.server, 2)
    case_id, moderator = await decided(world, a, conv, ids[0], action)
    mine = await standing(b)
    if action in ("no_violation", "escalate_legal"):
        assert mine["active_strikes"] == [] and mine["status"] == "active"
        await close(a, b)
        return
    [strike] = mine["active_strikes"]
    assert (strike["case_id"], strike["category"], strike["source"]) == (case_id, "harassment", "moderator")
    assert ms(strike["expires_at"]) - ms(strike["created_at"]) == 30 * DAY_MS  # strike_days of the policy
    assert mine["status"] == "active" and mine["strike_days"] == 30
    assert mine["next_step"] == {"at_strikes": 2, "action": "suspend", "hours": 12}
    # The member was told: the decision, and the strike it gave.
    told = {(n["type"], n["case_id"]) for n in mine["notices"]}
    assert {("moderation.action", case_id), ("moderation.strike", case_id)} <= told
    assert next(n for n in mine["notices"] if n["type"] == "moderation.action")["appealable"] is True
    # Moderators see it in the case, and in the next case about the same member before deciding.
    assert [s["id"] for s in (await moderator.report(case_id))["strikes"]] == [strike["id"]]
    next_case = int((await a.report(conv, [ids[1]], "harassment"))["id"])
    open_case = await world.staff[MODERATORS[0]].report(next_case)
    assert open_case["status"] == "open" and [s["user_id"] for s in open_case["strikes"]] == [
        strike["user_id"]
    ]
    # A reporter's standing is untouched.
    assert (await standing(a))["active_strikes"] == []
    await close(a, b)


async def test_overturning_a_decision_removes_its_strike_and_upholding_keeps_it(world: World) -> None:
    a, b, conv, ids = await pair(world.server, 1)
    c, d, conv_cd, ids_cd = await pair(world.server, 1)
    overturned, first = await decided(world, a, conv, ids[0], "warn")
    upheld, first_cd = await decided(world, c, conv_cd, ids_cd[0], "warn")
    await b.appeal(overturned, "that was a quote")
    await d.appeal(upheld, "no")
    await overturn(world, overturned, first)
    await overturn(world, upheld, first_cd, uphold=True)
    assert (await standing(b))["active_strikes"] == []
    assert [s["case_id"] for s in (await standing(d))["active_strikes"]] == [upheld]
    await close(a, b, c, d)


# -- automatic escalation -------------------------------------------------------------------------


async def test_strikes_escalate_to_suspensions_then_a_ban_each_logged_and_appealable(world: World) -> None:
    a, b, conv, ids = await pair(world.server, 4)
    first, _ = await decided(world, a, conv, ids[0], "warn")
    assert (await standing(b))["status"] == "active"

    steps: list[tuple[int, str, int | None]] = [(2, "suspend", 12), (3, "suspend", 48), (4, "ban", None)]
    viewer = b
    for (active, action, hours), message_id in zip(steps, ids[1:], strict=True):
        before = now_ms()
        case_id, _ = await decided(world, a, conv, message_id, "warn")
        after = now_ms()
        if action == "ban":  # a ban ends every session: the member signs in again to see it
            viewer = await Client.login(world.server.url, b.username, PASSWORD, e2ee=False)
        mine = await standing(viewer)
        assert len(mine["active_strikes"]) == active
        automatic = [
            n
            for n in mine["notices"]
            if n["type"] == "moderation.action" and n.get("automatic") and n["case_id"] > case_id
        ]
        assert len(automatic) == 1, mine["notices"]
        notice = automatic[0]
        assert notice["action"] == action and notice["appealable"] is True and notice["can_appeal"] is True
        if hours is None:
            assert mine["status"] == "banned" and mine["suspended_until"] is None and notice["until"] is None
        else:
            assert mine["status"] == "suspended" and notice["until"] == mine["suspended_until"]
            assert before + hours * HOUR_MS <= ms(mine["suspended_until"]) <= after + hours * HOUR_MS
        # The access log holds the automatic decision as a moderation event, without content.
        [entry] = await automatic_entries(world, notice["case_id"])
        assert entry["type"] == "case_decided"
        assert entry["details"] == {
            "case": {"id": notice["case_id"], "kind": "report"},
            "region": "us",
            "category": "harassment",
            "action": action,
            "appeal": False,
            "automatic": True,
            "active_strikes": active,
        }
        # Moderators see the automatic case like any decided case, with the member's strikes.
        auto_case = await world.staff[MODERATORS[0]].report(notice["case_id"])
        assert auto_case["status"] == "decided" and auto_case["decision"]["automatic"] is True
        assert len(auto_case["strikes"]) == active

    # Banned: everything but the appeal and the standing is refused, reading included.
    again = viewer
    for client in (b, again):  # the revoked session and the new one alike
        for path in ("/conversations", f"/conversations/{conv}/messages", "/account"):
            response = await raw(client, "GET", path)
            assert response.status_code == 403 and "banned" in response.json()["detail"], (
                path,
                response.text,
            )
    with pytest.raises(websockets.ConnectionClosed) as closed:
        stream = await again.connect("latest")
        await stream.next_event(10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    ban_case = next(n["case_id"] for n in (await standing(again))["notices"] if n.get("action") == "ban")
    await again.appeal(ban_case, "the ban was automatic")
    # The first warning is still appealable too: a decision of its own.
    assert any(n["case_id"] == first and n["appealable"] for n in (await standing(again))["notices"])
    await close(a, b, again)


async def test_overturning_an_automatic_suspension_lifts_it_and_removes_the_strike_behind_it(
    world: World,
) -> None:
    a, b, conv, ids = await pair(world.server, 2)
    first, _ = await decided(world, a, conv, ids[0], "warn")
    second, _ = await decided(world, a, conv, ids[1], "warn")
    mine = await standing(b)
    assert mine["status"] == "suspended"
    auto = next(n["case_id"] for n in mine["notices"] if n.get("automatic"))
    # Suspended, the member appeals the automatic suspension (once); any moderator hears it.
    await b.appeal(auto, "both were jokes between friends")
    with pytest.raises(KeyholdError) as again:
        await b.appeal(auto, "again")
    assert again.value.status == 409
    await overturn(world, auto)
    mine = await standing(b)
    assert mine["status"] == "active" and mine["suspended_until"] is None
    # The strike that triggered it (the second warning's) is gone; the first stays.
    assert [s["case_id"] for s in mine["active_strikes"]] == [first]
    assert second != first
    assert (await b.send(conv, "back")).text == "back"
    overturned = [e for e in await automatic_entries(world, auto) if e["details"]["appeal"] is True]
    assert [e["details"]["action"] for e in overturned] == ["overturned"]
    told = [n for n in mine["notices"] if n["case_id"] == auto and n["type"] == "moderation.action"]
    assert [(n["action"], n["appeal"]) for n in told] == [("overturned", True), ("suspend", False)]
    await close(a, b)


# -- what a suspended member can and cannot do ----------------------------------------------------


async def test_a_suspended_member_reads_and_receives_but_cannot_send_or_change_anything(world: World) -> None:
    server = world.server
    a, b, conv, ids = await pair(server, 1)
    c = await new_member(server)
    group = await b.start_conversation([a.username, c.username], title="b's group")
    file = await a.send_file(conv, b"the attachment", "notes.txt", "text/plain")
    assert file.attachment is not None
    old_stream = await live(b)
    await decided(world, a, conv, ids[0], "suspend", suspend_hours=5)
    until = (await standing(b))["suspended_until"]
    assert (await standing(b))["status"] == "suspended" and until is not None

    # Reads.
    assert conv in {item["id"] for item in (await raw(b, "GET", "/conversations")).json()["items"]}
    for path in (f"/conversations/{conv}", "/account", "/relations", "/devices", "/account/access-events"):
        assert (await raw(b, "GET", path)).status_code == 200, path
    assert [m.text for m in await b.history(conv)][-1] == file.text
    assert await b.download(file.attachment.id) == b"the attachment"
    assert await b.mark(conv, file.id) is True  # receipts are part of reading

    # Writes: 403, naming the end of the suspension.
    writes = [
        ("POST", f"/conversations/{conv}/messages", {"json": {"text": "let me explain"}}),
        ("POST", "/conversations", {"json": {"members": [c.username]}}),
        ("POST", f"/conversations/{conv}/attachments", {"headers": {"Keyhold-Filename": "x.txt"}, "content": b"x"}),
        ("PUT", f"/following/{a.username}", {}),
        (
            "POST",
            f"/conversations/{group.id}/members",
            {"json": {"members": [(await new_member(server)).username]}},
        ),
        ("PATCH", f"/conversations/{group.id}", {"json": {"title": "renamed"}}),
        ("PATCH", "/account", {"json": {"display_name": "someone else"}}),
    ]
    for method, path, kwargs in writes:
        response = await raw(b, method, path, **kwargs)
        assert response.status_code == 403, (method, path, response.text)
        assert until in response.json()["detail"] and "suspended" in response.json()["detail"], response.text

    # The stream opened before the suspension stays open. Proof without a clock: another
    # member is banned and their stream closes, so the watch has swept past b's suspension.
    y, y_reporter = await new_member(server), await new_member(server)
    conv_y = await y_reporter.start_conversation([y.username])
    y_message = await y.send(conv_y.id, "something bannable")
    y_stream = await live(y)
    await decided(world, y_reporter, conv_y.id, y_message.id, "ban")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await y_stream.next_event(10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    new_stream = await live(b)  # and a suspended member may open a new one
    sent = await a.send(conv, "are you there?")
    for stream in (old_stream, new_stream):
        event = await next_of(stream, "message.new", skip=None)
        assert event.data["message"]["id"] == sent.id
    # Sending over it gets an error frame naming the end; the socket stays open for receiving.
    with pytest.raises(KeyholdError) as refused:
        await old_stream.send(conv, "over the socket")
    assert refused.value.status == 403 and until in str(refused.value.problem["detail"])
    await old_stream.mark(conv, sent.id)
    after = await a.send(conv, "still reading?")
    assert (await next_of(old_stream, "message.new", skip=None)).data["message"]["id"] == after.id
    assert [m.text for m in await a.history(conv)][-2:] == ["are you there?", "still reading?"]
    for stream in (old_stream, new_stream, y_stream):
        await stream.close()
    await close(a, b, c, y, y_reporter)


# -- time: strikes expire, suspensions end ------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def short_ladder(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Server, dict[str, str], Path]]:
    ladder = "\n[enforcement]\nstrike_days = 1\nsuspend_at = 2\nsuspend_hours = 1\nlong_suspend_at = 0\nban_at = 0\n"
    server = start_server(with_policy(tmp_path / "kh", ladder), request.param)
    secrets = add_all_staff(server, {name: STAFF[name] for name in MODERATORS})
    try:
        yield server, secrets, tmp_path
    finally:
        stop_server(server)  # the test stops it itself too, to start it again later


async def test_strikes_expire_and_a_suspension_ends_at_its_end_date(
    short_ladder: tuple[Server, dict[str, str], Path],
) -> None:
    server, secrets, tmp = short_ladder
    staff = await login_all(server, secrets)
    world = World(server, staff)
    a, b, conv, ids = await pair(server, 3)
    await decided(world, a, conv, ids[0], "warn")
    await decided(world, a, conv, ids[1], "warn")
    mine = await standing(b)
    assert mine["status"] == "suspended" and len(mine["active_strikes"]) == 2
    with pytest.raises(KeyholdError) as refused:
        await b.send(conv, "too soon")
    assert refused.value.status == 403
    for client in staff.values():
        await client.close()
    await close(a, b)

    # The same data dir two days later: past the suspension's end and the strikes' expiry.
    stop_server(server)
    shift_s = 2 * 24 * 3600
    later = start_server(
        server.home, server.backend, env=shifted_env(tmp / "shim", shift_s), database_url=server.database_url
    )
    try:
        b = await Client.login(later.url, b.username, PASSWORD, e2ee=False)
        a = await Client.login(later.url, a.username, PASSWORD, e2ee=False)
        mine = await standing(b)
        assert (mine["status"], mine["suspended_until"], mine["active_strikes"]) == ("active", None, [])
        assert (await b.send(conv, "back after the suspension")).text == "back after the suspension"
        # With the old strikes expired, a new one counts alone: no escalation.
        staff = await login_all(later, secrets, shift_s)
        world = World(later, staff)
        await decided(world, a, conv, ids[2], "warn")
        mine = await standing(b)
        assert mine["status"] == "active" and len(mine["active_strikes"]) == 1
        for client in staff.values():
            await client.close()
        await close(a, b)
    finally:
        stop_server(later)


async def test_a_moderators_ban_gives_a_strike_and_stays_appeal_only(world: World) -> None:
    a, b, conv, ids = await pair(world.server, 1)
    case_id, _ = await decided(world, a, conv, ids[0], "ban")
    again = await Client.login(world.server.url, b.username, PASSWORD, e2ee=False)
    mine = await standing(again)
    assert mine["status"] == "banned" and [s["case_id"] for s in mine["active_strikes"]] == [case_id]
    for method, path in (("GET", f"/conversations/{conv}/messages"), ("GET", "/account")):
        response = await raw(again, method, path)
        assert response.status_code == 403 and "banned" in response.json()["detail"]
    await again.appeal(case_id, "please look again")
    await close(a, b, again)
