"""`keyhold chat`'s commands, run through its command handler (`Chat.handle`) against a real
server, with the other people on the SDK. What the chat prints is recorded instead of drawn."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from conftest import PASSWORD, Server, new_member
from keyhold.clients.chat import Chat
from keyhold.clients.chat.io import Part, Screen
from keyhold.sdk import Client, Event
from stream_helpers import close_all


class Recorder(Screen):
    """A screen that keeps each line printed, as plain text."""

    def __init__(self) -> None:
        super().__init__(interactive=False)
        self.lines: list[str] = []

    def emit(self, parts: list[Part], live: bool) -> None:  # after `Screen.show` made them visible
        self.lines.append("".join(p if isinstance(p, str) else p[0] for p in parts))

    def last(self, needle: str) -> str:
        found = [line for line in self.lines if needle in line]
        assert found, f"nothing printed with {needle!r}:\n" + "\n".join(self.lines)
        return found[-1]


async def chat_as(client: Client) -> tuple[Chat, Recorder]:
    screen = Recorder()
    return Chat(client, screen), screen


async def test_open_user_starts_nothing_until_the_first_message(sqlite_server: Server) -> None:
    alice, bob = await new_member(sqlite_server), await new_member(sqlite_server)
    chat, screen = await chat_as(alice)

    await chat.handle(f"/open {bob.username}")
    assert "your first message starts it" in screen.last("first message")
    assert await bob.conversations() == []  # nobody is shown an empty conversation

    await chat.handle("hello, this starts it")
    [conv] = await bob.conversations()
    assert [m.text for m in await bob.history(conv.id)] == ["hello, this starts it"]
    await chat.handle(f"/open {bob.username}")  # now it is found, not started again
    assert len(await alice.conversations()) == 1
    await close_all(alice, bob)


async def test_opening_and_answering_read_the_conversation(sqlite_server: Server) -> None:
    alice, bob = await new_member(sqlite_server), await new_member(sqlite_server)
    conv = await bob.start_conversation([alice.username])
    for i in range(3):
        await bob.send(conv.id, f"unread {i}")
    chat, screen = await chat_as(alice)
    await chat.handle("/list")
    assert "3 unread" in screen.last("3 unread")

    await chat.handle("/open 1")
    assert (await alice.conversation(conv.id)).unread == 0
    await bob.send(conv.id, "one more")
    assert (await alice.conversation(conv.id)).unread == 1
    await chat.handle("thanks, seen it")
    assert (await alice.conversation(conv.id)).unread == 0
    await close_all(alice, bob)


async def test_messages_carry_short_numbers_and_files_go_both_ways(
    sqlite_server: Server, tmp_path: Path
) -> None:
    alice, bob = await new_member(sqlite_server), await new_member(sqlite_server)
    conv = await alice.start_conversation([bob.username])
    await bob.send(conv.id, "first")
    await bob.send_file(conv.id, b"the contents of the file", "notes.txt", "text/plain", text="a file")
    chat, screen = await chat_as(alice)
    await chat.handle(f"/open {bob.username}")
    assert screen.last("first").startswith("#1 ")
    assert "/save 2 FILE" in screen.last("notes.txt")
    long_ids = [str(m.id) for m in await alice.history(conv.id)]
    assert not [line for line in screen.lines if any(i in line for i in long_ids)]  # no long ids shown

    saved = tmp_path / "saved.txt"
    await chat.handle(f"/save 2 {saved}")
    assert saved.read_bytes() == b"the contents of the file"
    await chat.handle(f"/save 2 {saved}")
    assert "exists" in screen.last("error")  # never over an existing file

    upload = tmp_path / "photo.png"
    upload.write_bytes(b"\x89PNG not really")
    await chat.handle(f"/attach {upload} look at this")
    last = (await bob.history(conv.id))[-1]
    assert (
        last.text == "look at this"
        and last.attachment is not None
        and last.attachment.filename == "photo.png"
    )
    assert await bob.download(last.attachment.id) == b"\x89PNG not really"

    await chat.handle("/delete 1")
    assert "can delete" in screen.last("error") or "only the sender" in screen.last("error")
    await chat.handle("/delete 3")  # alice's own file message
    assert (await bob.history(conv.id))[-1].deleted
    await close_all(alice, bob)


async def test_report_and_appeal_from_the_chat(sqlite_server: Server) -> None:
    alice, bob = await new_member(sqlite_server), await new_member(sqlite_server)
    conv = await bob.start_conversation([alice.username])
    await bob.send(conv.id, "something rude")
    chat, screen = await chat_as(alice)
    await chat.handle("/open 1")

    await chat.handle("/report 1 harassment it was rude")
    assert "reported to the moderators (case" in screen.last("reported")
    await chat.handle("/report 1 nonsense")
    assert "CATEGORY" in screen.last("error")
    await chat.handle("/appeal 999999 I did nothing")
    assert "no decision about you" in screen.last("error")
    await close_all(alice, bob)


async def test_moderation_report_and_access_notices_are_shown(sqlite_server: Server) -> None:
    alice = await new_member(sqlite_server)
    chat, screen = await chat_as(alice)
    data = {
        "case_id": 7,
        "action": "remove_message",
        "appeal": False,
        "note": "please be kind",
        "can_appeal": True,
    }

    await chat.on_event(Event("moderation.action", 1, {**data, "type": "moderation.action"}))
    notice = screen.last("case 7")
    assert "remove message" in notice and "please be kind" in notice and "/appeal 7" in notice
    await chat.on_event(
        Event("report.outcome", 2, {**data, "action": "no_violation", "type": "report.outcome"})
    )
    assert "your report (case 7)" in screen.last("your report") and "no violation" in screen.last(
        "your report"
    )
    await chat.on_event(Event("access.visible", 3, {"index": 12, "type": "access.visible"}))
    assert "staff accessed data of yours" in screen.last("staff accessed") and "12" in screen.last(
        "staff accessed"
    )
    await alice.close()


async def test_groups_from_the_chat(sqlite_server: Server) -> None:
    alice, bob, carol, dave = [await new_member(sqlite_server) for _ in range(4)]
    chat, screen = await chat_as(alice)

    await chat.handle(f'/new {bob.username} {carol.username} --title "Trip planning 2027"')
    group = next(c for c in await bob.conversations() if c.kind == "group")
    assert group.title == "Trip planning 2027" and group.owner == alice.username

    await chat.handle(f"/add {dave.username}")
    await chat.handle("/rename Trip planning, final")
    await chat.handle(f"/promote {bob.username}")
    await chat.handle(f"/remove {carol.username}")
    view = await bob.conversation(group.id)
    assert view.title == "Trip planning, final" and view.admins == [bob.username]
    assert sorted(view.members) == sorted([alice.username, bob.username, dave.username])

    await chat.handle("/leave")
    assert "you left" in screen.last("you left")
    assert (await bob.conversation(group.id)).owner == bob.username  # the admin takes it over
    await close_all(alice, bob, carol, dave)


async def test_chat_finds_the_server_on_keyhold_port(sqlite_server: Server, tmp_path: Path) -> None:
    """No --url: `keyhold chat` goes to this machine on $KEYHOLD_PORT, as `make run` serves."""
    alice = await new_member(sqlite_server)
    port = sqlite_server.url.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if k != "KEYHOLD_URL"}
    env["XDG_DATA_HOME"] = str(tmp_path)  # where the chat keeps its e2ee device's state
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keyhold", "chat", "-u", alice.username, "--password-stdin",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**env, "KEYHOLD_PORT": port, "COLUMNS": "200"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(f"{PASSWORD}\n/quit\n".encode()), 60)
    assert process.returncode == 0, err.decode()
    assert f"signed in as {alice.username} on {sqlite_server.url}" in out.decode()
    await alice.close()


@pytest.mark.parametrize("command", ["/add x_y", "/remove x_y", "/rename x", "/promote x_y", "/leave"])
async def test_group_commands_need_an_open_group(sqlite_server: Server, command: str) -> None:
    alice = await new_member(sqlite_server)
    chat, screen = await chat_as(alice)
    await chat.handle(command)
    assert "open a group first" in screen.last("error")
    await alice.close()
