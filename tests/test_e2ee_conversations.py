"""E2EE conversations (issue 8, item 4), on both databases: started like any other, messages
are Megolm ciphertext stored and returned as sent with a Matrix-shaped `event`, `readable_by`
counts the devices that can read, and no plaintext reaches the server's disk or logs."""

from __future__ import annotations

import asyncio
import secrets
import string
from typing import Any

import pytest

from canaries import Canaries, files_under
from conftest import Server, raw, start_server, stop_server
from e2ee_helpers import Megolm, published, sharing
from keyhold.sdk.errors import KeyholdError
from stream_helpers import live, next_of

pytestmark = pytest.mark.postgres


async def e2ee_pair(server: Server) -> tuple[Any, Any, int]:
    alice, bob = await published(server), await published(server)
    conversation = await alice.client.start_conversation([bob.client.username], encryption="e2ee")
    return alice, bob, conversation.id


async def send_encrypted(member: Any, conversation_id: int, content: dict[str, Any], key: str | None = None) -> Any:
    body: dict[str, Any] = {"encrypted": content}
    if key:
        body["idempotency_key"] = key
    return await raw(member.client, "POST", f"/conversations/{conversation_id}/messages", json=body)


async def test_an_e2ee_conversation_says_which_devices_can_read_it(server: Server) -> None:
    alice, bob, conversation_id = await e2ee_pair(server)
    view = await alice.client.conversation(conversation_id)
    assert view.encryption == "e2ee"
    assert view.readable_by == "only the participants' devices (2 devices); Keyhold holds no key and cannot read it"
    # A standard conversation of the same pair is another conversation.
    standard = await alice.client.start_conversation([bob.client.username])
    assert standard.id != conversation_id and standard.encryption == "standard"
    again = await alice.client.start_conversation([bob.client.username], encryption="e2ee")
    assert again.id == conversation_id


async def test_ciphertext_goes_through_as_sent_with_a_matrix_event(server: Server) -> None:
    alice, bob, conversation_id = await e2ee_pair(server)
    session = Megolm()
    bob_stream = await live(bob.client)
    content = session.content("hello bob", f"!{conversation_id}:keyhold.local")
    response = await send_encrypted(alice, conversation_id, content, key="k1")
    assert response.status_code == 201, response.text
    sent = response.json()
    event = sent["event"]
    assert event == {
        "type": "m.room.encrypted",
        "event_id": f"${sent['id']}",
        "sender": alice.user_id,
        "origin_server_ts": event["origin_server_ts"],
        "room_id": f"!{conversation_id}:keyhold.local",
        "content": content,
    }
    assert isinstance(event["origin_server_ts"], int) and sent["text"] is None and sent["franked"] is False
    live_event = await next_of(bob_stream, "message.new", skip=None)
    assert live_event.data["message"]["event"] == event
    assert session.open(live_event.data["message"]["event"]["content"]) == "hello bob"
    page = await raw(bob.client, "GET", f"/conversations/{conversation_id}/messages")
    assert [item["event"] for item in page.json()["items"]] == [event]
    # A retry with the same key is the same message.
    retry = await send_encrypted(alice, conversation_id, content, key="k1")
    assert retry.json()["id"] == sent["id"]
    await bob_stream.close()


async def test_ciphertext_over_the_stream(server: Server) -> None:
    alice, bob, conversation_id = await e2ee_pair(server)
    session = Megolm()
    stream = await live(alice.client)
    bob_stream = await live(bob.client)
    sent = await stream._call(
        {"type": "send", "ref": "r", "conversation_id": conversation_id, "encrypted": session.content("over ws")}
    )
    assert sent["type"] == "ack", sent
    got = await next_of(bob_stream, "message.new", skip=None)
    assert session.open(got.data["message"]["event"]["content"]) == "over ws"
    with pytest.raises(KeyholdError) as refused:
        await stream._call({"type": "send", "ref": "t", "conversation_id": conversation_id, "text": "plain"})
    assert refused.value.status == 422
    await stream.close()
    await bob_stream.close()


@pytest.mark.parametrize(
    "body",
    [
        {"text": "plaintext in an e2ee conversation"},
        {"encrypted": {"algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": "x", "session_id": "s"}},
        {"encrypted": {"algorithm": "m.megolm.v1.aes-sha2", "session_id": "s"}},
        {"encrypted": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "", "session_id": "s"}},
        {"encrypted": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AA\x00A", "session_id": "s"}},
        {"encrypted": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA", "session_id": "s\u0085"}},
        {"encrypted": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA\n", "session_id": "s"}},
        {"encrypted": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "not base64!", "session_id": "s"}},
        {"encrypted": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA", "session_id": "s", "device_id": "D\x00"}},
        {"encrypted": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA", "session_id": "s", "sender_key": "a\u0085"}},
        {"encrypted": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA", "session_id": "s", "m.x": [{"y": "$\n"}]}},
        {"encrypted": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x" * 50_000, "session_id": "s"}},
        {"encrypted": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x", "session_id": "s"}, "text": "both"},
        {"encrypted": "not an object"},
    ],
)
async def test_what_is_not_megolm_ciphertext_is_refused_and_not_stored(server: Server, body: dict[str, Any]) -> None:
    alice, _bob, conversation_id = await e2ee_pair(server)
    response = await raw(alice.client, "POST", f"/conversations/{conversation_id}/messages", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await raw(alice.client, "GET", f"/conversations/{conversation_id}/messages")).json()["items"] == []


async def test_a_standard_conversation_refuses_ciphertext(server: Server) -> None:
    alice, _bob = await sharing(server, 2)
    conversation_id = (await alice.client.conversations())[0].id
    response = await send_encrypted(alice, conversation_id, Megolm().content("x"))
    assert response.status_code == 422, response.text


async def test_outsiders_and_former_members_get_nothing(server: Server) -> None:
    alice, bob = await published(server), await published(server)
    carol = await published(server)
    group = await alice.client.start_conversation([bob.client.username, carol.client.username], encryption="e2ee")
    session = Megolm()
    outsider = await published(server)
    refused = await send_encrypted(outsider, group.id, session.content("intrusion"))
    assert refused.status_code == 404
    assert (await raw(outsider.client, "GET", f"/conversations/{group.id}/messages")).status_code == 404
    await carol.client.leave(group.id)
    assert (await send_encrypted(carol, group.id, session.content("after leaving"))).status_code == 404
    assert (await raw(carol.client, "GET", f"/conversations/{group.id}/messages")).status_code == 404
    view = await alice.client.conversation(group.id)
    assert "(2 devices)" in view.readable_by


async def test_deleting_an_e2ee_message_leaves_a_tombstone(server: Server) -> None:
    alice, bob, conversation_id = await e2ee_pair(server)
    sent = (await send_encrypted(alice, conversation_id, Megolm().content("regret"))).json()
    deleted = await raw(alice.client, "DELETE", f"/messages/{sent['id']}")
    assert deleted.status_code == 200, deleted.text
    item = (await raw(bob.client, "GET", f"/conversations/{conversation_id}/messages")).json()["items"][0]
    assert item["deleted"] is True and item["event"] is None and "encrypted" not in item


async def test_encrypted_attachments_are_kept_as_opaque_bytes(server: Server) -> None:
    alice, bob, conversation_id = await e2ee_pair(server)
    blob = secrets.token_bytes(2048)
    uploaded = await raw(alice.client, "POST", f"/conversations/{conversation_id}/attachments", content=blob)
    assert uploaded.status_code == 201, uploaded.text
    meta = uploaded.json()
    assert meta["filename"] is None and meta["content_type"] == "application/octet-stream"
    body = {"encrypted": Megolm().content("see attached"), "attachment_id": meta["id"]}
    sent = await raw(alice.client, "POST", f"/conversations/{conversation_id}/messages", json=body)
    assert sent.status_code == 201, sent.text
    assert sent.json()["attachment"]["id"] == meta["id"]
    downloaded = await raw(bob.client, "GET", f"/attachments/{meta['id']}")
    assert downloaded.status_code == 200 and downloaded.content == blob


def _letters(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters) for _ in range(n))


async def test_no_e2ee_plaintext_reaches_disk_or_logs(tmp_path: Any) -> None:
    """Canaries encrypted by the sender's device, over REST and the stream, and in an
    attachment's name: none is found in the database, its WAL, the blobs or the debug log."""
    text, over_ws, name = _letters(40), _letters(40), _letters(32)
    canaries = Canaries([text.encode(), over_ws.encode(), name.encode()])
    server = start_server(tmp_path / "kh", "sqlite", extra_args=("--log-level", "debug"))
    try:
        alice, bob, conversation_id = await e2ee_pair(server)
        session = Megolm()
        assert (await send_encrypted(alice, conversation_id, session.content(text))).status_code == 201
        stream = await live(alice.client)
        ack = await stream._call(
            {"type": "send", "ref": 1, "conversation_id": conversation_id, "encrypted": session.content(over_ws)}
        )
        assert ack["type"] == "ack"
        await stream.close()
        # A client that sends the name in the clear anyway: it is not kept.
        uploaded = await raw(
            alice.client,
            "POST",
            f"/conversations/{conversation_id}/attachments",
            headers={"Keyhold-Filename": f"{name}.txt"},
            content=secrets.token_bytes(100),
        )
        assert uploaded.status_code == 201
        history = (await raw(bob.client, "GET", f"/conversations/{conversation_id}/messages")).json()["items"]
        assert [session.open(item["event"]["content"]) for item in history] == [text, over_ws]
        await asyncio.sleep(0.2)
        assert canaries.scan([*files_under(server.home), server.log_path]) == {}
    finally:
        stop_server(server)
    assert canaries.scan([*files_under(server.home), server.log_path]) == {}
