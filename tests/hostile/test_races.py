"""Operations that race, sent at once, and the invariant each must keep.

Against a real server, on SQLite and PostgreSQL, with staff made as `keyhold staff add` makes
them and an operator's rule that holds messages for review. Each test sends its requests
together (asyncio.gather, up to twenty at once), then reads back through the API, and where
it says more, through the database itself, what was decided:

- two moderators claiming one unassigned case (an appeal), ten cases at once: one 200, one
  409, the case assigned to the winner;
- two legal staff approving one pending case, or one approving while another refuses: one
  decision, one entry for it in the access log, one preservation hold or none;
- a moderator releasing and refusing one held message: one outcome — delivered to the other
  member, or deleted and never announced to them — never both;
- a member sending twenty messages while an admin removes them, while the other member of a
  direct conversation blocks them, while a fellow group member blocks them, and while they
  delete their account: every acknowledged message is stored (and shown, or a tombstone after
  the deletion), nothing refused is stored, and nothing committed after the change reaches
  the member it shuts out, in history or on the stream;
- two admins adding the same member: one membership, announced once.
Every losing request and every refused send gets a problem+json 4xx, never a 5xx.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from conftest import PASSWORD, Server, new_member
from db_snapshot import stored
from hostile_helpers import assert_problem, http
from keyhold.sdk import Client, LegalRequest, Message, StaffClient, Stream
from staff_helpers import signed_in, staff_server_fixture
from stream_helpers import close_all, live

STAFF = {
    **{f"mod_{n}": ("moderator", "us") for n in "abc"},
    **{f"legal_{n}": ("legal", "us") for n in "abc"},
    "auditor": ("auditor", "us"),
}
HOLD_WORD = "zebrafruit"  # made up, so that only the operator's rule holds it
RULES = f"""
[[rule]]
name = "race-hold"
category = "spam"
action = "hold"
terms = ["{HOLD_WORD}"]
"""


@dataclass
class World:
    server: Server
    staff: dict[str, StaffClient]

    def named(self, staff_id: int) -> StaffClient:
        return next(s for s in self.staff.values() if s.id == staff_id)

    async def post(
        self, who: Client | StaffClient, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        async with http(self.server, who.token) as api:
            return await api.post(path, json=body or {})

    async def get(self, who: Client | StaffClient, path: str, **params: Any) -> dict[str, Any]:
        async with http(self.server, who.token) as api:
            response = await api.get(path, params=params)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def history(self, client: Client, conversation_id: int) -> list[dict[str, Any]]:
        async with http(self.server, client.token) as api:
            response = await api.get(f"/conversations/{conversation_id}/messages", params={"limit": 200})
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def shown(self, viewer: Client, conversation_id: int, sender: Client) -> list[int]:
        """The ids of `sender`'s messages in `viewer`'s history, in order."""
        return sorted(
            m["id"] for m in await self.history(viewer, conversation_id) if m["sender"] == sender.username
        )

    async def stored_ids(self, sender: Client, conversation_id: int) -> list[int]:
        sql = "SELECT id FROM messages WHERE sender_id = ? AND conversation_id = ?"
        return sorted(
            r[0] for r in await stored(self.server, sql, int((await sender.me())["id"]), conversation_id)
        )


served = staff_server_fixture("races", STAFF, {"safety-rules.toml": RULES})


@pytest.fixture(scope="module")
async def world(served: tuple[Server, dict[str, str]]) -> AsyncIterator[World]:
    server, totp_secrets = served
    async with signed_in(server, totp_secrets) as staff:
        yield World(server, staff)


# -- helpers --------------------------------------------------------------------------------------


def one_winner(answers: list[httpx.Response], loser: int = 409) -> int:
    """The index of the one 200 among `answers`; every other is a problem+json `loser`."""
    won = [i for i, a in enumerate(answers) if a.status_code == 200]
    assert len(won) == 1, [(a.status_code, a.text[:200]) for a in answers]
    for i, answer in enumerate(answers):
        if i != won[0]:
            assert_problem(answer, loser)
    return won[0]


async def members(server: Server, count: int) -> list[Client]:
    # One at a time: sign-ups at once past the hashing queue are refused (test_signin.py).
    return [await new_member(server) for _ in range(count)]


async def replayed(client: Client) -> list[dict[str, Any]]:
    """Every event stored for the member so far, in commit order: the replay from 0 up to `ready`."""
    stream = await client.connect(0)
    try:
        await asyncio.wait_for(stream.ready.wait(), 10)
        upto, events = stream.last_seq, list[dict[str, Any]]()
        while upto and (not events or events[-1]["seq"] < upto):
            events.append((await stream.next_event(10)).data)
        return events
    finally:
        await stream.close()


def sent_by(events: list[dict[str, Any]], sender: Client, conversation_id: int) -> list[int]:
    return sorted(
        e["message"]["id"]
        for e in events
        if e["type"] == "message.new"
        and e["conversation_id"] == conversation_id
        and e["message"]["sender"] == sender.username
    )


async def sends_racing(
    server: Server,
    sender: Client,
    conversation_id: int,
    act: Callable[[], Awaitable[httpx.Response]],
    *refusals: int,
) -> tuple[list[int], httpx.Response]:
    """Twenty sends, five chains of four at once, and `act` fired once the first is answered, so
    that it lands among them rather than before or after a single batch (the writer commits
    sends that arrive together in one transaction). The ids acknowledged (201), and `act`'s
    answer; every other send must have been refused with a problem+json of `refusals`."""
    first = asyncio.Event()
    async with http(server, sender.token) as api:

        async def chain(c: int) -> list[httpx.Response]:
            answers = []
            for i in range(4):
                body = {"text": f"note {c}.{i}"}
                answers.append(await api.post(f"/conversations/{conversation_id}/messages", json=body))
                first.set()
            return answers

        async def acting() -> httpx.Response:
            await first.wait()
            return await act()

        chains, acted = await asyncio.gather(asyncio.gather(*(chain(c) for c in range(5))), acting())
    acknowledged = []
    for answer in (a for c in chains for a in c):
        if answer.status_code == 201:
            acknowledged.append(int(answer.json()["id"]))
        else:
            assert_problem(answer, *refusals)
    return sorted(acknowledged), acted


def overlapped(acknowledged: list[int], what: str) -> None:
    """The change landed among the sends, not after them all: else the test showed nothing."""
    assert 0 < len(acknowledged) < 20, f"{len(acknowledged)} of 20 sends before {what}: no race"


async def streamed_until(stream: Stream, sentinel: int) -> list[Message]:
    """The `message.new` events on a live stream up to the one of message `sentinel`: every event
    committed for its member before that message is among them (seq order is commit order)."""
    seen: list[Message] = []
    while True:
        event = await stream.next_event(10)
        if event.type == "message.new":
            if event.message is not None and event.message.id == sentinel:
                return seen
            assert event.message is not None
            seen.append(event.message)


# -- staff --------------------------------------------------------------------------------------


async def appealed_case(world: World) -> tuple[int, StaffClient]:
    """A case decided by a moderator and appealed by its offender: open to claim by anyone but
    that moderator (an appeal is heard by another). The case, and who decided it."""
    reporter, offender = await members(world.server, 2)
    conversation = await reporter.start_conversation([offender.username])
    said = await offender.send(conversation.id, "a rude note")
    case_id = int((await reporter.report(conversation.id, [said.id], "harassment"))["id"])
    decider = world.named((await world.staff["mod_a"].report(case_id))["assigned_to"])
    await decider.claim(case_id)
    await decider.decide(case_id, "warn", "mind your words")
    await offender.appeal(case_id, "it was a joke")
    assert (await decider.report(case_id))["assigned_to"] is None
    await close_all(reporter, offender)
    return case_id, decider


async def test_two_moderators_claiming_one_case_at_once_one_wins(world: World) -> None:
    """Ten appealed cases, each claimed at once by the two moderators who may hear it (twenty
    claims together): one 200, one 409, and the case is the winner's alone."""
    cases = [await appealed_case(world) for _ in range(10)]
    pairs = [
        (case_id, [world.staff[f"mod_{x}"] for x in "abc" if world.staff[f"mod_{x}"] is not decider])
        for case_id, decider in cases
    ]
    answers = await asyncio.gather(
        *(world.post(m, f"/staff/reports/{case_id}/claim") for case_id, pair in pairs for m in pair)
    )
    for n, (case_id, pair) in enumerate(pairs):
        winner = pair[one_winner(list(answers[2 * n : 2 * n + 2]))]
        loser = next(m for m in pair if m is not winner)
        assert answers[2 * n + pair.index(winner)].json()["assigned_to"] == winner.id
        assert (await loser.report(case_id))["assigned_to"] == winner.id
        # The loser's 409 left them nothing: the appeal is the winner's to decide.
        assert_problem(
            await world.post(loser, f"/staff/reports/{case_id}/appeal-decision", {"uphold": True}), 409
        )
        heard = await winner.decide_appeal(case_id, uphold=True)
        assert heard["status"] == "appeal_decided" and heard["assigned_to"] == winner.id


def preservation(target: str) -> LegalRequest:
    today = dt.date.today()
    return LegalRequest(
        agency="An agency", officer="An officer", contact="officer@agency.example", country="US",
        process="preservation", targets=[target], date_from=str(today - dt.timedelta(days=1)),
        date_to=str(today + dt.timedelta(days=1)), categories=[], document=b"%PDF-1.4 preservation",
    )  # fmt: skip


async def test_two_legal_staff_deciding_one_case_at_once_decide_it_once(world: World) -> None:
    """Ten pending preservations filed by legal_a: five approved by legal_b and legal_c at once,
    five approved by legal_b while legal_c refuses (twenty requests together). One 200 and one
    409 each; the case shows the winner's decision, the access log holds one entry of it and
    none of the other, and the holds table one hold if it was approved, else none."""
    target = (await members(world.server, 1))[0]
    filer, b, c = world.staff["legal_a"], world.staff["legal_b"], world.staff["legal_c"]
    cases = [int((await filer.create_legal_case(preservation(target.username)))["id"]) for _ in range(10)]
    refuse = {"reason": "not valid"}
    answers = await asyncio.gather(
        *(
            request
            for n, case_id in enumerate(cases)
            for request in (
                world.post(b, f"/staff/legal/{case_id}/approve"),
                world.post(c, f"/staff/legal/{case_id}/" + ("approve" if n < 5 else "refuse"), refuse),
            )
        )
    )
    entries = [orjson.loads(e["entry"]) for e in await world.staff["auditor"].all_log_entries()]
    for n, case_id in enumerate(cases):
        won = one_winner(list(answers[2 * n : 2 * n + 2]))
        approved = won == 0 or n < 5
        case = await filer.legal_case(case_id)
        assert case["status"] == ("approved" if approved else "refused"), case
        assert case["approved_by"] == ((b, c)[won].id if approved else None), case
        logged = sorted(e["type"] for e in entries if e["details"].get("case", {}).get("id") == case_id)
        assert logged == (
            ["case_approved", "case_opened", "preservation_set"]
            if approved
            else ["case_opened", "case_refused"]
        ), logged
        holds = await stored(world.server, "SELECT user_id FROM holds WHERE case_id = ?", case_id)
        assert len(holds) == (1 if approved else 0), holds
    await target.close()


async def held_message(world: World) -> tuple[Client, Client, int, int, int, StaffClient]:
    """A direct conversation where the first member's message is held for review: (sender,
    recipient, conversation, message, the held case, the moderator it is assigned to)."""
    sender, recipient = await members(world.server, 2)
    conversation = (await sender.start_conversation([recipient.username])).id
    held = await sender.send(conversation, f"a great deal on {HOLD_WORD}")
    assert held.status == "pending_review"
    page = await world.get(world.staff["mod_a"], "/staff/held", limit=200)
    [case] = [c for c in page["items"] if c["reported_messages"] == [held.id]]
    return sender, recipient, conversation, held.id, case["id"], world.named(case["assigned_to"])


async def test_releasing_and_refusing_one_held_message_at_once_has_one_outcome(world: World) -> None:
    """Five held messages, each released and refused at once by its moderator (ten requests
    together): one 200, one 409. Released: the recipient has it, in history and as one
    `message.new`. Refused: its content is destroyed and the recipient never heard of it. Never
    both, and the sender is told one outcome."""
    held = [await held_message(world) for _ in range(5)]
    answers = await asyncio.gather(
        *(
            world.post(moderator, f"/staff/held/{case_id}/{verb}", {"note": "a review"})
            for *_, case_id, moderator in held
            for verb in ("release", "refuse")
        )
    )
    for n, (sender, recipient, conversation, message_id, case_id, moderator) in enumerate(held):
        released = one_winner(list(answers[2 * n : 2 * n + 2])) == 0
        outcome = "released" if released else "refused"
        assert_problem(await world.post(moderator, f"/staff/held/{case_id}/release"), 409)
        view = await world.get(moderator, f"/staff/held/{case_id}")
        assert view["held_message"]["state"] == outcome and view["decision"]["review"] == outcome, view
        seen = [(m["id"], m["text"]) for m in await world.history(recipient, conversation)]
        assert seen == ([(message_id, f"a great deal on {HOLD_WORD}")] if released else []), seen
        # Any event about it (a `message.deleted` has its id, a `message.new` the message).
        theirs = [
            (e["type"], e.get("message", {}).get("id", e.get("message_id")))
            for e in await replayed(recipient)
            if e.get("message_id") == message_id or "message" in e
        ]
        assert theirs == ([("message.new", message_id)] if released else []), theirs
        [row] = await stored(
            world.server, "SELECT body IS NULL, review FROM messages WHERE id = ?", message_id
        )
        assert (bool(row[0]), row[1]) == ((False, None) if released else (True, "refused")), row
        told = [e["outcome"] for e in await replayed(sender) if e["type"] == "message.review"]
        assert told == [outcome], told
        await close_all(sender, recipient)


# -- members ------------------------------------------------------------------------------------


async def test_a_member_removed_while_sending_has_nothing_stored_after_the_removal(world: World) -> None:
    """Twenty sends by ben while the owner removes him from the group: each is 201 or 404;
    every 201 is stored and in ann's history, and among ann's events before the removal,
    none after it; what was refused is not stored."""
    owner, ann, ben = await members(world.server, 3)
    cid = (await owner.start_conversation([ann.username, ben.username], title="a group", kind="group")).id
    async with http(world.server, owner.token) as api:
        remove = functools.partial(api.delete, f"/conversations/{cid}/members/{ben.username}")
        acked, removed = await sends_racing(world.server, ben, cid, remove, 404)
    assert removed.status_code == 200, removed.text
    overlapped(acked, "the removal")
    assert await world.stored_ids(ben, cid) == await world.shown(ann, cid, ben) == acked
    events = await replayed(ann)
    [removal] = [i for i, e in enumerate(events) if e.get("change") == "member_removed"]
    assert sent_by(events[:removal], ben, cid) == acked and sent_by(events[removal:], ben, cid) == []
    assert_problem(await world.post(ben, f"/conversations/{cid}/messages", {"text": "still here?"}), 404)
    await close_all(owner, ann, ben)


async def test_two_admins_adding_one_member_at_once_add_them_once(world: World) -> None:
    """Five groups, in each the owner and an admin add the same newcomer at once (ten adds
    together): both succeed, the newcomer is a member once, and the members are told once."""
    groups = []
    for _ in range(5):
        owner, admin, newcomer = await members(world.server, 3)
        cid = (await owner.start_conversation([admin.username], title="a group", kind="group")).id
        await owner.set_role(cid, admin.username, "admin")
        groups.append((owner, admin, newcomer, cid))
    answers = await asyncio.gather(
        *(
            world.post(c, f"/conversations/{cid}/members", {"members": [n.username]})
            for o, a, n, cid in groups
            for c in (o, a)
        )
    )
    for n, (owner, admin, newcomer, cid) in enumerate(groups):
        assert [a.status_code for a in answers[2 * n : 2 * n + 2]] == [200, 200], answers[2 * n].text
        everyone = sorted(m.username for m in (owner, admin, newcomer))
        assert sorted((await owner.conversation(cid)).members) == everyone
        sql = "SELECT left_ms FROM members WHERE conversation_id = ? AND user_id = ?"
        assert await stored(world.server, sql, cid, int((await newcomer.me())["id"])) == [(None,)]
        for client in (owner, newcomer):
            added = [e["members"] for e in await replayed(client) if e.get("change") == "members_added"]
            assert added == [[newcomer.username]], added
        await close_all(owner, admin, newcomer)


async def test_a_block_in_a_direct_conversation_stops_every_message_committed_after_it(world: World) -> None:
    """Twenty sends by ben while ann blocks him in their direct conversation: each is 201 or
    403; what is stored is exactly what was acknowledged, and exactly that reaches ann, in
    history and on her live stream; a send made after the block's 204 is refused."""
    ann, ben, friend = await members(world.server, 3)
    cid = (await ann.start_conversation([ben.username])).id
    side = (await friend.start_conversation([ann.username])).id
    stream = await live(ann)
    async with http(world.server, ann.token) as api:
        block = functools.partial(api.put, f"/blocks/{ben.username}")
        acked, blocked = await sends_racing(world.server, ben, cid, block, 403)
    assert blocked.status_code == 204, blocked.text
    overlapped(acked, "the block")
    assert_problem(await world.post(ben, f"/conversations/{cid}/messages", {"text": "let me in"}), 403)
    assert await world.stored_ids(ben, cid) == await world.shown(ann, cid, ben) == acked
    # Whatever reached ann's stream before a later message of another conversation has come.
    sentinel = (await friend.send(side, "are you there?")).id
    assert sorted(m.id for m in await streamed_until(stream, sentinel) if m.conversation_id == cid) == acked
    await close_all(stream, ann, ben, friend)


async def test_a_block_in_a_group_hides_every_message_committed_after_it(world: World) -> None:
    """Twenty sends by ben in a group while ann blocks him: all are stored (the group stays
    open to him) and carol sees them all; ann sees a prefix of them in id (commit) order, those
    committed before the block, and the same on her live stream; nothing sent after it."""
    ann, ben, carol = await members(world.server, 3)
    cid = (await carol.start_conversation([ann.username, ben.username], title="a group", kind="group")).id
    stream = await live(ann)
    async with http(world.server, ann.token) as api:
        block = functools.partial(api.put, f"/blocks/{ben.username}")
        acked, blocked = await sends_racing(world.server, ben, cid, block)
    assert blocked.status_code == 204 and len(acked) == 20, blocked.text
    after = (await ben.send(cid, "after the block")).id
    everything = sorted([*acked, after])
    assert await world.stored_ids(ben, cid) == await world.shown(carol, cid, ben) == everything
    shown = await world.shown(ann, cid, ben)
    overlapped(shown, "the block")
    assert shown == everything[: len(shown)] and after not in shown, f"ann sees {shown} of {everything}"
    sentinel = (await carol.send(cid, "are you there?")).id
    assert sorted(m.id for m in await streamed_until(stream, sentinel) if m.sender == ben.username) == shown
    await close_all(stream, ann, ben, carol)


async def test_an_account_deleted_while_sending_leaves_every_acknowledged_message_a_tombstone(
    world: World,
) -> None:
    """Twenty sends by ben while he deletes his account: each is 201, or 401 or 403 once his
    sessions have ended; every 201 is stored and in ann's history as a tombstone, its content
    destroyed, and nothing refused is stored."""
    ann, ben = await members(world.server, 2)
    cid = (await ann.start_conversation([ben.username])).id
    async with http(world.server, ben.token) as api:
        delete = functools.partial(api.post, "/account/delete", json={"password": PASSWORD})
        acked, deleted = await sends_racing(world.server, ben, cid, delete, 401, 403)
    assert deleted.status_code == 204, deleted.text
    overlapped(acked, "the deletion")
    sql = "SELECT id, body IS NULL, deleted_ms IS NOT NULL FROM messages WHERE conversation_id = ?"
    rows = sorted(await stored(world.server, sql, cid))
    assert [r[0] for r in rows] == acked and all(r[1] and r[2] for r in rows), rows
    seen = await world.history(ann, cid)
    assert sorted(m["id"] for m in seen) == acked and all(m["deleted"] and m["text"] is None for m in seen), (
        seen
    )
    await close_all(ann, ben)
