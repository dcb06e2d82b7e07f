"""Delivery to devices (issue 8, item 3), on both databases: `e2ee.to_device` to the addressed
device's connections only and exactly once across reconnects; `e2ee.key_counts` after a claim
and right after `ready`; `e2ee.device_lists` to whoever shares a conversation."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Literal

import pytest

from conftest import PASSWORD, Server, raw
from e2ee_helpers import Member, published, sharing
from keyhold.sdk import Client, Event, Stream
from keyhold.sdk.e2ee.device import OlmDevice

pytestmark = pytest.mark.postgres
WAIT = 10.0


async def send(sender: Member | Client, messages: dict[str, Any], txn_id: str | None = None) -> Any:
    client = sender.client if isinstance(sender, Member) else sender
    path = f"/e2ee/sendToDevice/m.room_key_request/{txn_id or uuid.uuid4().hex}"
    return await raw(client, "PUT", path, json={"messages": messages})


async def connected(client: Client, since: int | Literal["latest"] = 0) -> Stream:
    stream = await client.connect(since)
    await asyncio.wait_for(stream.ready.wait(), WAIT)
    return stream


async def next_device_event(stream: Stream, kind: str = "e2ee.to_device") -> Event:
    """The next event of `kind`, passing over the others that a device's stream carries."""
    while True:
        event = await stream.next_event(WAIT)
        if event.type == kind:
            return event


async def nothing_more(stream: Stream, kind: str = "e2ee.to_device") -> None:
    with pytest.raises(TimeoutError):
        await next_device_event_quick(stream, kind)


async def next_device_event_quick(stream: Stream, kind: str) -> Event:
    return await asyncio.wait_for(next_device_event(stream, kind), 1.5)


async def second_device(member: Member, server: Server, device_id: str) -> Client:
    client = await Client.login(server.url, member.client.username, PASSWORD, device_id=device_id, e2ee=False)
    return client


async def test_a_to_device_message_reaches_the_addressed_device_only(server: Server) -> None:
    alice, bob = await sharing(server, 2)
    laptop = await second_device(alice, server, "LAPTOP")
    phone_stream, laptop_stream = await connected(alice.client), await connected(laptop)
    response = await send(bob, {alice.user_id: {alice.device.device_id: {"n": 1, "body": "for the phone"}}})
    assert response.status_code == 200 and response.json() == {}, response.text
    got = await next_device_event(phone_stream)
    assert got.data["event"] == {
        "type": "m.room_key_request",
        "sender": bob.user_id,
        "content": {"n": 1, "body": "for the phone"},
    }
    # "*" is every device of the user: the laptop's first to-device message is this one.
    await send(bob, {alice.user_id: {"*": {"n": 2}}})
    assert (await next_device_event(laptop_stream)).data["event"]["content"] == {"n": 2}
    assert (await next_device_event(phone_stream)).data["event"]["content"] == {"n": 2}
    # A replay from the start on the laptop does not carry the phone's message either.
    replay = await connected(laptop, 0)
    assert (await next_device_event(replay)).data["event"]["content"] == {"n": 2}
    for stream in (phone_stream, laptop_stream, replay):
        await stream.close()
    await laptop.close()


async def test_to_device_messages_arrive_exactly_once_across_reconnects(server: Server) -> None:
    alice, bob = await sharing(server, 2)
    first = await connected(alice.client)
    await send(bob, {alice.user_id: {alice.device.device_id: {"n": 0}}})
    seen = await next_device_event(first)
    await first.close()
    for n in (1, 2, 3):  # while the device is away
        await send(bob, {alice.user_id: {alice.device.device_id: {"n": n}}})
    back = await connected(alice.client, seen.seq)
    received = [(await next_device_event(back)).data["event"]["content"]["n"] for _ in range(3)]
    assert received == [1, 2, 3]
    last = back.last_seq
    await back.close()
    # Reconnected past them, they are gone: not even a replay from the start brings them back.
    again = await connected(alice.client, last)
    await nothing_more(again)
    await again.close()
    from_start = await connected(alice.client, 0)
    await nothing_more(from_start)
    await from_start.close()


async def test_a_retried_transaction_sends_nothing_twice(server: Server) -> None:
    alice, bob = await sharing(server, 2)
    stream = await connected(alice.client)
    results = await asyncio.gather(
        *(send(bob, {alice.user_id: {alice.device.device_id: {"once": True}}}, txn_id="txn-1") for _ in range(5))
    )
    assert all(r.status_code == 200 for r in results)
    assert (await next_device_event(stream)).data["event"]["content"] == {"once": True}
    await nothing_more(stream)
    # The same txn id from another of bob's devices is another transaction.
    bob_tablet = await Client.login(server.url, bob.client.username, PASSWORD, device_id="TABLET", e2ee=False)
    await send(bob_tablet, {alice.user_id: {alice.device.device_id: {"from": "tablet"}}}, txn_id="txn-1")
    assert (await next_device_event(stream)).data["event"]["content"] == {"from": "tablet"}
    await stream.close()
    await bob_tablet.close()


async def test_a_stranger_reaches_no_device(server: Server) -> None:
    alice = await published(server)
    stranger = await published(server)
    stream = await connected(alice.client)
    response = await send(stranger, {alice.user_id: {"*": {"spam": True}}})
    assert response.status_code == 200 and response.json() == {}  # as for an unknown user
    await nothing_more(stream)
    await stream.close()


async def test_key_counts_follow_ready_and_every_claim(server: Server) -> None:
    owner = await published(server, one_time_keys=2, fallback=True)
    claimer = await published(server)
    await owner.client.follow(claimer.client.username)
    await claimer.client.follow(owner.client.username)
    stream = await owner.client.connect(0)
    greeting = await next_device_event(stream, "e2ee.key_counts")
    assert greeting.data["one_time_key_counts"] == {"signed_curve25519": 2}
    assert greeting.data["unused_fallback_key_types"] == ["signed_curve25519"]
    wanted = {owner.user_id: {owner.device.device_id: "signed_curve25519"}}
    for left in (1, 0):
        await claimer.claim(wanted)
        counts = await next_device_event(stream, "e2ee.key_counts")
        assert counts.data["one_time_key_counts"] == {"signed_curve25519": left}
        assert counts.data["unused_fallback_key_types"] == ["signed_curve25519"]
    await claimer.claim(wanted)  # now the fallback key: it is used, and the device is told
    counts = await next_device_event(stream, "e2ee.key_counts")
    assert counts.data["unused_fallback_key_types"] == []
    await stream.close()


async def test_device_list_changes_reach_those_who_share_a_conversation(server: Server) -> None:
    alice, bob = await sharing(server, 2)
    carol = await published(server)
    bob_stream = await connected(bob.client, "latest")
    carol_stream = await connected(carol.client, "latest")
    laptop = await second_device(alice, server, "LAPTOP")
    laptop_keys = OlmDevice(alice.user_id, "LAPTOP")
    assert (await raw(laptop, "POST", "/e2ee/keys/upload", json={"device_keys": laptop_keys.device_keys()})).status_code == 200
    changed = await next_device_event(bob_stream, "e2ee.device_lists")
    assert changed.data["changed"] == [alice.user_id] and changed.data["left"] == []
    await alice.client.remove_device("LAPTOP", PASSWORD)
    assert (await next_device_event(bob_stream, "e2ee.device_lists")).data["changed"] == [alice.user_id]
    await nothing_more(carol_stream, "e2ee.device_lists")
    for stream in (bob_stream, carol_stream):
        await stream.close()
    await laptop.close()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/e2ee/sendToDevice/m.x/bad%00txn", {"messages": {}}),
        ("/e2ee/sendToDevice/m%0Ax/txn", {"messages": {}}),
        ("/e2ee/sendToDevice/m.x/txn", {"messages": {"@abc:keyhold.local": {"DEV": "not an object"}}}),
        ("/e2ee/sendToDevice/m.x/txn", {"messages": {"@abc:keyhold.local": {"DEV\x00": {}}}}),
        ("/e2ee/sendToDevice/m.x/txn", {"messages": {"@abc:keyhold.local": {"DEV": {"pad": "x" * 20000}}}}),
        ("/e2ee/sendToDevice/m.x/txn", {"messages": {"nobody": {"DEV": {}}}}),
        ("/e2ee/sendToDevice/m.x/txn", {}),
    ],
)
async def test_hostile_to_device_requests_get_a_clear_4xx(server: Server, path: str, body: Any) -> None:
    alice = await published(server)
    response = await raw(alice.client, "PUT", path, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_revoked_token_sends_nothing(server: Server) -> None:
    alice, bob = await sharing(server, 2)
    stream = await connected(alice.client)
    await bob.client.logout()
    response = await send(bob, {alice.user_id: {"*": {"late": True}}})
    assert response.status_code == 401
    await nothing_more(stream)
    await stream.close()
