"""The Python SDK in e2ee conversations (issue 8, item 5), on both databases: the same
`Client` calls as for `standard`, with Olm/Megolm on vodozemac underneath. Messages are read
decrypted on every device a member had when they were sent, never on a device added later or
by a member who left; what cannot be read is returned as such, with the reason."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest

from canaries import Canaries, files_under
from conftest import PASSWORD, Server, new_member, raw, start_server, stop_server, unique
from db_snapshot import stored
from keyhold.sdk import Client, IdentityChanged, KeyholdError
from keyhold.sdk.e2ee.machine import UndecryptableError

pytestmark = pytest.mark.postgres


async def test_a_pair_writes_and_reads_end_to_end(server: Server) -> None:
    alice, bob = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    assert "(2 devices)" in conversation.readable_by
    sent = await alice.send(conversation.id, "hello bob, privately")
    assert sent.kind == "e2ee" and sent.text == "hello bob, privately"  # read back on this device
    stored = (await raw(bob, "GET", f"/conversations/{conversation.id}/messages")).json()["items"][0]
    assert stored["text"] is None and "hello" not in str(stored)  # the server has ciphertext only
    assert [m.text for m in await bob.history(conversation.id)] == ["hello bob, privately"]
    await bob.send(conversation.id, "hi alice")
    assert [m.text for m in await alice.history(conversation.id)] == ["hello bob, privately", "hi alice"]


async def test_live_events_come_decrypted(server: Server) -> None:
    alice, bob = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    received: list[str | None] = []

    async def listen() -> None:
        async for event in bob.events(since=0):
            assert not event.type.startswith("e2ee."), event.type  # handled by the device
            if event.type == "message.new" and event.message is not None:
                received.append(event.message.text)
                if len(received) == 2:
                    return

    listener = asyncio.create_task(listen())
    await alice.send(conversation.id, "one")
    await alice.send(conversation.id, "two")
    await asyncio.wait_for(listener, 20)
    assert received == ["one", "two"]


async def test_both_devices_of_a_member_read_and_a_later_one_does_not_read_the_past(server: Server) -> None:
    alice, bob_phone = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    bob_laptop = await Client.login(server.url, bob_phone.username, PASSWORD, device_id="LAPTOP")
    conversation = await alice.start_conversation([bob_phone.username], encryption="e2ee")
    await alice.send(conversation.id, "to both of bob's devices")
    for device in (bob_phone, bob_laptop):
        assert [m.text for m in await device.history(conversation.id)] == ["to both of bob's devices"]
    # Bob's own message reaches his other device too.
    await bob_phone.send(conversation.id, "from my phone")
    assert [m.text for m in await bob_laptop.history(conversation.id)][-1] == "from my phone"

    tablet = await Client.login(server.url, bob_phone.username, PASSWORD, device_id="TABLET")
    await alice.send(conversation.id, "after the tablet came")
    history = await tablet.history(conversation.id)
    assert [m.text for m in history[:2]] == [None, None]
    assert all(m.undecryptable and "no room key" in m.undecryptable for m in history[:2])
    assert history[-1].text == "after the tablet came"


async def test_a_member_who_left_cannot_read_what_follows(server: Server) -> None:
    alice, bob, carol = (
        await new_member(server, e2ee=True),
        await new_member(server, e2ee=True),
        await new_member(server, e2ee=True),
    )
    group = await alice.start_conversation([bob.username, carol.username], encryption="e2ee")
    await alice.send(group.id, "all three of us")
    assert [m.text for m in await carol.history(group.id)] == ["all three of us"]
    await carol.leave(group.id)
    after = await alice.send(group.id, "carol is gone")
    event = (await raw(alice, "GET", f"/conversations/{group.id}/messages")).json()["items"][-1]["event"]
    assert event["event_id"] == f"${after.id}"
    assert carol.crypto is not None
    await carol.sync_device_events()
    with pytest.raises(UndecryptableError, match="no room key"):
        carol.crypto.decrypt(event)  # the room key rotated when she left: none reached her
    assert [m.text for m in await bob.history(group.id)] == ["all three of us", "carol is gone"]


async def test_a_group_of_three_reads_each_other(server: Server) -> None:
    members = [await new_member(server, e2ee=True) for _ in range(3)]
    group = await members[0].start_conversation([m.username for m in members[1:]], encryption="e2ee")
    for index, member in enumerate(members):
        await member.send(group.id, f"from member {index}")
    expected = [f"from member {i}" for i in range(3)]
    for member in members:
        assert [m.text for m in await member.history(group.id)] == expected


async def test_a_server_that_tampers_is_caught(server: Server) -> None:
    """What the server could do to a delivered message, each caught by the reading device."""
    alice, bob, mallory = (
        await new_member(server, e2ee=True),
        await new_member(server, e2ee=True),
        await new_member(server, e2ee=True),
    )
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    other = await alice.start_conversation([bob.username, mallory.username], encryption="e2ee")
    await alice.send(conversation.id, "the real one")
    event: dict[str, Any] = (await raw(bob, "GET", f"/conversations/{conversation.id}/messages")).json()[
        "items"
    ][0]["event"]
    await bob.sync_device_events()
    assert bob.crypto is not None and bob.crypto.decrypt(event).text == "the real one"
    for forged, reason in (
        ({**event, "event_id": "$999"}, "replay"),  # the same ciphertext as another message
        ({**event, "room_id": f"!{other.id}:keyhold.local"}, "no room key|another conversation"),
        ({**event, "sender": f"@{mallory.username}:keyhold.local"}, "someone other than its sender"),
        (
            {
                **event,
                "content": {
                    **event["content"],
                    "ciphertext": event["content"]["ciphertext"][:-8] + "AAAAAAAA",
                },
            },
            "does not decrypt",
        ),
    ):
        with pytest.raises(UndecryptableError, match=reason):
            bob.crypto.decrypt(forged)


async def test_key_counts_are_topped_up_after_claims(server: Server) -> None:
    """Each new Olm session claims one of a device's one-time keys; the device tops them up
    when the server tells it its counts."""
    bob = await new_member(server, e2ee=True)
    senders = [await new_member(server, e2ee=True) for _ in range(30)]
    for sender in senders:
        conversation = await sender.start_conversation([bob.username], encryption="e2ee")
        await sender.send(conversation.id, "hi")
    counts = (await raw(bob, "POST", "/e2ee/keys/upload", json={})).json()["one_time_key_counts"]
    assert counts["signed_curve25519"] == 20
    await bob.sync_device_events()  # the key counts among the device's events
    counts = (await raw(bob, "POST", "/e2ee/keys/upload", json={})).json()["one_time_key_counts"]
    assert counts["signed_curve25519"] == 50


async def test_a_device_kept_in_a_state_file_is_the_same_device_after_a_restart(
    server: Server, tmp_path: Any
) -> None:
    from keyhold.sdk.e2ee.state import StateError

    path, passphrase = tmp_path / "alice.e2ee", "a long passphrase for alice"
    alice = await Client.register(
        server.url, f"st{abs(hash(tmp_path)) % 10**8}", PASSWORD, birthdate="1990-05-17",
        state_path=path, passphrase=passphrase,
    )  # fmt: skip
    bob = await new_member(server, e2ee=True)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    await alice.send(conversation.id, "before the restart")
    await bob.send(conversation.id, "bob's first")
    with pytest.raises(StateError, match="in use"):
        await Client.login(server.url, alice.username, PASSWORD, state_path=path, passphrase=passphrase)
    device = alice.device_id
    await alice.close()
    assert b"before the restart" not in path.read_bytes() and b"bob's first" not in path.read_bytes()
    with pytest.raises(StateError, match="wrong passphrase"):
        await Client.login(server.url, alice.username, PASSWORD, state_path=path, passphrase="not the one")

    again = await Client.login(server.url, alice.username, PASSWORD, state_path=path, passphrase=passphrase)
    assert again.device_id == device
    assert [m.text for m in await again.history(conversation.id)] == ["before the restart", "bob's first"]
    await again.send(conversation.id, "after the restart")  # the restored session: no index reused
    assert [m.text for m in await bob.history(conversation.id)] == [
        "before the restart", "bob's first", "after the restart",
    ]  # fmt: skip
    await again.close()


async def test_a_room_key_reaches_more_devices_than_one_request_can_carry(server: Server) -> None:
    """Sixty devices: their Olm-encrypted room keys do not fit the 64 KiB of one request, so
    the device sends them in several; every one of the sixty reads the message."""
    alice, bob = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    devices = [
        bob,
        *[await Client.login(server.url, bob.username, PASSWORD, device_id=f"D{i}") for i in range(59)],
    ]
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    await alice.send(conversation.id, "to sixty devices")
    for device in devices:
        assert [m.text for m in await device.history(conversation.id)] == ["to sixty devices"], (
            device.device_id
        )


async def test_files_are_encrypted_on_the_device_and_nothing_is_uploaded_for_a_refused_send(
    tmp_path: Path,
) -> None:
    """The file's bytes and name are canaries: neither reaches the database, the blobs or the
    debug log. The recipient gets both back decrypted; a changed blob fails its hash."""
    secret = secrets.token_hex(24).encode() * 8
    name = f"{secrets.token_hex(12)}.txt"
    canaries = Canaries([secret[:48], name.encode()])
    server = start_server(tmp_path / "kh", "sqlite", extra_args=("--log-level", "debug"))
    try:
        alice, bob = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
        conversation = await alice.start_conversation([bob.username], encryption="e2ee")
        sent = await alice.send_file(conversation.id, secret, name, "text/plain")
        assert sent.attachment is not None and sent.attachment.filename == name
        [received] = await bob.history(conversation.id)
        assert received.attachment is not None
        assert (received.attachment.filename, received.attachment.content_type) == (name, "text/plain")
        assert await bob.download_file(received) == secret
        stored_bytes = await bob.download(received.attachment.id)
        assert len(stored_bytes) == len(secret) and stored_bytes != secret  # ciphertext only
        assert canaries.scan([*files_under(server.home), server.log_path]) == {}

        with pytest.raises(KeyholdError, match="send_file"):
            await alice.upload(conversation.id, secret, name)  # would leave the key out
        with pytest.raises(KeyholdError, match="send_file"):
            await alice.send(conversation.id, "see file", attachment_id=received.attachment.id)

        [blob] = [p for p in files_under(server.home) if p.name == received.attachment.id]
        blob.write_bytes(bytes(b ^ 1 for b in blob.read_bytes()))  # the server swaps the bytes
        [again] = await bob.history(conversation.id)
        with pytest.raises(KeyholdError, match="SHA-256 differs"):
            await bob.download_file(again)

        laptop = await Client.login(server.url, bob.username, PASSWORD, device_id="LAPTOP")
        await alice.send(conversation.id, "to both of bob's devices")
        await laptop.close()
        await bob.remove_device("LAPTOP", PASSWORD)
        replaced = await Client.login(server.url, bob.username, PASSWORD, device_id="LAPTOP")
        uploads = len(await stored(server, "SELECT id FROM attachments"))
        with pytest.raises(IdentityChanged):
            await alice.send_file(conversation.id, b"not uploaded", "no.txt")
        assert len(await stored(server, "SELECT id FROM attachments")) == uploads
        await replaced.close()
    finally:
        stop_server(server)


async def test_a_state_file_of_a_removed_or_another_members_device_signs_nothing_in(
    server: Server, tmp_path: Path
) -> None:
    from keyhold.sdk.e2ee.state import StateError

    name, path = unique(), tmp_path / "laptop.e2ee"
    alice = await Client.register(server.url, name, PASSWORD, birthdate="1990-05-17")
    laptop = await Client.login(
        server.url, name, PASSWORD, device_id="LAPTOP", state_path=path, passphrase="pp"
    )
    await laptop.close()
    bob = await new_member(server, e2ee=True)
    with pytest.raises(StateError, match="another member's device"):
        await Client.login(server.url, bob.username, PASSWORD, state_path=path, passphrase="pp")
    assert "LAPTOP" not in [d["device_id"] for d in await bob.devices()]  # no sign-in happened

    await alice.remove_device("LAPTOP", PASSWORD)
    with pytest.raises(StateError, match="was removed from your account"):
        await Client.login(server.url, name, PASSWORD, state_path=path, passphrase="pp")
    assert "LAPTOP" not in [d["device_id"] for d in await alice.devices()]  # it did not come back
    await alice.close()
    await bob.close()


def test_the_state_file_is_written_whole_through_a_fresh_private_file(tmp_path: Path) -> None:
    """A symlink planted where a temporary file might go is never written through, and a
    save leaves only the file (0600) and its lock behind."""
    from keyhold.sdk.e2ee.state import StateFile

    path = tmp_path / "alice.e2ee"
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    (tmp_path / "alice.e2ee.tmp").symlink_to(victim)
    state = StateFile(path, "a passphrase")
    try:
        state.save({"since": 1})
        state.save({"since": 2})
        assert state.load() == {"since": 2}
    finally:
        state.close()
    assert victim.read_bytes() == b"untouched"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alice.e2ee",
        "alice.e2ee.lock",
        "alice.e2ee.tmp",
        "victim",
    ]
