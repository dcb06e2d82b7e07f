"""Verifiable reports of e2ee messages (message franking, issue 8 item 7), on both databases:
a franked message reported with what the reporter's device decrypted opens a case marked
`verified_sender` that shows the moderator what was revealed and nothing else; every forgery
is refused and opens nothing; a commitment that does not match is "unverifiable" on receipt."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from conftest import Server, new_member, raw
from keyhold.crypto.signed_json import encode_base64
from keyhold.sdk import Client, StaffClient
from staff_helpers import server_with_staff, signed_in

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def franking_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    with server_with_staff(tmp_path_factory, "franking", request.param, {"mod_f": ("moderator", "us")}) as found:
        yield found


@pytest.fixture(scope="module")  # a TOTP code signs in once: one sign-in per server
async def moderator(franking_server: tuple[Server, dict[str, str]]) -> AsyncIterator[StaffClient]:
    server, secrets_ = franking_server
    async with signed_in(server, secrets_) as staff:
        yield staff["mod_f"]


async def pair(server: Server) -> tuple[Client, Client, int]:
    alice, bob = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    return alice, bob, conversation.id


async def report_raw(client: Client, conversation_id: int, message_ids: list[int], evidence: dict[str, Any]) -> Any:
    body = {"conversation_id": conversation_id, "message_ids": message_ids, "category": "harassment", "franking": evidence}
    return await raw(client, "POST", "/reports", json=body)


async def test_a_franked_report_verifies_and_reveals_only_that_message(
    franking_server: tuple[Server, dict[str, str]], moderator: StaffClient
) -> None:
    server, _ = franking_server
    alice, bob, conversation_id = await pair(server)
    texts = ["good morning", "you will regret this", "see you later"]
    for text in texts:
        await alice.send(conversation_id, text)
    history = await bob.history(conversation_id)
    assert [m.text for m in history] == texts and all(m.franked for m in history)
    reported = history[1]
    answer = await bob.report(conversation_id, [reported.id], "harassment", reveal=reported)
    assert answer["verified_sender"] is True
    case = await moderator.report(int(answer["id"]))
    revealed = case["details"]["revealed"]
    assert revealed["message_id"] == reported.id and revealed["sender"] == alice.username
    assert revealed["sender_device"] == alice.device_id
    assert revealed["content"]["body"] == "you will regret this"
    assert "keyhold.franking_key" not in revealed["content"]  # the key stays with the reporter
    assert "good morning" not in str(case) and "see you later" not in str(case)
    # Moderators still cannot read the conversation: the service holds no key for it.
    with pytest.raises(Exception, match="end-to-end encrypted"):
        await moderator.report_content(int(answer["id"]), reason="context")


async def test_each_forgery_is_refused_and_opens_no_case(
    franking_server: tuple[Server, dict[str, str]], moderator: StaffClient
) -> None:
    server, _ = franking_server
    alice, bob, conversation_id = await pair(server)
    carol = await new_member(server, e2ee=True)
    elsewhere = (await carol.start_conversation([bob.username], encryption="e2ee")).id
    await alice.send(conversation_id, "the real words")
    await alice.send(conversation_id, "other words")
    await carol.send(elsewhere, "carol's words")
    first, second = await bob.history(conversation_id)
    (carols,) = await bob.history(elsewhere)
    assert first.evidence and second.evidence and carols.evidence
    opened = len(await moderator.reports())

    def forged(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
        return {**base, **changes}

    altered = forged(first.evidence, content={**first.evidence["content"], "body": "the fake words"})
    another_key = forged(first.evidence, franking_key=encode_base64(secrets.token_bytes(32)))
    another_message = forged(first.evidence, message_id=second.id)  # first's words as second's
    replayed_tag = forged(second.evidence, tag=first.evidence["tag"])
    another_sender = forged(carols.evidence, message_id=first.id)  # carol's words, alice's message
    bad_base64 = forged(first.evidence, franking_key="***")
    for name, evidence, ids in (
        ("altered text", altered, [first.id]),
        ("another franking key", another_key, [first.id]),
        ("another message id", another_message, [second.id]),
        ("a replayed tag", replayed_tag, [second.id]),
        ("another sender and conversation", another_sender, [first.id]),
        ("malformed key", bad_base64, [first.id]),
    ):
        response = await report_raw(bob, conversation_id, ids, evidence)
        assert response.status_code == 422, (name, response.text)
        assert "does not verify" in response.json()["detail"], (name, response.text)
    # Reporting carol's message under the other conversation: not in it.
    assert (await report_raw(bob, conversation_id, [carols.id], carols.evidence)).status_code == 404
    assert len(await moderator.reports()) == opened


async def test_an_unfranked_message_is_delivered_as_such_and_reported_unverified(
    franking_server: tuple[Server, dict[str, str]], moderator: StaffClient
) -> None:
    server, _ = franking_server
    alice, bob, conversation_id = await pair(server)
    # A client that does not frank: the same encryption, no franking beside it.
    assert alice.crypto is not None
    conversation = await alice.conversation(conversation_id)
    members = [f"@{m}:keyhold.local" for m in conversation.members]
    encrypted, _franking = await alice.crypto.encrypt(f"!{conversation_id}:keyhold.local", members, "no frank here")
    sent = await raw(alice, "POST", f"/conversations/{conversation_id}/messages", json={"encrypted": encrypted})
    assert sent.status_code == 201 and sent.json()["franked"] is False and sent.json()["franking"] is None
    (message,) = await bob.history(conversation_id)
    assert message.text == "no frank here" and message.franked is False and message.evidence is None
    with pytest.raises(ValueError, match="franked"):
        await bob.report(conversation_id, [message.id], "spam", reveal=message)
    fake = {"message_id": message.id, "content": {"body": "x"}, "franking_key": "AAAA", "tag": "AAAA"}
    refused = await report_raw(bob, conversation_id, [message.id], fake)
    assert refused.status_code == 422 and "not franked" in refused.json()["detail"]
    plain = await bob.report(conversation_id, [message.id], "spam")
    assert plain["verified_sender"] is False
    case = await moderator.report(int(plain["id"]))
    assert "revealed" not in case["details"] and "verified_sender" not in case["details"]


async def test_a_commitment_that_does_not_match_is_unverifiable(franking_server: tuple[Server, dict[str, str]]) -> None:
    server, _ = franking_server
    alice, bob, conversation_id = await pair(server)
    assert alice.crypto is not None
    conversation = await alice.conversation(conversation_id)
    members = [f"@{m}:keyhold.local" for m in conversation.members]
    room = f"!{conversation_id}:keyhold.local"
    _first, first_franking = await alice.crypto.encrypt(room, members, "what I committed to")
    second, _second_franking = await alice.crypto.encrypt(room, members, "what I actually sent")
    # A sender pairing one message's ciphertext with another's commitment.
    body = {"encrypted": second, "franking": first_franking}
    assert (await raw(alice, "POST", f"/conversations/{conversation_id}/messages", json=body)).status_code == 201
    (message,) = await bob.history(conversation_id)
    assert message.text is None and message.undecryptable is not None
    assert message.undecryptable.startswith("unverifiable")


@pytest.mark.parametrize(
    "franking",
    [
        {"version": 2, "commitment": base64.b64encode(bytes(32)).decode().rstrip("=")},
        {"version": 1, "commitment": "AAAA"},
        {"version": 1, "commitment": 5},
        {"version": 1},
        {"version": 1, "commitment": base64.b64encode(bytes(32)).decode().rstrip("="), "extra": 1},
    ],
)
async def test_malformed_franking_is_refused(franking_server: tuple[Server, dict[str, str]], franking: dict[str, Any]) -> None:
    server, _ = franking_server
    alice, _bob, conversation_id = await pair(server)
    assert alice.crypto is not None
    encrypted, _ = await alice.crypto.encrypt(f"!{conversation_id}:keyhold.local", [alice.user_id or ""], "x")
    body = {"encrypted": encrypted, "franking": franking}
    response = await raw(alice, "POST", f"/conversations/{conversation_id}/messages", json=body)
    assert response.status_code == 422, response.text
    assert (await raw(alice, "GET", f"/conversations/{conversation_id}/messages")).json()["items"] == []


async def test_rotated_franking_keys_keep_older_reports_verifiable(tmp_path: Any) -> None:
    from conftest import PASSWORD, keyhold_cli, start_server, stop_server, unique

    home, state, phrase = tmp_path / "kh", tmp_path / "bob.e2ee", "bob's passphrase"
    server = start_server(home, "sqlite")
    try:
        alice = await new_member(server, e2ee=True)
        bob = await Client.register(server.url, unique("b"), PASSWORD, "1990-05-17", state_path=state, passphrase=phrase)
        conversation_id = (await alice.start_conversation([bob.username], encryption="e2ee")).id
        await alice.send(conversation_id, "under the first key")
        await bob.close()
        await alice.send(conversation_id, "still the first key")
    finally:
        stop_server(server)
    rotated = keyhold_cli("keys", "rotate-franking", "--home", str(home))
    assert "new franking key fk2" in rotated.stdout
    server = start_server(home, "sqlite")
    try:
        alice = await Client.login(server.url, alice.username, PASSWORD)
        bob = await Client.login(server.url, bob.username, PASSWORD, state_path=state, passphrase=phrase)
        await alice.send(conversation_id, "under the second key")
        messages = await bob.history(conversation_id)
        assert [m.text for m in messages] == ["under the first key", "still the first key", "under the second key"]
        stored = (await raw(bob, "GET", f"/conversations/{conversation_id}/messages")).json()["items"]
        assert [item["franking"]["key_id"] for item in stored] == ["fk1", "fk1", "fk2"]
        for message in (messages[0], messages[2]):  # reports verify under either key
            assert (await bob.report(conversation_id, [message.id], "other", reveal=message))["verified_sender"] is True
        await bob.close()
    finally:
        stop_server(server)
