"""Disappearing messages (issue 8, item 10), in both models and on both databases: a member
sets a conversation's timer, everyone is told; each message sent while it is set is deleted on
time, on the server and for every member; a `standard` key epoch whose messages are all gone
has its key shredded. (Under a preservation hold: tests/test_governance_legal.py.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from conftest import Server, new_member, raw
from db_snapshot import stored
from keyhold.sdk import Client
from stream_helpers import live, next_of

pytestmark = pytest.mark.postgres
DEADLINE_S = 15.0  # how long a test waits for a sweep: a bound on failure, not a measurement


async def gone(client: Client, conversation_id: int, message_id: int) -> None:
    """Wait until the message is a tombstone in the member's history."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = {m.id: m for m in await client.history(conversation_id)}
        if found[message_id].deleted:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"message {message_id} did not disappear within {DEADLINE_S} s")


async def test_a_timer_is_announced_and_messages_after_it_disappear(server: Server) -> None:
    alice, bob = await new_member(server), await new_member(server)
    conversation = await alice.start_conversation([bob.username])
    before = await alice.send(conversation.id, "sent before the timer")
    assert before.expires_at is None
    stream = await live(alice)
    timed = await bob.set_timer(conversation.id, 1)
    assert timed.disappear_after_seconds == 1
    event = await next_of(stream, "conversation.updated", skip=None)
    assert (event.data["change"], event.data["by"], event.data["seconds"]) == ("timer", bob.username, 1)
    vanishing = await alice.send(conversation.id, "this one disappears")
    assert vanishing.expires_at is not None
    deleted = await next_of(stream, "message.deleted", skip=None)
    assert deleted.data["message_id"] == vanishing.id
    await gone(bob, conversation.id, vanishing.id)
    history = {m.id: m for m in await bob.history(conversation.id)}
    assert history[before.id].text == "sent before the timer"  # the timer is not retroactive
    body = await stored(server, "SELECT body FROM messages WHERE id = ?", vanishing.id)
    assert body == [(None,)]  # destroyed on the server, not only hidden
    off = await alice.set_timer(conversation.id, None)
    assert off.disappear_after_seconds is None
    assert (await alice.send(conversation.id, "stays")).expires_at is None
    await stream.close()


async def test_a_key_epoch_whose_messages_all_disappeared_is_shredded(server: Server) -> None:
    alice, bob = await new_member(server), await new_member(server)
    conversation = await alice.start_conversation([bob.username])
    await alice.set_timer(conversation.id, 1)
    sent = [await alice.send(conversation.id, f"fleeting {i}") for i in range(3)]
    await gone(bob, conversation.id, sent[-1].id)
    deadline = time.monotonic() + DEADLINE_S
    wrapped: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        wrapped = await stored(server, "SELECT epoch, wrapped_dek FROM conversation_keys WHERE conversation_id = ?", conversation.id)
        if wrapped and all(dek is None for _, dek in wrapped):
            break
        await asyncio.sleep(0.2)
    assert wrapped and all(dek is None for _, dek in wrapped), wrapped
    # The conversation goes on under a fresh key.
    await alice.set_timer(conversation.id, None)
    after = await alice.send(conversation.id, "a new epoch")
    assert [m.text for m in await bob.history(conversation.id)][-1] == "a new epoch" and after.expires_at is None


async def test_e2ee_ciphertext_disappears_too(server: Server) -> None:
    alice, bob = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    await bob.set_timer(conversation.id, 1)
    sent = await alice.send(conversation.id, "private and fleeting")
    assert sent.expires_at is not None
    await gone(bob, conversation.id, sent.id)
    (item,) = (await raw(bob, "GET", f"/conversations/{conversation.id}/messages")).json()["items"]
    assert item["deleted"] is True and item["event"] is None
    assert await stored(server, "SELECT body FROM messages WHERE id = ?", sent.id) == [(None,)]


@pytest.mark.parametrize("seconds", [0, -1, 366 * 24 * 3600, 2**63, 2**70, "5", 1.5, True])
async def test_a_bad_timer_is_refused(server: Server, seconds: Any) -> None:
    alice, bob = await new_member(server), await new_member(server)
    conversation = await alice.start_conversation([bob.username])
    response = await raw(alice, "PUT", f"/conversations/{conversation.id}/timer", json={"seconds": seconds})
    assert response.status_code == 422, response.text
    assert (await alice.conversation(conversation.id)).disappear_after_seconds is None


async def test_outsiders_and_former_members_cannot_set_the_timer(server: Server) -> None:
    alice, bob, carol = await new_member(server), await new_member(server), await new_member(server)
    group = await alice.start_conversation([bob.username, carol.username], kind="group")
    outsider = await new_member(server)
    refused = await raw(outsider, "PUT", f"/conversations/{group.id}/timer", json={"seconds": 60})
    assert refused.status_code == 404
    await carol.leave(group.id)
    assert (await raw(carol, "PUT", f"/conversations/{group.id}/timer", json={"seconds": 60})).status_code == 404
    await bob.logout()
    assert (await raw(bob, "PUT", f"/conversations/{group.id}/timer", json={"seconds": 60})).status_code == 401
    assert (await alice.conversation(group.id)).disappear_after_seconds is None
