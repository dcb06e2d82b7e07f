"""`keyhold chat` in e2ee conversations (issue 8, item 11), through its command handler
(`Chat.handle`) against a real server on both databases, with the other people on the SDK:
the model and `readable_by` shown, messages decrypted on this device, `/devices`, `/timer`,
messages that cannot be read shown as such, franked reports, `/safety`, `/verify` between two
chats, and the warning when a contact's identity changes. What the chat prints is recorded
instead of drawn (`Recorder`, from test_chat_commands)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conftest import PASSWORD, Server, new_member, raw, unique
from keyhold.clients.chat import Chat
from keyhold.clients.chat.command import stop, stream_position
from keyhold.sdk import Client, KeyholdError, StaffClient
from staff_helpers import add_all_staff, login_all
from stream_helpers import close_all, live, next_of
from test_chat_commands import Recorder

pytestmark = pytest.mark.postgres

Ask = Callable[[str, bool], Awaitable[str | None]]
WAIT = 30.0  # an upper bound for a line to appear, never asserted on


def answering(*answers: str) -> tuple[Ask, list[str]]:
    """An `ask` that gives these answers in turn (then none), and the prompts it was given."""
    queue, asked = list(answers), []

    async def ask(prompt: str, _secret: bool) -> str | None:
        asked.append(prompt)
        return queue.pop(0) if queue else None

    return ask, asked


def chat_as(client: Client, ask: Ask | None = None) -> tuple[Chat, Recorder]:
    screen = Recorder()
    return (Chat(client, screen, ask=ask) if ask else Chat(client, screen)), screen


async def e2ee_pair(server: Server) -> tuple[Client, Client]:
    return await new_member(server, e2ee=True), await new_member(server, e2ee=True)


async def printed(screen: Recorder, needle: str) -> str:
    """The first line with `needle` that the chat prints (waiting for live output)."""
    async with asyncio.timeout(WAIT):
        while not [line for line in screen.lines if needle in line]:
            await asyncio.sleep(0.05)
    return screen.last(needle)


@contextlib.asynccontextmanager
async def online(*chats: Chat) -> AsyncIterator[None]:
    """The chats running as `keyhold chat` runs them: live updates, and verification requests
    from others announced."""
    tasks: list[asyncio.Task[None]] = []
    for chat in chats:
        tasks.append(asyncio.create_task(chat.listen(await stream_position(chat.client))))
        tasks.append(asyncio.create_task(chat.verify.watch()))
    try:
        yield
    finally:
        for task in tasks:
            await stop(task)


def safety_digits(screen: Recorder) -> str:
    """The 60 digits of the last safety number the chat showed (three lines of four groups)."""
    start = max(i for i, line in enumerate(screen.lines) if line.startswith("safety number of you and"))
    rows = screen.lines[start + 1 : start + 4]
    assert all(len(row.split()) == 4 for row in rows), rows
    return "".join("".join(row.split()) for row in rows)


@pytest.fixture(scope="module")
async def moderator(server: Server) -> AsyncIterator[StaffClient]:
    """A moderator of region "us" beside the module's server (every member here is in "us")."""
    name = unique("mod")
    staff = await login_all(server, add_all_staff(server, {name: ("moderator", "us")}))
    yield staff[name]
    await staff[name].close()


async def test_an_e2ee_conversation_shows_its_model_and_reads_decrypted(server: Server) -> None:
    alice, bob = await e2ee_pair(server)
    carol = await new_member(server, e2ee=True)
    chat, screen = chat_as(alice)

    await chat.handle(f"/open {bob.username} --e2ee")
    assert "no end-to-end encrypted (e2ee) conversation" in screen.last("first message starts it")
    assert chat.prompt() == f"{bob.username} [e2ee]> "
    await chat.handle("only our devices read this")
    (conv,) = await bob.conversations()
    assert conv.encryption == "e2ee" and conv.kind == "direct"
    assert [m.text for m in await bob.history(conv.id)] == ["only our devices read this"]

    await bob.send(conv.id, "and this answer too")
    screen.lines.clear()
    await chat.handle(f"/open {bob.username}")  # the one 1:1 there is: the e2ee one
    assert "[e2ee]" in screen.last("members:")
    readable = screen.last("readable by:")
    assert "only the participants' devices" in readable and "devices)" in readable
    assert f"{bob.username}: and this answer too" in screen.last("and this answer")
    await chat.handle("/list")
    assert screen.last(" 1. ").endswith("[e2ee]")
    assert "(end-to-end encrypted: open it to read)" in screen.last(f"    {bob.username}: ")

    # --standard: the other model's 1:1 with the same person, not started until a message.
    await chat.handle(f"/open {bob.username} --standard")
    assert "(no conversation with" in screen.last("first message starts it")
    await chat.handle("a standard one")
    models = sorted(c.encryption for c in await bob.conversations())
    assert models == ["e2ee", "standard"]

    # An e2ee group: carol reads what alice's chat sent.
    await chat.handle(f'/new {bob.username} {carol.username} --title "Secret plans" --e2ee')
    (group,) = [c for c in await carol.conversations() if c.kind == "group"]
    assert group.encryption == "e2ee" and group.title == "Secret plans"
    await chat.handle("to the group, encrypted")
    assert [m.text for m in await carol.history(group.id)] == ["to the group, encrypted"]
    await close_all(alice, bob, carol)


async def test_messages_this_device_cannot_read_show_why_and_no_text(server: Server) -> None:
    alice, bob = await e2ee_pair(server)
    conv = await alice.start_conversation([bob.username], encryption="e2ee")
    assert alice.crypto is not None and alice.user_id is not None
    members = [alice.user_id, alice.user_id.replace(alice.username, bob.username)]
    room = f"!{conv.id}:{alice.user_id.split(':', 1)[1]}"
    # A sender pairing one message's ciphertext with another's franking commitment.
    _first, committed = await alice.crypto.encrypt(room, members, "what I committed to")
    second, _ = await alice.crypto.encrypt(room, members, "what I actually sent")
    body = {"encrypted": second, "franking": committed}
    assert (await raw(alice, "POST", f"/conversations/{conv.id}/messages", json=body)).status_code == 201
    await alice.send(conv.id, "an honest message")

    chat, screen = chat_as(bob)
    await chat.handle(f"/open {alice.username}")
    unverifiable = screen.last("#1 ")
    assert "unverifiable message" in unverifiable and "what I" not in unverifiable
    assert "an honest message" in screen.last("#2 ")
    assert not [line for line in screen.lines if "what I actually sent" in line or "committed" in line]

    # A device bob adds now was not there when these were sent: nobody gave it their keys.
    later = await Client.login(server.url, bob.username, PASSWORD)
    later_chat, later_screen = chat_as(later)
    await later_chat.handle(f"/open {alice.username}")
    assert "cannot decrypt" in later_screen.last("#2 ")
    assert not [line for line in later_screen.lines if "honest" in line]
    await close_all(alice, bob, later)


async def test_devices_are_listed_renamed_and_removed_with_the_password(server: Server) -> None:
    alice = await new_member(server, e2ee=True)
    phone = await Client.login(server.url, alice.username, PASSWORD, device_name="old phone")
    assert phone.device_id is not None
    ask, asked = answering("not my password", PASSWORD)
    chat, screen = chat_as(alice, ask)

    await chat.handle("/devices")
    assert "(this device)" in screen.last(str(alice.device_id))
    assert "old phone" in screen.last(phone.device_id) and "(this device)" not in screen.last(phone.device_id)
    assert "2 device(s)" in screen.last("device(s)")

    await chat.handle(f"/devices rename {phone.device_id} drawer phone")
    assert [d["display_name"] for d in await alice.devices() if d["device_id"] == phone.device_id] == [
        "drawer phone"
    ]
    await chat.handle(f"/devices remove {alice.device_id}")
    assert "that is this device" in screen.last("error")
    await chat.handle("/devices remove nosuchdevice")
    assert "no device nosuchdevice" in screen.last("error")
    assert asked == []  # nothing asked for a device that cannot be removed

    await chat.handle(f"/devices remove {phone.device_id}")  # the wrong password first
    assert len(asked) == 1 and phone.device_id in asked[0]
    assert "error" in screen.lines[-1]
    await phone.me()  # still signed in
    await chat.handle(f"/devices remove {phone.device_id}")
    assert f"removed device {phone.device_id}" in screen.last("removed device")
    with pytest.raises(KeyholdError) as refused:
        await phone.me()
    assert refused.value.status == 401
    assert [d["device_id"] for d in await alice.devices()] == [alice.device_id]
    await chat.handle("/devices nonsense")
    assert "usage: /devices" in screen.last("error")
    await close_all(alice, phone)


async def test_timer_is_set_announced_and_bad_values_explained(server: Server) -> None:
    alice, bob = await e2ee_pair(server)
    conv = await alice.start_conversation([bob.username], encryption="e2ee")
    chat, screen = chat_as(alice)
    await chat.handle("/timer 1d")
    assert "open a conversation first" in screen.last("error")
    await chat.handle(f"/open {bob.username}")
    bob_chat, bob_screen = chat_as(bob)
    await bob_chat.handle(f"/open {alice.username}")
    stream = await live(bob)

    await chat.handle("/timer 1d")
    assert "deleted 1d after it was sent" in screen.last("disappearing messages on")
    assert (await bob.conversation(conv.id)).disappear_after_seconds == 86400
    announced = await next_of(stream, "conversation.updated", skip=None)
    assert announced.data["change"] == "timer"
    await bob_chat.on_event(announced)
    assert f"{alice.username} set disappearing messages to 1d" in bob_screen.last("disappearing")
    await chat.handle("/timer")
    assert "disappearing messages: 1d" in screen.last("disappearing messages:")
    await chat.handle("/list")
    assert "disappearing after 1d" in screen.last(bob.username)

    for bad in ("soon", "1x", "-5m", "1.5h"):
        await chat.handle(f"/timer {bad}")
        assert "is not a timer" in screen.last("error") and "usage: /timer" in screen.last("error")
    await chat.handle("/timer 400d")  # the server's bounds, in its words
    assert "365 days" in screen.last("error")
    assert (await bob.conversation(conv.id)).disappear_after_seconds == 86400  # unchanged

    await chat.handle("/timer 8h")
    assert (await bob.conversation(conv.id)).disappear_after_seconds == 8 * 3600
    await chat.handle("/timer off")
    assert "off" in screen.last("disappearing messages off")
    assert (await bob.conversation(conv.id)).disappear_after_seconds is None
    await close_all(stream, alice, bob)


async def test_report_of_an_e2ee_message_reveals_it_franked(server: Server, moderator: StaffClient) -> None:
    alice, bob = await e2ee_pair(server)
    conv = await alice.start_conversation([bob.username], encryption="e2ee")
    await alice.send(conv.id, "good morning")
    await alice.send(conv.id, "you will regret this")
    # A client that does not frank: the same encryption, no franking beside it.
    assert alice.crypto is not None and alice.user_id is not None
    members = [alice.user_id, alice.user_id.replace(alice.username, bob.username)]
    room = f"!{conv.id}:{alice.user_id.split(':', 1)[1]}"
    encrypted, _ = await alice.crypto.encrypt(room, members, "not franked")
    sent = await raw(alice, "POST", f"/conversations/{conv.id}/messages", json={"encrypted": encrypted})
    assert sent.status_code == 201

    chat, screen = chat_as(bob)
    await chat.handle(f"/open {alice.username}")
    await chat.handle("/report 2 harassment threatening me")
    line = screen.last("reported #2")
    assert "verified sender" in line
    case_id = int(line.split("(case ")[1].split(",")[0])
    case = await moderator.report(case_id)
    assert case["details"]["verified_sender"] is True
    revealed = case["details"]["revealed"]
    assert revealed["content"]["body"] == "you will regret this" and revealed["sender"] == alice.username
    assert "good morning" not in str(case)  # only the reported message is revealed

    await chat.handle("/report 3 spam")
    line = screen.last("reported #3")
    assert "unverified" in line and "did not frank" in line
    unfranked = await moderator.report(int(line.split("(case ")[1].split(",")[0]))
    assert "revealed" not in unfranked["details"] and "verified_sender" not in unfranked["details"]
    await close_all(alice, bob)


async def test_safety_numbers_agree_and_verify_completes_between_two_chats(server: Server) -> None:
    alice, bob = await e2ee_pair(server)
    conv = await alice.start_conversation([bob.username], encryption="e2ee")
    await alice.send(conv.id, "before we verify")  # alice's device learns bob's keys
    alice_chat, alice_screen = chat_as(alice, answering("n", "y")[0])
    bob_chat, bob_screen = chat_as(bob, answering("y", "y")[0])

    await alice_chat.handle(f"/safety {bob.username}")
    await bob_chat.handle(f"/safety {alice.username}")
    digits = safety_digits(alice_screen)
    assert len(digits) == 60 and digits.isdigit() and digits == safety_digits(bob_screen)
    assert "compare them" in alice_screen.lines[-1]
    await alice_chat.handle("/safety nosuchuser_zz")
    assert "no safety number with nosuchuser_zz" in alice_screen.last("error")
    await bob_chat.handle("/verify accept")
    assert "no verification request is waiting" in bob_screen.last("error")

    async with online(alice_chat, bob_chat):
        # Round one: alice says the codes do not match. Nothing is verified on either side.
        asking = asyncio.create_task(alice_chat.handle(f"/verify {bob.username}"))
        assert "/verify accept" in await printed(bob_screen, "asks to verify with you")
        await bob_chat.handle("/verify accept")
        await asking
        assert "cancelled" in alice_screen.last(f"verification with {bob.username}")
        assert "the codes did not match" in bob_screen.last(f"verification with {alice.username}")
        assert not alice.is_verified(bob.username) and not bob.is_verified(alice.username)

        # Round two: both say they match.
        alice_screen.lines.clear()
        bob_screen.lines.clear()
        asking = asyncio.create_task(alice_chat.handle(f"/verify {bob.username}"))
        await printed(bob_screen, "asks to verify with you")
        await bob_chat.handle(f"/verify accept {alice.username}")
        await asking
    assert alice_screen.last("✓ verified").startswith(f"✓ verified {bob.username}")
    assert bob_screen.last("✓ verified").startswith(f"✓ verified {alice.username}")
    # Both were shown the same seven emoji and three numbers.
    shown = [
        [line for line in screen.lines if line.startswith("   ")] for screen in (alice_screen, bob_screen)
    ]
    assert shown[0] == shown[1] and len(shown[0]) == 2 and len(shown[0][0].split("   ")) >= 7
    assert alice.is_verified(bob.username) and bob.is_verified(alice.username)

    await alice_chat.handle(f"/open {bob.username}")
    assert f"{bob.username} ✓" in alice_screen.last("members:")
    await alice_chat.handle(f"/safety {bob.username}")
    assert "is verified on this device" in alice_screen.lines[-1]
    await close_all(alice, bob)


async def test_a_changed_identity_blocks_sending_until_trusted(server: Server, tmp_path: Path) -> None:
    alice, bob = await e2ee_pair(server)
    conv = await alice.start_conversation([bob.username], encryption="e2ee")
    chat, screen = chat_as(alice)
    await chat.handle(f"/open {bob.username}")
    await chat.handle("before the change")  # alice's device sees bob's keys (first use)

    # Bob signs in on a new device without state and publishes new cross-signing keys.
    phone = await Client.login(server.url, bob.username, PASSWORD, device_id="NEWPHONE")
    await phone.reset_cross_signing(PASSWORD)

    await chat.handle("are you still you?")
    warning = screen.last("not sent")
    assert warning.startswith("⚠ not sent") and f"{bob.username}'s identity changed" in warning
    assert "master key changed" in warning
    advice = screen.lines[-1]
    assert f"/trust {bob.username}" in advice and f"/verify {bob.username}" in advice
    attachment = tmp_path / "note.txt"
    attachment.write_text("a file")
    await chat.handle(f"/attach {attachment}")  # a file is refused the same way
    assert screen.lines[-2].startswith("⚠ not sent")
    await chat.handle("still not sent")
    assert screen.lines[-2].startswith("⚠ not sent")

    await chat.handle(f"/trust {bob.username}")
    assert "not verified" in screen.last("accepted")
    await chat.handle("after trusting")
    texts = [m.text for m in await phone.history(conv.id)]
    assert texts[-1] == "after trusting"
    assert "are you still you?" not in texts and "still not sent" not in texts
    await chat.handle("/trust")
    assert "usage: /trust USER" in screen.last("error")
    await chat.handle("/trust nosuchuser_zz")  # no change of theirs was seen: nothing said to be accepted
    assert "current keys accepted" not in screen.lines[-1] and "nosuchuser_zz" in screen.lines[-1]
    await close_all(alice, bob, phone)


EVIL = "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J\x9b31m\u202egnp.exe"


def inert(line: str) -> bool:
    return not any((ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0 for c in line) and (
        "\u202e" not in line
    )


async def test_escape_sequences_from_others_are_shown_as_text(server: Server) -> None:
    """An e2ee message, and the reason the other side gives for cancelling a verification,
    reach the terminal with their escape sequences (clipboard write, screen clear, C1 CSI,
    right-to-left override) as visible text."""
    alice, bob = await e2ee_pair(server)
    conv = await bob.start_conversation([alice.username], encryption="e2ee")
    await bob.send(conv.id, f"hi {EVIL}")
    chat, screen = chat_as(alice)
    await chat.handle(f"/open {bob.username}")
    shown = screen.last("hi ")
    assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07\\x1b[2J\\x9b31m<U+202E>gnp.exe" in shown

    stream = await live(bob)
    async with online(chat):
        asking = asyncio.create_task(chat.handle(f"/verify {bob.username}"))
        request = await bob.next_verification_request(timeout=WAIT)
        await request.accept()
        await request.cancel(reason=f"no {EVIL}")
        await asyncio.wait_for(asking, WAIT)
    assert "<U+202E>gnp.exe" in screen.last(f"verification with {bob.username} ended")
    assert all(inert(line) for line in screen.lines), screen.lines
    await close_all(stream, alice, bob)


async def test_a_file_in_an_e2ee_conversation_shows_its_name_and_saves_decrypted(
    server: Server, tmp_path: Path
) -> None:
    alice, bob = await e2ee_pair(server)
    await alice.start_conversation([bob.username], encryption="e2ee")
    chat, screen = chat_as(alice)
    await chat.handle(f"/open {bob.username}")
    upload = tmp_path / "plan.txt"
    upload.write_bytes(b"the plan, in plain text")
    await chat.handle(f"/attach {upload} our plan")
    assert "None" not in screen.lines[-1] and "[file " in screen.lines[-1]

    bob_chat, bob_screen = chat_as(bob)
    await bob_chat.handle(f"/open {alice.username}")
    assert "[file plan.txt, 23 B; /save 1 FILE]" in bob_screen.last("our plan")
    await bob_chat.handle(f"/save 1 {tmp_path / 'saved.txt'}")
    assert (tmp_path / "saved.txt").read_bytes() == b"the plan, in plain text"
    assert "saved plan.txt" in bob_screen.lines[-1]
    await close_all(alice, bob)
