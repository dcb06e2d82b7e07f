"""`keyhold chat` driven through a pipe, against a real server, with the other side on the SDK."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import PASSWORD, Server, keyhold_cli, new_member
from keyhold.sdk import Client

TIMEOUT = 30.0


class ChatProcess:
    """A `keyhold chat` subprocess: write lines to its stdin, wait for lines on its stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.output: list[str] = []

    async def line(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((text + "\n").encode())
        await self.process.stdin.drain()

    async def expect(self, needle: str, timeout: float = TIMEOUT) -> str:
        """The first new stdout line containing `needle`; fails with everything seen so far."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                raw = await asyncio.wait_for(self.process.stdout.readline(), max(remaining, 0.01))
            except TimeoutError:
                raise AssertionError(
                    f"no line with {needle!r} in {timeout}s; output:\n{self.dump()}"
                ) from None
            if not raw:
                raise AssertionError(f"chat exited before printing {needle!r}; output:\n{self.dump()}")
            text = raw.decode()
            self.output.append(text)
            if needle in text:
                return text

    def dump(self) -> str:
        return "".join(self.output)

    async def finish(self, timeout: float = TIMEOUT) -> tuple[int, str, str]:
        assert self.process.stdin is not None
        if not self.process.stdin.is_closing():
            self.process.stdin.close()
        out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        self.output.append(out.decode())
        assert self.process.returncode is not None
        return self.process.returncode, self.dump(), err.decode()


async def start_chat(server: Server, username: str, *extra: str) -> ChatProcess:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keyhold",
        "chat",
        "--url",
        server.url,
        "--username",
        username,
        "--password-stdin",
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    return ChatProcess(process)


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's chats keep their e2ee state (by default under $XDG_DATA_HOME) in a
    directory of its own, never in the home of whoever runs the tests."""
    home = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


@pytest.fixture
async def chat_of() -> AsyncIterator[list[ChatProcess]]:
    """Chat processes started by a test; any still running at the end is killed."""
    started: list[ChatProcess] = []
    yield started
    for chat in started:
        if chat.process.returncode is None:
            chat.process.kill()
            await chat.process.wait()


async def test_chat_session_sends_receives_live_and_quits(
    sqlite_server: Server, chat_of: list[ChatProcess]
) -> None:
    alice = await new_member(sqlite_server)
    bob = await new_member(sqlite_server)
    carol = await new_member(sqlite_server, region="eu")
    try:
        chat = await start_chat(sqlite_server, alice.username)
        chat_of.append(chat)
        await chat.line(PASSWORD)
        await chat.expect(f"signed in as {alice.username}")
        await chat.expect("no conversations yet")  # the list shown at start

        # /open USER, with no 1:1 yet: nothing is started (bob sees nothing) until a message is sent.
        await chat.line(f"/open {bob.username}")
        await chat.expect(f"── {bob.username}")
        await chat.expect("your first message starts it")
        assert await bob.conversations() == []

        # Plain text is sent to the open conversation; bob receives it through the SDK.
        hello = f"hello from the terminal {uuid.uuid4().hex}"
        await chat.line(hello)
        await chat.expect(f"{alice.username}: {hello}")
        conversations = await bob.conversations()
        assert len(conversations) == 1
        direct = conversations[0]
        assert sorted(direct.members) == sorted([alice.username, bob.username])
        assert [m.text for m in await bob.history(direct.id)] == [hello]

        # Bob answers: the chat prints it live, without any command from alice.
        reply = f"reply from the sdk {uuid.uuid4().hex}"
        await bob.send(direct.id, reply)
        line = await chat.expect(reply)
        assert line.startswith("#2 ") and f"{bob.username}: {reply}" in line  # short numbers, in order

        # A message in another conversation shows as a one-line notice.
        other = await carol.start_conversation([alice.username])
        ping = f"ping from carol {uuid.uuid4().hex}"
        await carol.send(other.id, ping)
        notice = await chat.expect(ping)
        assert notice.startswith("● ") and carol.username in notice and f"/open {carol.username}" in notice

        # /list shows both conversations with unread counts, previews and readable_by.
        await chat.line("/list")
        await chat.expect(f"{carol.username}  1 unread")
        await chat.expect(f"{carol.username}: {ping}")
        await chat.expect("readable by: the participants; Keyhold staff only under an approved report")

        # What the open conversation shows is read: /read finds nothing left to mark.
        await chat.line("/read")
        await chat.expect("read")
        assert (await alice.conversation(direct.id)).unread == 0

        # /delete of alice's message #1: bob's history keeps a tombstone.
        await chat.line("/delete 1")
        await chat.expect("deleted #1 for everyone")
        assert [m.deleted for m in await bob.history(direct.id)] == [True, False]

        # Errors come back as plain sentences.
        await chat.line("/delete 123")
        await chat.expect("error: no message #123 shown here")
        await chat.line("/open nosuchuser_zz")
        await chat.expect("error: no such user")

        # A group, /whoami, /history, /help.
        await chat.line(f'/new {bob.username} {carol.username} --title "Trip planning"')
        await chat.expect(
            f"started group Trip planning with {alice.username}, {bob.username}, {carol.username}"
        )
        await chat.line("first message in the group")
        await chat.expect(f"{alice.username}: first message in the group")
        group = next(c for c in await carol.conversations() if c.title == "Trip planning")
        assert group.kind == "group" and group.unread == 1
        await chat.line("/whoami")
        await chat.expect(f"{alice.username} ({alice.username}), region us, signed in to {sqlite_server.url}")
        await chat.line("/history")
        await chat.expect("(no older messages)")
        await chat.line("/help")
        await chat.expect("/open USER")

        await chat.line("/quit")
        code, output, errors = await chat.finish()
        assert code == 0, f"{output}\n{errors}"
        assert "Traceback" not in errors
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_chat_history_pages_backwards(sqlite_server: Server, chat_of: list[ChatProcess]) -> None:
    alice = await new_member(sqlite_server)
    bob = await new_member(sqlite_server)
    try:
        conv = await bob.start_conversation([alice.username])
        for i in range(7):
            await bob.send(conv.id, f"numbered message {i}")
        chat = await start_chat(sqlite_server, alice.username, "--history", "3")
        chat_of.append(chat)
        await chat.line(PASSWORD)
        await chat.expect(f"{bob.username}  7 unread")
        await chat.line("/open 1")
        await chat.expect("(/history for older messages)")
        for i in (4, 5, 6):
            await chat.expect(f"numbered message {i}")
        await chat.expect("(7 unread, now read)")  # opening a conversation reads it
        assert (await alice.conversation(conv.id)).unread == 0
        await chat.line("/history 2")
        await chat.expect("2 older message(s)")
        await chat.expect("numbered message 2")
        await chat.expect("numbered message 3")
        await chat.line("/history")
        await chat.expect("numbered message 0")
        await chat.expect("numbered message 1")
        await chat.line("/history")
        await chat.expect("(no older messages)")
        await chat.line("//slash at the start")
        await chat.expect(f"{alice.username}: /slash at the start")
        code, output, _ = await chat.finish()  # end of input quits too
        assert code == 0, output
        assert [m.text for m in await bob.history(conv.id)][-1] == "/slash at the start"
    finally:
        await alice.close()
        await bob.close()


async def test_chat_refuses_bad_password(sqlite_server: Server, chat_of: list[ChatProcess]) -> None:
    alice = await new_member(sqlite_server)
    await alice.close()
    chat = await start_chat(sqlite_server, alice.username)
    chat_of.append(chat)
    await chat.line("not the password")
    code, output, errors = await chat.finish()
    assert code != 0
    assert f"cannot sign in as {alice.username}: username or password is wrong" in errors
    assert "Traceback" not in errors
    assert "not the password" not in output + errors  # secrets never echoed


async def test_chat_unreachable_server_and_missing_options() -> None:
    result = keyhold_cli("chat", "--url", "http://127.0.0.1:9", "--username", "x", check=False)
    assert result.returncode != 0
    assert "pass --password-stdin" in result.stderr  # stdin is not a terminal here

    result = keyhold_cli("chat", "--url", "http://127.0.0.1:9", "--password-stdin", check=False)
    assert result.returncode != 0
    assert "--username is required" in result.stderr

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keyhold",
        "chat",
        "--url",
        "http://127.0.0.1:9",
        "-u",
        "alice",
        "--password-stdin",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(b"whatever\n"), TIMEOUT)
    assert process.returncode != 0
    assert "cannot reach http://127.0.0.1:9" in err.decode()


def test_chat_help_explains_the_commands() -> None:
    result = keyhold_cli("chat", "--help", env={"COLUMNS": "200"})
    for needle in (
        "--password-stdin",
        "--insecure",
        "--url",
        "/list",
        "/open USER",
        "/new",
        "/history",
        "/read",
        "/delete",
        "/whoami",
        "/quit",
        "live",
        "--e2ee-state",
        "--no-e2ee-state",
        "--e2ee-passphrase",
        "/timer",
        "/devices",
        "--e2ee",
        "/safety USER",
        "/verify USER",
        "/verify accept",
        "/trust USER",
    ):
        assert needle in result.stdout, needle


async def test_chat_sees_messages_sent_from_the_users_other_device(
    sqlite_server: Server, chat_of: list[ChatProcess]
) -> None:
    alice = await new_member(sqlite_server)
    bob = await new_member(sqlite_server)
    try:
        conv = await alice.start_conversation([bob.username])
        chat = await start_chat(sqlite_server, alice.username)
        chat_of.append(chat)
        await chat.line(PASSWORD)
        await chat.line(f"/open @{bob.username}")
        await chat.expect("(no messages yet")
        # Alice's other device (the SDK) sends: the terminal shows it in the open conversation.
        other_device = await Client.login(sqlite_server.url, alice.username, PASSWORD)
        try:
            await other_device.send(conv.id, "sent from my phone")
            await chat.expect(f"{alice.username}: sent from my phone")
            await bob.send(conv.id, "and bob answers")
            await chat.expect(f"{bob.username}: and bob answers")
        finally:
            await other_device.close()
        await chat.line("/quit")
        code, output, _ = await chat.finish()
        assert code == 0, output
    finally:
        await alice.close()
        await bob.close()


async def test_chat_is_the_same_e2ee_device_from_run_to_run(
    server: Server, chat_of: list[ChatProcess], data_home: Path
) -> None:
    """The first run makes a device and keeps its state under $XDG_DATA_HOME; a later run with
    the same file is the same device and reads what was sent to it meanwhile; a run without
    the file is a new device, which cannot."""
    alice = await new_member(server, e2ee=True)
    bob = await new_member(server, e2ee=True)
    try:
        first = await start_chat(server, alice.username)
        chat_of.append(first)
        await first.line(PASSWORD)
        kept = (await first.expect("end-to-end encryption kept in")).strip()
        device = kept.split()[1].rstrip(",")
        state = data_home / "keyhold" / server.url.removeprefix("http://").replace(":", "_")
        assert kept.endswith(str(state / f"{alice.username}.e2ee"))
        await first.line("/quit")
        assert (await first.finish())[0] == 0
        assert (state / f"{alice.username}.e2ee").is_file()
        for private in (state, state.parent, state.parent.parent):  # .../data/keyhold/HOST_PORT
            assert stat.S_IMODE(private.stat().st_mode) == 0o700, private
        assert stat.S_IMODE((state / f"{alice.username}.e2ee").stat().st_mode) == 0o600

        # While no chat runs, bob writes to alice's devices: her chat device among them.
        conversation = await bob.start_conversation([alice.username], encryption="e2ee")
        await bob.send(conversation.id, "sent while you were away")

        again = await start_chat(server, alice.username)
        chat_of.append(again)
        await again.line(PASSWORD)
        assert f"device {device}, end-to-end encryption kept in" in await again.expect(
            "end-to-end encryption"
        )
        await again.line(f"/open {bob.username}")
        await again.expect(f"{bob.username}: sent while you were away")
        await again.line("/quit")
        code, output, errors = await again.finish()
        assert code == 0 and "cannot decrypt" not in output, output + errors

        fresh = await start_chat(server, alice.username, "--no-e2ee-state")
        chat_of.append(fresh)
        await fresh.line(PASSWORD)
        assert device not in await fresh.expect("in memory: a new device each run")
        await fresh.line(f"/open {bob.username}")
        await fresh.expect("cannot decrypt")
        await fresh.line("/quit")
        code, output, _ = await fresh.finish()
        assert code == 0 and "sent while you were away" not in output
    finally:
        await alice.close()
        await bob.close()


async def test_chat_state_file_needs_its_passphrase(
    sqlite_server: Server, chat_of: list[ChatProcess], tmp_path: Path
) -> None:
    alice = await new_member(sqlite_server)
    await alice.close()
    phone = await Client.login(sqlite_server.url, alice.username, PASSWORD)  # another device of alice's
    state = tmp_path / "alice-laptop.e2ee"
    made = await start_chat(sqlite_server, alice.username, "--e2ee-state", str(state), "--e2ee-passphrase")
    chat_of.append(made)
    await made.line(PASSWORD)
    await made.line("first passphrase")
    device = (await made.expect(f"end-to-end encryption kept in {state}")).split()[1].rstrip(",")
    await made.line("/quit")
    assert (await made.finish())[0] == 0
    assert b"first passphrase" not in state.read_bytes()

    for extra, lines, hint in (
        (["--e2ee-passphrase"], [PASSWORD, "another passphrase"], ""),
        ([], [PASSWORD], "add --e2ee-passphrase and type the old one"),  # the password is not it
    ):
        wrong = await start_chat(sqlite_server, alice.username, "--e2ee-state", str(state), *extra)
        chat_of.append(wrong)
        for line in lines:
            await wrong.line(line)
        code, output, errors = await wrong.finish()
        assert code != 0
        assert f"cannot use the end-to-end encryption state: {state}: wrong passphrase" in errors
        assert hint in errors and "Traceback" not in errors
        assert "another passphrase" not in output + errors  # secrets never echoed

    # The same file in two chats at once: the second is refused, not a second copy of the device.
    holder = await start_chat(sqlite_server, alice.username, "--e2ee-state", str(state), "--e2ee-passphrase")
    chat_of.append(holder)
    await holder.line(PASSWORD)
    await holder.line("first passphrase")
    await holder.expect("end-to-end encryption kept in")
    second = await start_chat(sqlite_server, alice.username, "--e2ee-state", str(state), "--e2ee-passphrase")
    chat_of.append(second)
    await second.line(PASSWORD)
    await second.line("first passphrase")
    code, _, errors = await second.finish()
    assert code != 0 and "in use by another client" in errors and "--no-e2ee-state" in errors
    await holder.line("/quit")
    assert (await holder.finish())[0] == 0

    # The device removed meanwhile (from another device): its state file is refused, not used.
    await phone.remove_device(device, PASSWORD)
    removed = await start_chat(sqlite_server, alice.username, "--e2ee-state", str(state), "--e2ee-passphrase")
    chat_of.append(removed)
    await removed.line(PASSWORD)
    await removed.line("first passphrase")
    code, _, errors = await removed.finish()
    assert (
        code != 0
        and f"{state}: device {device} was removed from your account, so its state cannot be used again"
        in " ".join(errors.split())  # as printed, wrapped to the terminal
    )
    await phone.close()
