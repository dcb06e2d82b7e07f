"""Preservation holds are invisible to everyone but the legal staff of their case; moderator
removals announce themselves. Against real servers (SQLite and PostgreSQL), staff made as
`keyhold staff add` makes them.

The promise: under an approved preservation hold, members and moderators see exactly what
they would see without it (deleted attachments are gone, deleted messages are tombstones);
only legal staff, through governed access under a case granting `message_content`, still
reach the preserved content. Every check of a held conversation is set beside the same steps
in a conversation no hold covers.

And: a moderator's `remove_message` tells every member of the conversation, with the same
`message.deleted` event a sender's own delete-for-everyone produces.

Each test makes its own members (and its own hold), so tests do not depend on each other's
order. Each staff member signs in once per server (a TOTP code is accepted once per step).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import PASSWORD, Server, new_member
from keyhold.sdk import Client, Event, KeyholdError, LegalRequest, Message, StaffClient, Stream
from staff_helpers import signed_in, staff_server_fixture
from stream_helpers import WAIT, close_all, live, next_of

STAFF = {
    "legal_a": ("legal", "us"),
    "legal_b": ("legal", "us"),
    "mod_a": ("moderator", "us"),
    "mod_b": ("moderator", "us"),
    "legal_eu_a": ("legal", "eu"),
    "legal_eu_b": ("legal", "eu"),
}
# What differs between two otherwise identical items of two conversations.
IDS_AND_TIMES = ("id", "conversation_id", "sender_id", "sender", "sent_at")
FILE = b"%PDF-1.4 the attachment"
# A history as a member sees it, without ids: (from alice?, kind, text, deleted, has attachment).
Seen = list[tuple[bool, str, str | None, bool, bool]]


# -- helpers --------------------------------------------------------------------------------------


def day(offset_days: int = 0) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=offset_days)).date().isoformat()


def blob_path(server: Server, attachment_id: str) -> Path:
    return server.home / "blobs" / attachment_id[-2:] / attachment_id


@dataclass
class Legal:
    """Two legal staff of region us: one files, the other approves (four eyes)."""

    first: StaffClient
    second: StaffClient

    async def approved(self, process: str, targets: list[str], categories: list[str]) -> int:
        case = await self.first.create_legal_case(
            LegalRequest(
                agency="Federal Bureau of Investigation",
                officer="Special Agent Dana Scully",
                contact="dscully@fbi.example",
                country="US" if self.first.region == "us" else "DE",
                process=process,
                targets=targets,
                date_from=day(-1),
                date_to=day(1),
                categories=categories,
                document=f"%PDF-1.4 {process} for {targets}".encode(),
            )
        )
        assert case["status"] == "pending", case
        approved = await self.second.approve(case["id"])
        assert approved["status"] == "approved", approved
        return int(case["id"])

    async def hold(self, member: Client) -> int:
        """An approved preservation hold on `member`."""
        return await self.approved("preservation", [member.username], [])


@dataclass
class World:
    server: Server
    staff: dict[str, StaffClient]

    @property
    def legal(self) -> Legal:
        return Legal(self.staff["legal_a"], self.staff["legal_b"])

    @property
    def legal_eu(self) -> Legal:
        return Legal(self.staff["legal_eu_a"], self.staff["legal_eu_b"])

    def moderator(self, case: dict[str, Any]) -> StaffClient:
        assert case["assigned_to"] is not None, case
        return next(s for s in self.staff.values() if s.id == case["assigned_to"])

    async def assigned(self, case_id: int) -> StaffClient:
        """The moderator the case was assigned to, having claimed it."""
        moderator = self.moderator(await self.staff["mod_a"].report(case_id))
        claimed = await moderator.claim(case_id)
        assert claimed["assigned_to"] == moderator.id and claimed["status"] == "open", claimed
        return moderator


holds_server = staff_server_fixture("holds", STAFF)


@pytest.fixture(scope="module")
async def world(holds_server: tuple[Server, dict[str, str]]) -> AsyncIterator[World]:
    server, secrets = holds_server
    async with signed_in(server, secrets) as staff:
        yield World(server, staff)


async def download_status(client: Client, attachment_id: str) -> int:
    """GET /api/v1/attachments/{id} as this member: 200, or the status of the refusal."""
    try:
        data = await client.download(attachment_id)
    except KeyholdError as exc:
        return exc.status
    assert data == FILE
    return 200


async def report(client: Client, conversation_id: int, message_ids: list[int]) -> int:
    return int((await client.report(conversation_id, message_ids, "harassment"))["id"])


def without_ids(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in IDS_AND_TIMES}


def as_seen(messages: list[Message], sender: Client) -> Seen:
    """A member's history, without ids: (from `sender`?, kind, text, deleted, has attachment)."""
    return [
        (m.sender == sender.username, m.kind, m.text, m.deleted, m.attachment is not None) for m in messages
    ]


async def sent_file(alice: Client, bob: Client) -> tuple[int, Message]:
    """A direct conversation where alice sends bob a file, and bob can download it."""
    conv = await alice.start_conversation([bob.username])
    await bob.send(conv.id, "send me the file")
    sent = await alice.send_file(conv.id, FILE, "evidence.pdf", "application/pdf", text="here it is")
    assert sent.attachment is not None
    assert await download_status(bob, sent.attachment.id) == 200
    return conv.id, sent


# -- A. a preservation hold is invisible to members and moderators ---------------------------------


async def test_a_deleted_attachment_is_gone_for_members_under_a_hold(world: World) -> None:
    """A1: alice deletes for everyone a message with an attachment: bob's download is 410 with
    or without a hold on alice (the hold keeps the sealed blob, but only for legal staff)."""
    # Without a hold: the reference.
    plain_alice, plain_bob = await new_member(world.server), await new_member(world.server)
    plain_conv, plain_sent = await sent_file(plain_alice, plain_bob)
    assert plain_sent.attachment is not None
    await plain_alice.delete_message(plain_sent.id)
    plain_status = {
        c.username: await download_status(c, plain_sent.attachment.id) for c in (plain_alice, plain_bob)
    }
    assert set(plain_status.values()) == {410}, plain_status

    # Under an approved preservation hold on alice: the same.
    alice, bob = await new_member(world.server), await new_member(world.server)
    await world.legal.hold(alice)
    conv, sent = await sent_file(alice, bob)
    assert sent.attachment is not None
    await alice.delete_message(sent.id)
    bob_status = await download_status(bob, sent.attachment.id)
    assert bob_status == 410, (
        f"under a hold, bob downloads the attachment alice deleted: {bob_status} (without a hold: 410)"
    )
    assert await download_status(alice, sent.attachment.id) == 410
    # The members' histories are the same tombstones as without the hold.
    assert as_seen(await bob.history(conv), alice) == as_seen(
        await plain_bob.history(plain_conv), plain_alice
    )
    # The hold still keeps the sealed attachment (for legal staff; released, it is destroyed).
    assert blob_path(world.server, sent.attachment.id).exists(), "the hold did not keep the attachment"
    await close_all(plain_alice, plain_bob, alice, bob)


async def deleted_in_report_window(world: World, held: bool) -> tuple[list[dict[str, Any]], int]:
    """alice deletes a message; bob then reports another message of alice; the assigned
    moderator reads the window. Returns the window and the deleted message's id."""
    alice, bob = await new_member(world.server), await new_member(world.server)
    if held:
        await world.legal.hold(alice)
    conv = await alice.start_conversation([bob.username])
    await bob.send(conv.id, "what did you say?")
    regretted = await alice.send(conv.id, "something alice regrets")
    reported = await alice.send(conv.id, "you are awful")
    await bob.send(conv.id, "reporting this")
    await alice.delete_message(regretted.id)
    case_id = await report(bob, conv.id, [reported.id])
    moderator = await world.assigned(case_id)
    window = await moderator.report_content(case_id, reason="review of a harassment report")
    await close_all(alice, bob)
    return window, regretted.id


async def test_a_moderator_sees_a_message_deleted_under_a_hold_as_a_tombstone(world: World) -> None:
    """A2: in a report window, a message alice deleted under a hold on her is a tombstone
    (`text` None, `deleted` True), item for item what it is without a hold."""
    plain_window, plain_deleted = await deleted_in_report_window(world, held=False)
    [plain_item] = [m for m in plain_window if m["id"] == plain_deleted]
    assert plain_item["text"] is None and plain_item["deleted"] is True, plain_item

    window, deleted = await deleted_in_report_window(world, held=True)
    [item] = [m for m in window if m["id"] == deleted]
    assert item["text"] is None, f"under a hold the moderator reads the deleted text: {item['text']!r}"
    assert item["deleted"] is True, item
    assert sorted(item) == sorted(plain_item)
    assert without_ids(item) == without_ids(plain_item)
    # The whole window, item for item.
    assert [sorted(m) for m in window] == [sorted(m) for m in plain_window]
    assert [without_ids(m) for m in window] == [without_ids(m) for m in plain_window]


async def test_legal_staff_still_read_what_the_hold_keeps(world: World) -> None:
    """A3 (positive control): the preserved text of a message alice deleted under the hold is
    read by legal staff of her region under an approved search warrant for her content."""
    alice, bob = await new_member(world.server), await new_member(world.server)
    await world.legal.hold(alice)
    conv = await alice.start_conversation([bob.username])
    kept = await alice.send(conv.id, "alice deletes this under the hold")
    await bob.send(conv.id, "bob answers")
    await alice.delete_message(kept.id)
    assert {m.id: m for m in await bob.history(conv.id)}[kept.id].text is None

    warrant = await world.legal.approved("search_warrant", [alice.username], ["message_content"])
    [read] = await world.legal.first.read(warrant, [kept.id], "preserved message")
    assert read["id"] == kept.id
    assert read["text"] == "alice deletes this under the hold" and read["deleted"] is True, read
    await close_all(alice, bob)


async def test_what_a_hold_keeps_opens_only_for_a_case_the_hold_serves(world: World) -> None:
    """The preserved text opens for a warrant on the person the hold is on, in the hold's
    region; a warrant of another region, or on someone else of the same conversation, reads
    the tombstone it would read without the hold (and so learns of no hold)."""
    alice, carol = await new_member(world.server), await new_member(world.server)
    bob = await new_member(world.server, region="eu")
    await world.legal.hold(alice)
    group = await alice.start_conversation([bob.username, carol.username], title="three regions")
    kept = await alice.send(group.id, "alice deletes this under a us hold")
    await alice.delete_message(kept.id)

    on_alice = await world.legal.approved("search_warrant", [alice.username], ["message_content"])
    on_carol = await world.legal.approved("search_warrant", [carol.username], ["message_content"])
    on_bob = await world.legal_eu.approved("search_warrant", [bob.username], ["message_content"])
    [by_hold_case] = await world.legal.first.read(on_alice, [kept.id], "the preserved message")
    [by_other_case] = await world.legal.first.read(on_carol, [kept.id], "not the hold's person")
    [by_other_region] = await world.legal_eu.first.read(on_bob, [kept.id], "not the hold's region")

    assert by_hold_case["text"] == "alice deletes this under a us hold", by_hold_case
    for read in (by_other_case, by_other_region):
        assert read["text"] is None and read["deleted"] is True, read
    await close_all(alice, bob, carol)


async def deleted_account_view(world: World, held: bool) -> tuple[int, Seen]:
    """alice sends bob a file and a text, then deletes her account: bob's download status of
    the file and his history (without ids)."""
    alice, bob = await new_member(world.server), await new_member(world.server)
    if held:
        await world.legal.hold(alice)
    conv, sent = await sent_file(alice, bob)
    assert sent.attachment is not None
    await alice.send(conv, "alice's last words")
    await bob.send(conv, "bob's reply")
    await alice.delete_account(PASSWORD)
    status = await download_status(bob, sent.attachment.id)
    seen = as_seen(await bob.history(conv), alice)
    if held:
        assert blob_path(world.server, sent.attachment.id).exists(), "the hold did not keep the attachment"
    await close_all(alice, bob)
    return status, seen


async def test_account_deletion_under_a_hold_looks_the_same_to_the_partner(world: World) -> None:
    """A4: alice, under a hold, deletes her account: bob's download of the file she sent him
    is 410 and his history shows her messages as tombstones, as without a hold."""
    plain_status, plain_seen = await deleted_account_view(world, held=False)
    assert plain_status == 410
    assert plain_seen == [
        (False, "text", "send me the file", False, False),
        (True, "attachment", None, True, False),
        (True, "text", None, True, False),
        (False, "text", "bob's reply", False, False),
    ]
    status, seen = await deleted_account_view(world, held=True)
    assert status == 410, (
        f"under a hold, bob downloads the file of alice's deleted account: {status} (without a hold: 410)"
    )
    assert seen == plain_seen


async def removed_attachment_view(world: World, held: bool) -> dict[str, Any]:
    """bob reports alice's file; the assigned moderator decides `remove_message`. What the two
    members then get for the attachment, and bob's history (without ids)."""
    alice, bob = await new_member(world.server), await new_member(world.server)
    if held:
        await world.legal.hold(alice)
    conv, sent = await sent_file(alice, bob)
    assert sent.attachment is not None
    case_id = await report(bob, conv, [sent.id])
    moderator = await world.assigned(case_id)
    decided = await moderator.decide(case_id, "remove_message", note="not allowed here")
    assert decided["status"] == "decided"
    view = {
        "alice": await download_status(alice, sent.attachment.id),
        "bob": await download_status(bob, sent.attachment.id),
        "history": as_seen(await bob.history(conv), alice),
    }
    if held:
        assert blob_path(world.server, sent.attachment.id).exists(), "the hold did not keep the attachment"
    await close_all(alice, bob)
    return view


async def test_a_moderator_removal_under_a_hold_removes_the_attachment_for_members(world: World) -> None:
    """A5: a `remove_message` decision on alice's message with an attachment: under a hold on
    alice, the conversation's members get 410 for the attachment, as without a hold."""
    plain = await removed_attachment_view(world, held=False)
    assert plain["alice"] == plain["bob"] == 410, plain
    assert plain["history"] == [
        (False, "text", "send me the file", False, False),
        (True, "attachment", None, True, False),
    ]
    held = await removed_attachment_view(world, held=True)
    assert held["bob"] == 410 and held["alice"] == 410, (
        f"under a hold, the removed attachment still downloads: {held} (without a hold: 410)"
    )
    assert held == plain


# -- B. moderator removals announce themselves ------------------------------------------------------


async def deleted_event(stream: Stream, who: str, what: str) -> Event:
    """The next `message.deleted` on this stream (other event types are passed over); fails
    the test if none comes within WAIT seconds of the previous event."""
    while True:
        event: Event | None = None
        try:
            event = await stream.next_event(WAIT)
        except TimeoutError:
            pass
        if event is None:
            pytest.fail(f"{who} got no message.deleted event for {what} (waited {WAIT} s)")
        if event.type == "message.deleted":
            return event


def event_shape(event: Event) -> dict[str, Any]:
    return {k: v for k, v in event.data.items() if k not in ("seq", "message_id")}


@pytest.mark.parametrize("held", [False, True], ids=["plain", "held"])
async def test_a_moderator_removal_announces_itself_to_every_member(world: World, held: bool) -> None:
    """B: in a group of alice, bob and carol, each with an open stream, a `remove_message`
    decision on alice's message reaches every member as `message.deleted` carrying its id,
    the same event (type and fields) as alice's own delete for everyone."""
    alice, bob, carol = [await new_member(world.server) for _ in range(3)]
    if held:
        await world.legal.hold(alice)
    conv = await alice.start_conversation([bob.username, carol.username], title="three of us")
    assert conv.kind == "group"
    withdrawn = await alice.send(conv.id, "alice takes this back")
    offending = await alice.send(conv.id, "you are all awful")
    await bob.send(conv.id, "reporting this")
    members = {"alice": alice, "bob": bob, "carol": carol}
    streams = {name: await live(client) for name, client in members.items()}
    try:
        # The reference: alice deletes her own message for everyone.
        await alice.delete_message(withdrawn.id)
        own: dict[str, Event] = {}
        for name, stream in streams.items():
            own[name] = await next_of(stream, "message.deleted")
            assert own[name].data["message_id"] == withdrawn.id
            assert own[name].data["conversation_id"] == conv.id

        # A moderator removes alice's reported message.
        case_id = await report(bob, conv.id, [offending.id])
        moderator = await world.assigned(case_id)
        decided = await moderator.decide(case_id, "remove_message", note="not allowed here")
        assert decided["status"] == "decided"
        for name, stream in streams.items():
            event = await deleted_event(stream, name, f"the message {offending.id} a moderator removed")
            assert event.data["message_id"] == offending.id, event.data
            assert event.type == own[name].type
            assert sorted(event.data) == sorted(own[name].data), (event.data, own[name].data)
            assert event_shape(event) == event_shape(own[name])
        for client in (bob, carol):
            removed = {m.id: m for m in await client.history(conv.id)}[offending.id]
            assert removed.deleted and removed.text is None
    finally:
        await close_all(*streams.values(), alice, bob, carol)
