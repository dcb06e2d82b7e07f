"""Verification (issue 8, item 9), on both databases: safety numbers from two members' master
keys, interactive SAS verification between two Python devices over to-device messages in
Matrix's `m.key.verification.*` / `m.sas.v1` shapes (and what a tampered or refused one does),
verified status kept in the device's state, and the warning a contact's identity change raises
before the next send."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import vodozemac

from conftest import PASSWORD, Server, new_member, raw, unique
from keyhold.crypto.signed_json import encode_base64
from keyhold.sdk import (
    Client,
    IdentityChanged,
    SafetyNumber,
    SasVerification,
    VerificationCancelled,
    VerificationUnavailable,
)
from keyhold.sdk.e2ee.safety_numbers import fingerprint_half
from keyhold.sdk.e2ee.sas import EMOJI

pytestmark = pytest.mark.postgres

WAIT = 30.0  # an upper bound for each step, never asserted on


async def e2ee_pair(server: Server) -> tuple[Client, Client, int]:
    alice, bob = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    return alice, bob, conversation.id


async def master_key(client: Client, of: Client) -> str:
    answer = (await raw(client, "POST", "/e2ee/keys/query", json={"device_keys": {of.user_id: []}})).json()
    (key,) = answer["master_keys"][of.user_id]["keys"].values()
    return str(key)


async def started(alice: Client, bob: Client) -> tuple[SasVerification, SasVerification]:
    """Alice asks Bob's device to verify; Bob's device accepts."""
    outgoing = await alice.start_verification(bob.username)
    incoming = await bob.next_verification_request(timeout=WAIT)
    await incoming.accept()
    return outgoing, incoming


async def verify(alice: Client, bob: Client) -> None:
    outgoing, incoming = await started(alice, bob)
    assert await outgoing.codes(WAIT) == await incoming.codes(WAIT)
    await asyncio.gather(outgoing.confirm(), incoming.confirm())
    assert await outgoing.done(WAIT) and await incoming.done(WAIT)


class Tamper(httpx.AsyncBaseTransport):
    """What a hostile server does to one client's to-device messages of one type in transit:
    replace the SAS public key with its own."""

    def __init__(self, event_type: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.event_type = event_type
        self.rewritten = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and f"/sendToDevice/{self.event_type}/" in request.url.path:
            body = json.loads(request.content)
            for devices in body["messages"].values():
                for content in devices.values():
                    content["key"] = vodozemac.Sas().public_key.to_base64()
                    self.rewritten += 1
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            request = httpx.Request(
                request.method, request.url, headers=headers, content=json.dumps(body).encode()
            )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- safety numbers ----------------------------------------------------------------------------


def test_the_derivation_is_the_documented_one() -> None:
    """An independent implementation of docs/e2ee.md's derivation (hashlib, not the SDK's)."""
    key = bytes(range(32))
    user = "@alice:keyhold.local"
    h = b"\x00\x00" + key + user.encode()
    for _ in range(5200):
        h = hashlib.sha512(h + key).digest()
    expected = "".join(f"{int.from_bytes(h[5 * j : 5 * j + 5], 'big') % 100000:05d}" for j in range(6))
    assert fingerprint_half(user, encode_base64(key)) == expected
    assert fingerprint_half("@bob:keyhold.local", encode_base64(key)) != expected


async def test_safety_numbers_agree_and_change_with_the_master_key(server: Server) -> None:
    alice, bob, _ = await e2ee_pair(server)
    mine, theirs = await alice.safety_number(bob.username), await bob.safety_number(alice.username)
    assert mine.digits == theirs.digits and len(mine.digits) == 60 and mine.digits.isdigit()
    groups = mine.formatted.split(" ")
    assert len(groups) == 12 and all(len(g) == 5 for g in groups) and "".join(groups) == mine.digits
    assert mine.qr_payload == theirs.qr_payload
    assert mine.matches(theirs.qr_payload) and theirs.matches(mine.qr_payload)
    assert mine.master_key == await master_key(alice, alice) and mine.other_master_key == await master_key(
        alice, bob
    )

    # A key the server substituted for Bob's: the digits differ and the scan fails, both ways.
    substitute = SafetyNumber(mine.user_id, mine.master_key, mine.other_user_id, await master_key(bob, bob))
    assert substitute.digits == mine.digits  # the same keys: the same number
    mallory = await new_member(server, e2ee=True)
    await mallory.start_conversation([alice.username], encryption="e2ee")
    forged = SafetyNumber(mine.user_id, mine.master_key, mine.other_user_id, await master_key(alice, mallory))
    assert forged.digits != mine.digits
    assert not forged.matches(theirs.qr_payload) and not theirs.matches(forged.qr_payload)
    tampered = bytearray(theirs.qr_payload)
    tampered[-1] ^= 1
    assert not mine.matches(bytes(tampered)) and not mine.matches(b"garbage") and not mine.matches(b"")

    # Bob makes new cross-signing keys: both sides' numbers change, and still agree.
    await bob.reset_cross_signing(PASSWORD)
    after_alice, after_bob = await alice.safety_number(bob.username), await bob.safety_number(alice.username)
    assert after_alice.digits == after_bob.digits != mine.digits
    assert not after_alice.matches(theirs.qr_payload)


async def test_no_safety_number_without_master_keys_or_devices(server: Server) -> None:
    alice = await new_member(server, e2ee=True)
    plain = await new_member(server)  # no e2ee device, no master key
    await alice.start_conversation([plain.username], encryption="e2ee")
    with pytest.raises(VerificationUnavailable, match="no end-to-end encryption device"):
        await alice.safety_number(plain.username)
    with pytest.raises(VerificationUnavailable):
        await plain.safety_number(alice.username)  # no e2ee device on this side
    with pytest.raises(VerificationUnavailable, match="no other e2ee device"):
        await alice.start_verification(plain.username)


# -- cross-signing bootstrap -------------------------------------------------------------------


async def test_the_first_device_makes_and_keeps_the_cross_signing_keys(
    server: Server, tmp_path: Path
) -> None:
    name, state = unique(), tmp_path / "first.e2ee"
    first = await Client.register(
        server.url, name, PASSWORD, birthdate="1990-05-17", state_path=state, passphrase="pass phrase"
    )
    assert first.crypto is not None and first.crypto.verification.cross_signing is not None
    master = await master_key(first, first)
    assert first.crypto.verification.cross_signing.public("master") == master
    answer = (await raw(first, "POST", "/e2ee/keys/query", json={"device_keys": {first.user_id: []}})).json()
    self_signing = answer["self_signing_keys"][first.user_id]["keys"]
    ((ssk_id, _),) = self_signing.items()
    assert ssk_id in answer["device_keys"][first.user_id][first.device_id]["signatures"][first.user_id]

    second = await Client.login(server.url, name, PASSWORD, device_id="SECOND")
    assert second.crypto is not None and second.crypto.verification.cross_signing is None  # cannot sign
    assert await master_key(second, second) == master  # nor did it replace the keys
    await first.close()
    again = await Client.login(server.url, name, PASSWORD, state_path=state, passphrase="pass phrase")
    assert again.crypto is not None and again.crypto.verification.cross_signing is not None
    assert again.crypto.verification.cross_signing.public("master") == master  # kept in the state file
    for client in (second, again):
        await client.close()


# -- SAS ---------------------------------------------------------------------------------------


async def test_sas_completes_between_two_python_devices(server: Server, tmp_path: Path) -> None:
    name, state = unique(), tmp_path / "alice.e2ee"
    alice = await Client.register(
        server.url, name, PASSWORD, birthdate="1990-05-17", state_path=state, passphrase="pass phrase"
    )
    bob = await new_member(server, e2ee=True)
    await alice.start_conversation([bob.username], encryption="e2ee")
    assert not alice.is_verified(bob.username) and not bob.is_verified(alice.username)
    async with await alice.connect(), await bob.connect():
        outgoing = await alice.start_verification(bob.username)
        assert outgoing.state == "requested" and outgoing.other_user == bob.username
        incoming = await bob.next_verification_request(timeout=WAIT)
        assert incoming.other_user == alice.username and incoming.other_device == alice.device_id
        assert incoming.transaction_id == outgoing.transaction_id and incoming.state == "incoming"
        await incoming.accept()
        mine, theirs = await outgoing.codes(WAIT), await incoming.codes(WAIT)
        assert outgoing.other_device == bob.device_id
        assert mine == theirs
        assert len(mine.decimals) == 3 and all(1000 <= d <= 9191 for d in mine.decimals)
        assert len(mine.emoji) == 7 and all(e in EMOJI for e in mine.emoji)
        assert not alice.is_verified(bob.username)  # nothing is verified before the MACs
        await asyncio.gather(outgoing.confirm(), incoming.confirm())
        assert await outgoing.done(WAIT) and await incoming.done(WAIT)
        assert outgoing.state == incoming.state == "done"
    assert alice.is_verified(bob.username) and bob.is_verified(alice.username)
    assert alice.crypto is not None and bob.crypto is not None
    contact = alice.crypto.verification.trust.contacts[bob.user_id]
    assert contact.verified_devices == {bob.device_id: bob.crypto.device.ed25519}  # the device...
    assert contact.verified_master == await master_key(alice, bob)  # ...and the member's master key

    await alice.close()  # the verified status survives a restart, in the state file
    restarted = await Client.login(server.url, name, PASSWORD, state_path=state, passphrase="pass phrase")
    assert restarted.is_verified(bob.username)
    conversation = await restarted.start_conversation([bob.username], encryption="e2ee")
    await restarted.send(conversation.id, "verified and still sending")
    assert [m.text for m in await bob.history(conversation.id)] == ["verified and still sending"]
    await restarted.close()


async def test_a_request_to_every_device_is_won_by_the_first_to_accept(server: Server) -> None:
    alice, bob, _ = await e2ee_pair(server)
    laptop = await Client.login(server.url, bob.username, PASSWORD, device_id="LAPTOP")
    async with await alice.connect(), await bob.connect(), await laptop.connect():
        outgoing = await alice.start_verification(bob.username)  # to both of Bob's devices
        on_phone = await bob.next_verification_request(timeout=WAIT)
        on_laptop = await laptop.next_verification_request(timeout=WAIT)
        await on_laptop.accept()
        assert await outgoing.codes(WAIT) == await on_laptop.codes(WAIT)
        assert outgoing.other_device == "LAPTOP"
        assert not await on_phone.done(WAIT)  # told that another device took it
        assert on_phone.cancel_code == "m.accepted"
        await asyncio.gather(outgoing.confirm(), on_laptop.confirm())
        assert await outgoing.done(WAIT) and await on_laptop.done(WAIT)
    # The laptop does not hold Bob's master key (his first device does): it vouches for itself
    # only, so Alice's device has verified that device, not Bob as a member.
    assert alice.crypto is not None and laptop.crypto is not None
    contact = alice.crypto.verification.trust.contacts[bob.user_id]
    assert contact.verified_devices == {"LAPTOP": laptop.crypto.device.ed25519}
    assert contact.verified_master is None and not alice.is_verified(bob.username)
    for client in (alice, bob, laptop):
        await client.close()


async def test_a_rewritten_responder_key_fails_the_commitment(server: Server) -> None:
    alice = await new_member(server, e2ee=True)
    tamper = Tamper("m.key.verification.key")
    bob = await Client.register(server.url, unique(), PASSWORD, birthdate="1990-05-17", transport=tamper)
    await alice.start_conversation([bob.username], encryption="e2ee")
    async with await alice.connect(), await bob.connect():
        outgoing, incoming = await started(alice, bob)
        with pytest.raises(VerificationCancelled) as cancelled:
            await outgoing.codes(WAIT)
        assert cancelled.value.code == "m.mismatched_commitment" and tamper.rewritten == 1
        assert not await incoming.done(WAIT)
        assert incoming.cancel_code == "m.mismatched_commitment"  # told by Alice's device
        with pytest.raises(VerificationCancelled):
            await incoming.confirm()
    assert not alice.is_verified(bob.username) and not bob.is_verified(alice.username)


async def test_a_rewritten_requester_key_gives_different_codes_and_failing_macs(server: Server) -> None:
    tamper = Tamper("m.key.verification.key")
    alice = await Client.register(server.url, unique(), PASSWORD, birthdate="1990-05-17", transport=tamper)
    bob = await new_member(server, e2ee=True)
    await alice.start_conversation([bob.username], encryption="e2ee")
    async with await alice.connect(), await bob.connect():
        outgoing, incoming = await started(alice, bob)
        mine, theirs = await outgoing.codes(WAIT), await incoming.codes(WAIT)
        assert tamper.rewritten == 1 and mine != theirs  # what the users would see
        # Even users who say "they match" anyway verify nothing: the MACs do not check.
        await asyncio.gather(outgoing.confirm(), incoming.confirm(), return_exceptions=True)
        assert not await outgoing.done(WAIT) and not await incoming.done(WAIT)
        assert outgoing.cancel_code == incoming.cancel_code == "m.key_mismatch"
    assert not alice.is_verified(bob.username) and not bob.is_verified(alice.username)


async def test_a_user_who_says_no_cancels(server: Server) -> None:
    alice, bob, _ = await e2ee_pair(server)
    async with await alice.connect(), await bob.connect():
        outgoing, incoming = await started(alice, bob)
        await incoming.codes(WAIT)
        await incoming.cancel("the emoji differ", code="m.mismatched_sas")
        assert incoming.state == "cancelled"
        assert not await outgoing.done(WAIT)
        assert outgoing.cancel_code == "m.mismatched_sas" and "the emoji differ" in (
            outgoing.cancel_reason or ""
        )
        with pytest.raises(VerificationCancelled):
            await outgoing.confirm()
        # A request refused outright ends the same way.
        second = await alice.start_verification(bob.username)
        refused = await bob.next_verification_request(timeout=WAIT)
        await refused.cancel()
        assert not await second.done(WAIT) and second.cancel_code == "m.user"
    assert not alice.is_verified(bob.username) and not bob.is_verified(alice.username)


async def put_to_device(sender: Client, event_type: str, to: Client, content: dict[str, Any]) -> None:
    body = {"messages": {to.user_id: {to.device_id: content}}}
    response = await raw(sender, "PUT", f"/e2ee/sendToDevice/{event_type}/{uuid.uuid4().hex}", json=body)
    assert response.status_code == 200, response.text


async def test_an_out_of_order_step_cancels(server: Server) -> None:
    alice, bob, _ = await e2ee_pair(server)
    async with await alice.connect(), await bob.connect():
        outgoing = await alice.start_verification(bob.username)
        incoming = await bob.next_verification_request(timeout=WAIT)
        # A MAC before anything else, in Bob's name (as a third device of his, or the server, could).
        forged = {"transaction_id": outgoing.transaction_id, "mac": {}, "keys": "AAAA"}
        await put_to_device(bob, "m.key.verification.mac", alice, forged)
        assert not await outgoing.done(WAIT) and outgoing.cancel_code == "m.unexpected_message"
        assert not await incoming.done(WAIT) and incoming.cancel_code == "m.unexpected_message"
        with pytest.raises(VerificationCancelled):
            await incoming.accept()
        # A malformed step in a running verification cancels it too: a MAC without MACs, in
        # Alice's name, checked once Bob says the codes match.
        outgoing, incoming = await started(alice, bob)
        await incoming.codes(WAIT)
        await put_to_device(alice, "m.key.verification.mac", bob, {"transaction_id": outgoing.transaction_id})
        await incoming.confirm()
        assert not await incoming.done(WAIT) and incoming.cancel_code == "m.invalid_message"
        assert not await outgoing.done(WAIT) and outgoing.cancel_code == "m.invalid_message"  # told by Bob's
    assert not alice.is_verified(bob.username) and not bob.is_verified(alice.username)


async def test_garbage_verification_events_never_stop_a_device_from_reading(server: Server) -> None:
    alice, bob, conversation_id = await e2ee_pair(server)
    garbage: list[tuple[str, dict[str, Any]]] = [
        ("m.key.verification.request", {}),
        ("m.key.verification.request", {"transaction_id": 7, "from_device": ["x"], "methods": "m.sas.v1"}),
        (
            "m.key.verification.request",
            {"transaction_id": "old", "from_device": "X", "methods": ["m.sas.v1"], "timestamp": 1},
        ),
        (
            "m.key.verification.request",
            {"transaction_id": "t", "from_device": "X", "methods": ["m.sas.v1"], "timestamp": 2**62},
        ),
        (
            "m.key.verification.request",
            {"transaction_id": "x" * 1000, "from_device": "X", "methods": ["m.sas.v1"]},
        ),
        ("m.key.verification.start", {"transaction_id": "unknown", "method": "m.sas.v1"}),
        ("m.key.verification.key", {"transaction_id": "unknown", "key": {"nested": [1, 2, 3]}}),
        ("m.key.verification.mac", {"transaction_id": None, "mac": "x"}),
        ("m.key.verification.cancel", {"transaction_id": "unknown", "code": 5}),
        ("m.key.verification.unheard_of", {"transaction_id": "unknown"}),
    ]
    async with await alice.connect() as stream:
        for event_type, content in garbage:
            await put_to_device(bob, event_type, alice, content)
        await bob.send(conversation_id, "after the garbage")
        while (event := await stream.next_event(WAIT)).type != "message.new":
            pass
        assert event.message is not None and event.message.text == "after the garbage"
        with pytest.raises(TimeoutError):  # none of it was a request: nothing was queued
            await alice.next_verification_request(timeout=0.01)
    await alice.send(conversation_id, "and back")
    assert [m.text for m in await bob.history(conversation_id)] == ["after the garbage", "and back"]


# -- identity changes --------------------------------------------------------------------------


async def test_a_contact_who_replaces_their_master_key_is_flagged_before_the_next_send(
    server: Server,
) -> None:
    alice, bob, conversation_id = await e2ee_pair(server)
    await alice.send(conversation_id, "before")  # Alice's device learns Bob's keys (first use)
    async with await alice.connect(), await bob.connect():
        await verify(alice, bob)
    assert alice.is_verified(bob.username)

    # Bob signs in on a new device without state and publishes new cross-signing keys.
    new_device = await Client.login(server.url, bob.username, PASSWORD, device_id="NEWPHONE")
    with pytest.raises(Exception) as refused:
        await new_device.reset_cross_signing("not the password")
    assert getattr(refused.value, "status", None) in (401, 403)
    await new_device.reset_cross_signing(PASSWORD)

    with pytest.raises(IdentityChanged) as changed:
        await alice.send(conversation_id, "not sent")
    assert changed.value.username == bob.username
    assert any("master key changed" in c for c in changed.value.changes)
    assert not alice.is_verified(bob.username)  # a verified contact whose identity changed is no longer
    with pytest.raises(IdentityChanged):
        await alice.send(conversation_id, "still not sent")  # until the app accepts it
    alice.accept_identity(bob.username)
    await alice.send(conversation_id, "after accepting")
    texts = [m.text for m in await new_device.history(conversation_id)]
    assert texts[-1] == "after accepting" and "not sent" not in texts and "still not sent" not in texts
    assert not alice.is_verified(bob.username)  # accepted, not verified
    await new_device.close()


async def test_a_known_device_with_new_identity_keys_is_flagged(server: Server) -> None:
    alice, bob, conversation_id = await e2ee_pair(server)
    laptop = await Client.login(server.url, bob.username, PASSWORD, device_id="LAPTOP")
    await alice.send(conversation_id, "to phone and laptop")
    await laptop.close()
    await bob.remove_device("LAPTOP", PASSWORD)
    replaced = await Client.login(server.url, bob.username, PASSWORD, device_id="LAPTOP")  # new keys, same id
    assert replaced.crypto is not None
    with pytest.raises(IdentityChanged) as changed:
        await alice.send(conversation_id, "not sent")
    assert changed.value.username == bob.username
    assert changed.value.changes == ["the identity keys of their device LAPTOP changed"]
    alice.accept_identity(bob.username)
    await alice.send(conversation_id, "sent after accepting")
    assert [m.text for m in await replaced.history(conversation_id)][-1] == "sent after accepting"
    await replaced.close()


async def test_a_verified_contacts_new_device_waits_for_acceptance(server: Server) -> None:
    """A server that adds a device to a verified contact's account gets nothing sent to it
    unnoticed; an unverified contact's new devices are taken on first use."""
    alice, bob, conversation_id = await e2ee_pair(server)
    carol = await new_member(server, e2ee=True)
    group = await alice.start_conversation([bob.username, carol.username], encryption="e2ee", kind="group")
    async with await alice.connect(), await bob.connect():
        await verify(alice, bob)
    assert alice.is_verified(bob.username) and not alice.is_verified(carol.username)
    carol_laptop = await Client.login(server.url, carol.username, PASSWORD, device_id="LAPTOP")
    await alice.send(group.id, "carol's new device is taken on first use")
    bob_laptop = await Client.login(server.url, bob.username, PASSWORD, device_id="LAPTOP")
    with pytest.raises(IdentityChanged) as changed:
        await alice.send(conversation_id, "not to an unverified device of a verified contact")
    assert changed.value.changes == ["they have a new device LAPTOP, which nobody verified"]
    assert not alice.is_verified(bob.username)
    alice.accept_identity(bob.username)
    await alice.send(conversation_id, "accepted")
    assert [m.text for m in await bob_laptop.history(conversation_id)] == ["accepted"]
    await bob_laptop.close()
    await carol_laptop.close()


async def test_identity_decisions_survive_a_restart(server: Server, tmp_path: Path) -> None:
    name, state = unique(), tmp_path / "alice.e2ee"
    alice = await Client.register(
        server.url, name, PASSWORD, birthdate="1990-05-17", state_path=state, passphrase="pass phrase"
    )
    bob = await new_member(server, e2ee=True)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    await alice.send(conversation.id, "first")
    await bob.reset_cross_signing(PASSWORD)
    await alice.close()
    alice = await Client.login(server.url, name, PASSWORD, state_path=state, passphrase="pass phrase")
    with pytest.raises(IdentityChanged):
        await alice.send(conversation.id, "not sent")  # Bob's first key was remembered across the restart
    alice.accept_identity(bob.username)
    await alice.close()
    alice = await Client.login(server.url, name, PASSWORD, state_path=state, passphrase="pass phrase")
    await alice.send(conversation.id, "the acceptance was remembered too")
    assert [m.text for m in await bob.history(conversation.id)] == [
        "first",
        "the acceptance was remembered too",
    ]
    await alice.close()


# -- trust bookkeeping, without a server ---------------------------------------------------------


def _device(user: str, device_id: str, seed: int) -> Any:
    from keyhold.sdk.e2ee.machine import PeerDevice

    return PeerDevice(user, device_id, f"ed{seed}", f"cu{seed}")


def _master(user: str, key: str) -> dict[str, Any]:
    return {"user_id": user, "usage": ["master"], "keys": {f"ed25519:{key}": key}}


def test_trust_keeps_verification_through_a_missing_master_key_and_flags_returning_devices() -> None:
    from keyhold.sdk.e2ee.trust import Trust

    bob = "@bob:keyhold.local"
    master = encode_base64(bytes(range(32)))
    trust = Trust("@alice:keyhold.local")
    phone, laptop = _device(bob, "PHONE", 1), _device(bob, "LAPTOP", 2)
    trust.observe(bob, _master(bob, master), [phone, laptop])
    trust.mark_verified(bob, "PHONE", "ed1", master)
    assert trust.is_verified(bob)
    trust.observe(bob, None, [phone, laptop])  # one answer without the master key
    assert not trust.is_verified(bob)
    trust.observe(bob, _master(bob, master), [phone, laptop])
    assert trust.is_verified(bob)  # not erased for good
    trust.observe(bob, _master(bob, master), [phone])  # the laptop removed...
    trust.observe(bob, _master(bob, master), [phone, laptop])  # ...and served again
    contact = trust.contacts[bob]
    assert contact.changes() == ["they have a new device LAPTOP, which nobody verified"]
    assert not trust.is_verified(bob)
    assert not trust.accept(bob, ["their master key changed"])  # not what is pending: nothing accepted
    assert trust.accept(bob, ["they have a new device LAPTOP, which nobody verified"])
    assert contact.changes() == [] and not trust.is_verified(bob)  # accepted is not verified


async def test_a_flood_of_requests_leaves_one_per_member_and_others_still_arrive(server: Server) -> None:
    alice, mallory, bob = [await new_member(server, e2ee=True) for _ in range(3)]
    await alice.start_conversation([mallory.username, bob.username], encryption="e2ee", kind="group")

    async def request(txn: str, from_device: str | None) -> None:
        content = {
            "from_device": from_device,
            "methods": ["m.sas.v1"],
            "transaction_id": txn,
            "timestamp": int(time.time() * 1000),
        }
        reply = await raw(
            mallory,
            "PUT",
            f"/e2ee/sendToDevice/m.key.verification.request/{txn}",
            json={"messages": {alice.user_id: {alice.device_id: content}}},
        )
        assert reply.status_code == 200, reply.text

    async with await alice.connect():
        await request("forged", bob.device_id)  # claims one of bob's devices: not mallory's
        for n in range(20):
            await request(f"flood{n}", mallory.device_id)
        await bob.start_verification(alice.username)
        first = await alice.next_verification_request(timeout=WAIT)
        second = await alice.next_verification_request(timeout=WAIT)
    assert (first.other_user, first.other_device, first.transaction_id) == (
        mallory.username,
        mallory.device_id,
        "flood0",
    )
    assert second.other_user == bob.username
