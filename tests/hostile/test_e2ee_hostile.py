"""What a hostile contact tried against end-to-end encryption (an attacker's review of the
e2ee work), each seen failing before its fix, on both databases: poisoned key objects that
would break every contact's key queries, to-device garbage and non-event plaintext that would
stop a device from reading, a franked message no report could reveal, and unchecked signature
uploads."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import pytest

from conftest import PASSWORD, Server, new_member, raw, unique
from keyhold.crypto import franking
from keyhold.crypto.signed_json import encode_base64
from keyhold.sdk import Client
from keyhold.sdk.e2ee.device import OlmDevice

pytestmark = pytest.mark.postgres


async def post_text(client: Client, path: str, body: Any) -> Any:
    """JSON as text: lone surrogates travel escaped, as a hostile client sends them."""
    return await raw(client, "POST", path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("poison", ["unsigned-surrogate", "unsigned-not-object", "signatures-not-object", "padded-key", "big-int"])
async def test_a_poisoned_key_object_is_refused_and_contacts_keep_working(server: Server, poison: str) -> None:
    victim = await new_member(server, e2ee=True)
    bob = await new_member(server, e2ee=True)
    mallory = await Client.register(server.url, unique("m"), PASSWORD, birthdate="1990-05-17", e2ee=False)
    assert mallory.user_id and mallory.device_id
    device = OlmDevice(mallory.user_id, mallory.device_id)
    conversation = await victim.start_conversation([bob.username, mallory.username], encryption="e2ee", kind="group")
    keys = device.device_keys()
    if poison == "unsigned-surrogate":
        keys["unsigned"] = {"x": "\ud800"}  # outside the signature: it still verifies
    elif poison == "unsigned-not-object":
        keys["unsigned"] = "x"
    elif poison == "signatures-not-object":
        keys["signatures"] = {**keys["signatures"], "@x:keyhold.local": "not an object"}
    elif poison == "padded-key":
        keys = device.sign({k: v for k, v in keys.items() if k != "signatures"} | {"keys": {
            f"ed25519:{device.device_id}": device.ed25519,
            f"curve25519:{device.device_id}": device.curve25519 + "=" * 80,
        }})  # fmt: skip
    else:
        keys["unsigned"] = {"n": 2**70}
    refused = await post_text(mallory, "/e2ee/keys/upload", {"device_keys": keys})
    assert refused.status_code == 400, refused.text
    query = await raw(victim, "POST", "/e2ee/keys/query", json={"device_keys": {mallory.user_id: [], bob.user_id: []}})
    assert query.status_code == 200, query.text
    await victim.send(conversation.id, "the group still works")
    assert [m.text for m in await bob.history(conversation.id)] == ["the group still works"]


async def test_to_device_garbage_never_stops_a_device_from_reading(server: Server) -> None:
    alice, bob = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    mallory = await new_member(server)
    conversation = await alice.start_conversation([bob.username, mallory.username], encryption="e2ee", kind="group")
    assert alice.user_id and alice.device_id
    for garbage in (
        {"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": "x", "ciphertext": "boom"},
        {"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": "x", "ciphertext": {"*": 1}},
        {"algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": {"k": {"type": -1, "body": "AAAA"}}},
    ):
        ciphertext = garbage.get("ciphertext")
        if isinstance(ciphertext, dict) and "k" in ciphertext:
            assert alice.crypto is not None
            garbage = {**garbage, "ciphertext": {alice.crypto.device.curve25519: ciphertext["k"]}}
        sent = await raw(
            mallory, "PUT", f"/e2ee/sendToDevice/m.room.encrypted/{uuid.uuid4().hex}",
            json={"messages": {alice.user_id: {"*": garbage}}},
        )  # fmt: skip
        assert sent.status_code == 200
    await bob.send(conversation.id, "after the garbage")
    assert [m.text for m in await alice.history(conversation.id)] == ["after the garbage"]
    await bob.send(conversation.id, "and again")  # the garbage is not replayed forever
    assert [m.text for m in await alice.history(conversation.id)][-1] == "and again"


async def test_plaintext_that_is_not_an_event_is_returned_as_undecryptable(server: Server) -> None:
    alice, mallory = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    conversation = await alice.start_conversation([mallory.username], encryption="e2ee")
    await mallory.send(conversation.id, "a real first message")  # shares mallory's room key
    assert mallory.crypto is not None
    room = f"!{conversation.id}:keyhold.local"
    outbound = mallory.crypto._outbound[room]
    for payload in (b"[]", json.dumps({"room_id": room, "content": []}).encode()):
        encrypted = {
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": outbound.session.encrypt(payload).to_base64(),
            "session_id": outbound.session.session_id,
        }
        sent = await raw(mallory, "POST", f"/conversations/{conversation.id}/messages", json={"encrypted": encrypted})
        assert sent.status_code == 201
    history = await alice.history(conversation.id)
    assert history[0].text == "a real first message"
    assert [m.text for m in history[1:]] == [None, None] and all(m.undecryptable for m in history[1:])


async def test_a_franked_message_with_a_huge_number_can_still_be_reported(server: Server) -> None:
    alice, bob = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    await alice.send(conversation.id, "a real first message")
    assert alice.crypto is not None and alice.user_id and alice.device_id
    room = f"!{conversation.id}:keyhold.local"
    outbound = alice.crypto._outbound[room]
    key = secrets.token_bytes(32)
    content = {"msgtype": "m.text", "body": "abusive words", "n": 2**70, franking.KEY_FIELD: encode_base64(key)}
    committed = franking.commitment(key, content, room, alice.user_id, alice.device_id)
    encrypted = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": outbound.session.encrypt(json.dumps({"type": "m.room.message", "room_id": room, "content": content}).encode()).to_base64(),
        "session_id": outbound.session.session_id,
    }
    body = {"encrypted": encrypted, "franking": {"version": 1, "commitment": encode_base64(committed)}}
    assert (await raw(alice, "POST", f"/conversations/{conversation.id}/messages", json=body)).status_code == 201
    reported = (await bob.history(conversation.id))[-1]
    assert reported.text == "abusive words" and reported.evidence is not None
    answer = await bob.report(conversation.id, [reported.id], "harassment", reveal=reported)
    assert answer["verified_sender"] is True


async def test_signature_uploads_that_cannot_be_checked_are_failures_not_errors(server: Server) -> None:
    alice = await new_member(server, e2ee=True)
    assert alice.user_id and alice.device_id
    for obj in ({"x": "\ud800"}, {"user_id": alice.user_id, "signatures": {alice.user_id: {"ed25519:X": "A" * 200}}}):
        response = await post_text(alice, "/e2ee/keys/signatures/upload", {alice.user_id: {alice.device_id: obj}})
        assert response.status_code == 200, response.text
        assert response.json()["failures"][alice.user_id][alice.device_id]["errcode"].startswith("M_")
