"""`keyhold chat` against what others (and the server) may send it, and against odd input:
terminal escapes from others shown as text, non-ASCII digits, `/new` flags in any order,
empty passphrases, the default state-file path, several verification requests, the y/n
question of `/verify`, `/trust` and files whose name is encrypted. A fake client stands in
for the SDK: nothing here needs a server."""

from __future__ import annotations

import asyncio
import signal
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import typer

from keyhold.clients.chat import Chat
from keyhold.clients.chat import command as chat_command
from keyhold.clients.chat.io import Screen, visible
from keyhold.clients.chat.session import View
from keyhold.sdk import (
    Attachment,
    Client,
    Conversation,
    KeyholdError,
    Message,
    SasCodes,
    VerificationCancelled,
)
from test_chat_commands import Recorder

EVIL = "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J\x9b31m\u202egnp.exe"


def inert(line: str) -> bool:
    """Nothing in `line` a terminal would act on."""
    return not any((ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0 for c in line) and not any(
        c in line for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    )


# -- a fake SDK ---------------------------------------------------------------------------------


class FakeSas:
    def __init__(
        self, user: str, device: str = "DEV", txn: str = "t1", cancel_reason: str | None = None
    ) -> None:
        self.other_user, self.other_device, self.transaction_id = user, device, txn
        self.state = "incoming"
        self.cancel_reason: str | None = None
        self._cancel_with = cancel_reason
        self.cancelled: list[str] = []
        self.confirmed = False
        self.codes_called = asyncio.Event()

    async def accept(self) -> None:
        self.state = "ready"

    async def codes(self, timeout: float = 30.0) -> SasCodes:
        self.codes_called.set()
        if self._cancel_with is not None:
            self.state, self.cancel_reason = "cancelled", self._cancel_with
            raise VerificationCancelled("m.user", self._cancel_with)
        self.state = "keys_exchanged"
        return SasCodes((1111, 2222, 3333), [("🐶", "Dog")] * 7)

    async def confirm(self) -> None:
        self.confirmed = True
        self.state = "confirmed"

    async def done(self, timeout: float = 30.0) -> bool:
        self.state = "done"
        return True

    async def cancel(self, reason: str = "the user cancelled", code: str = "m.user") -> None:
        self.cancelled.append(reason)
        self.state, self.cancel_reason = "cancelled", reason


@dataclass
class FakeClient:
    username: str = "me"
    base_url: str = "http://server"
    device_id: str | None = "MINE"
    crypto: Any = None
    conversations_list: list[Conversation] = field(default_factory=list)
    started: list[dict[str, Any]] = field(default_factory=list)
    requests: asyncio.Queue[FakeSas] = field(default_factory=asyncio.Queue)
    accepted: list[str] = field(default_factory=list)
    accepted_changes: list[list[str] | None] = field(default_factory=list)
    accept_result: bool = True
    fail_with: BaseException | None = None
    outgoing: FakeSas | None = None

    async def conversations(self, limit: int = 50, before: int | None = None) -> list[Conversation]:
        if self.fail_with is not None:
            raise self.fail_with
        return self.conversations_list

    async def user(self, username: str) -> dict[str, Any]:
        raise KeyholdError(404, {"title": "Not found", "detail": "no such user"})

    async def history(
        self, conversation_id: int, limit: int = 20, before: int | None = None
    ) -> list[Message]:
        return []

    async def start_conversation(
        self, usernames: list[str], encryption: str = "standard", title: str = "", kind: str | None = None
    ) -> Conversation:
        self.started.append({"users": usernames, "encryption": encryption, "title": title})
        return conversation(members=[self.username, *usernames], encryption=encryption, title=title)

    async def send(self, conversation_id: int, text: str) -> Message:
        if self.fail_with is not None:
            raise self.fail_with
        return message(text)

    async def next_verification_request(self, timeout: float = 30.0) -> FakeSas:
        return await asyncio.wait_for(self.requests.get(), timeout)

    async def start_verification(self, username: str, device_id: str | None = None) -> FakeSas:
        assert self.outgoing is not None
        return self.outgoing

    def is_verified(self, username: str) -> bool:
        return False

    def accept_identity(self, username: str, changes: list[str] | None = None) -> bool:
        self.accepted.append(username)
        self.accepted_changes.append(changes)
        return self.accept_result


def conversation(members: list[str], encryption: str = "standard", title: str = "") -> Conversation:
    return Conversation.from_json(
        {
            "id": 1,
            "kind": "group" if len(members) > 2 else "direct",
            "members": members,
            "title": title,
            "encryption": encryption,
            "readable_by": "the participants",
        }
    )


def message(text: str | None, attachment: Attachment | None = None) -> Message:
    return Message(1, 1, "ann", text, "2030-01-01T00:00:00Z", attachment=attachment)


Ask = Callable[[str, bool], Awaitable[str | None]]


def chat_with(
    client: FakeClient | None = None, answers: tuple[str, ...] = ()
) -> tuple[Chat, Recorder, FakeClient]:
    fake = client or FakeClient()
    queue = list(answers)

    async def ask(prompt: str, _secret: bool) -> str | None:
        return queue.pop(0) if queue else None

    screen = Recorder()
    return Chat(cast(Client, fake), screen, ask=ask), screen, fake


# -- 1. what others wrote reaches the terminal as text ---------------------------------------------


def test_visible_shows_controls_and_bidi_overrides_as_text() -> None:
    assert visible("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert visible("\x9b31m") == "\\x9b31m"
    assert visible("\x7f\x00\r") == "\\x7f\\x00\\x0d"
    assert visible("x\u202ey\u2066z\u200f") == "x<U+202E>y<U+2066>z<U+200F>"
    assert visible("new\nline\tand tab, émoji 🐶") == "new\nline\tand tab, émoji 🐶"


def test_the_screen_prints_escape_sequences_inert(capsys: pytest.CaptureFixture[str]) -> None:
    screen = Screen(interactive=False)
    screen.show(("ann: ", "bold"), EVIL)
    screen.live(EVIL, (EVIL, "dim"))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x9b" not in out and "\u202e" not in out and "\x07" not in out
    assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07" in out and "<U+202E>gnp.exe" in out


async def test_a_message_and_names_from_others_are_shown_inert() -> None:
    chat, screen, _ = chat_with()
    chat.view = View(conversation(["me", f"ann{EVIL}"], title=f"title{EVIL}"))
    chat.show_messages([message(f"hello {EVIL}")])
    chat.notice(f"{EVIL} asks to verify with you")
    assert chat.prompt().startswith("title")
    assert all(inert(line) for line in screen.lines), screen.lines
    assert "\\x1b[2J" in screen.last("hello")


# -- 2. non-ASCII digits, and failures that are not the server's ------------------------------------


@pytest.mark.parametrize(
    "line", ["/report ² spam", "/history ²", "/open ²", "/delete ²", "/appeal ² why", "/open ٣"]
)
async def test_non_ascii_digits_are_not_numbers(line: str) -> None:
    chat, screen, _ = chat_with()
    chat.view = View(conversation(["me", "ann"]))
    assert await chat.handle(line) is True
    assert "error" in screen.lines[-1], screen.lines


@pytest.mark.parametrize("line", ["/list", "a message"])
async def test_a_timeout_or_a_bug_does_not_end_the_chat(line: str) -> None:
    for failure in (TimeoutError(), RuntimeError("secret-token-123 in the message")):
        chat, screen, fake = chat_with()
        chat.view = View(conversation(["me", "ann"]))
        fake.fail_with = failure
        assert await chat.handle(line) is True
        assert "error" in screen.lines[-1]
        assert "secret-token-123" not in "\n".join(screen.lines) and "Traceback" not in "\n".join(
            screen.lines
        )


# -- 3. /new takes its flags anywhere ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "users", "encryption", "title"),
    [
        ("/new ann ben --title Trip --e2ee", ["ann", "ben"], "e2ee", "Trip"),
        ('/new ann --title "Trip planning" @ben', ["ann", "ben"], "standard", "Trip planning"),
        ("/new --e2ee ann --title=Trip", ["ann"], "e2ee", "Trip"),
        ("/new ann ben", ["ann", "ben"], "standard", ""),
    ],
)
async def test_new_takes_flags_anywhere(line: str, users: list[str], encryption: str, title: str) -> None:
    chat, _, fake = chat_with()
    await chat.handle(line)
    assert fake.started == [{"users": users, "encryption": encryption, "title": title}]


@pytest.mark.parametrize(
    "line", ["/new ann --title", '/new ann --title "unclosed', "/new ann --colour red", "/new"]
)
async def test_new_refuses_what_it_cannot_read(line: str) -> None:
    chat, screen, fake = chat_with()
    await chat.handle(line)
    assert fake.started == [] and "error" in screen.lines[-1]


# -- 4. an empty passphrase is refused -----------------------------------------------------------


class NoLines:
    def __init__(self, *_args: object) -> None:
        pass

    async def read(self, prompt: str) -> str | None:
        return None


async def test_an_empty_separate_passphrase_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed_in: list[object] = []

    async def login(*args: object, **kwargs: object) -> None:
        signed_in.append(kwargs)

    monkeypatch.setattr(chat_command, "PipedLines", NoLines)
    monkeypatch.setattr(chat_command.Client, "login", login)
    with pytest.raises(typer.Exit):
        await chat_command.run_chat(
            "http://127.0.0.1:9", "alice", "the password", True, False,
            state_path=tmp_path / "s.e2ee", passphrase="", separate_passphrase=True,
        )  # fmt: skip
    assert signed_in == [] and "passphrase is empty" in capsys.readouterr().err


def test_an_empty_passphrase_typed_at_the_terminal_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["the password", ""])
    monkeypatch.setattr(chat_command.getpass, "getpass", lambda _prompt: next(answers))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(chat_command, "run_chat", None)  # never reached
    with pytest.raises(typer.Exit):
        chat_command.chat(
            url="http://127.0.0.1:9", username="alice", password_stdin=False, insecure=False, ca_file=None,
            history=20, e2ee_state=tmp_path / "s.e2ee", no_e2ee_state=False, e2ee_passphrase=True,
            device_name=None,
        )  # fmt: skip
    assert "passphrase is empty" in capsys.readouterr().err


# -- 5. the default state-file path --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "folder"),
    [
        ("https://alice:hunter2@chat.example.com", "chat.example.com_443"),
        ("https://Chat.Example.COM:443/", "chat.example.com_443"),
        ("http://chat.example.com", "chat.example.com_80"),
        ("http://127.0.0.1:8000", "127.0.0.1_8000"),
        ("http://[::1]:8000", "__1_8000"),
    ],
)
def test_the_state_path_names_host_and_port_only(
    url: str, folder: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    path = chat_command.default_state_path(url, "alice")
    assert path == tmp_path / "keyhold" / folder / "alice.e2ee"
    assert "hunter2" not in str(path)


@pytest.mark.parametrize("url", ["http://..:80", "http://.", "http:///x", "http://a\\b", "http://a%2f..b"])
def test_the_state_path_refuses_hosts_that_are_not_names(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with pytest.raises(ValueError):
        chat_command.default_state_path(url, "alice")


def test_the_state_folders_are_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keyhold" / "host_443" / "alice.e2ee"
    chat_command.make_state_folders(path)
    for folder in (path.parent, path.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


# -- 6. several verification requests ------------------------------------------------------------


async def watching(chat: Chat, fake: FakeClient, *requests: FakeSas) -> None:
    task = asyncio.create_task(chat.verify.watch())
    for request in requests:
        await fake.requests.put(request)
    while not fake.requests.empty():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    task.cancel()


async def test_verify_accept_names_the_requester() -> None:
    chat, screen, fake = chat_with(answers=("y",))
    ann, ben = FakeSas("ann", txn="a"), FakeSas("ben", txn="b")
    await watching(chat, fake, ann, ben)
    assert "ann" in screen.last("ann (device") and "ben" in screen.last("ben (device")
    await chat.handle("/verify accept")  # two are waiting: which one?
    assert "ann" in screen.lines[-1] and "ben" in screen.lines[-1] and ann.state == ben.state == "incoming"
    await chat.handle("/verify reject ann")
    assert ann.cancelled and ben.state == "incoming"
    await chat.handle("/verify accept")  # only ben's is left: it is accepted, and named
    assert "ben" in screen.last("accepting") and ben.confirmed


async def test_one_notice_per_member_and_request() -> None:
    chat, screen, fake = chat_with()
    first, again, newer = FakeSas("ann", txn="a"), FakeSas("ann", txn="a"), FakeSas("ann", txn="b")
    await watching(chat, fake, first, again, newer)
    assert len([line for line in screen.lines if "asks to verify" in line]) == 1
    assert chat.verify.pending["ann"] is newer  # the newest wins
    chat.verify.noticed["ann"] = time.monotonic() - 60  # half a minute later, a notice again
    await watching(chat, fake, FakeSas("ann", txn="c"))
    assert len([line for line in screen.lines if "asks to verify" in line]) == 2
    await chat.handle("/verify reject ann")  # answered: ann's next request is announced at once
    await watching(chat, fake, FakeSas("ann", txn="d"))
    assert len([line for line in screen.lines if "asks to verify" in line]) == 3


async def test_verify_accept_of_nobody_pending() -> None:
    chat, screen, _ = chat_with()
    await chat.handle("/verify accept ann")
    assert "no verification request from ann" in screen.last("error")


# -- 7. the y/n question of /verify ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "confirmed"),
    [(("yes",), True), (("maybe", "Y"), True), (("yess", "sure", "ok"), False), (("n",), False), ((), False)],
)
async def test_only_yes_or_no_answers_the_codes_question(answers: tuple[str, ...], confirmed: bool) -> None:
    chat, _screen, fake = chat_with(answers=answers)
    fake.outgoing = FakeSas("ann")
    await chat.handle("/verify ann")
    assert fake.outgoing.confirmed is confirmed
    assert bool(fake.outgoing.cancelled) is not confirmed


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
async def test_ctrl_c_cancels_the_verification_not_the_chat() -> None:
    chat, screen, fake = chat_with()
    screen.interactive = True
    fake.outgoing = FakeSas("ann")

    async def never(prompt: str, secret: bool) -> str | None:
        await asyncio.sleep(3600)
        return None

    chat._ask = never
    running = asyncio.create_task(chat.handle("/verify ann"))
    await fake.outgoing.codes_called.wait()
    await asyncio.sleep(0.05)
    signal.raise_signal(signal.SIGINT)
    assert await asyncio.wait_for(running, 5) is True
    assert fake.outgoing.cancelled and "cancelled" in screen.last("verification with ann")


async def test_the_other_sides_cancel_reason_is_shown_inert() -> None:
    chat, screen, fake = chat_with()
    fake.outgoing = FakeSas("ann", cancel_reason=EVIL)
    await chat.handle("/verify ann")
    assert "<U+202E>gnp.exe" in screen.last("verification with ann ended")
    assert all(inert(line) for line in screen.lines)


# -- 8. /trust -----------------------------------------------------------------------------------


async def test_trust_says_when_there_was_nothing_to_accept() -> None:
    chat, screen, fake = chat_with()
    fake.accept_result = False
    await chat.handle("/trust nosuchuser")
    assert "nothing accepted for nosuchuser" in screen.lines[-1]
    assert "keys accepted" not in screen.lines[-1]


async def test_trust_shows_the_changes_and_asks_at_a_terminal() -> None:
    from keyhold.sdk import IdentityChanged

    chat, screen, fake = chat_with(answers=("n", "y"))
    screen.interactive = True
    fake.accept_result = True
    chat.verify.identity_changed(IdentityChanged("ann", ["master key changed"]))
    await chat.handle("/trust ann")
    assert "master key changed" in screen.last("to accept") and fake.accepted == []
    assert "not accepted" in screen.lines[-1]
    await chat.handle("/trust ann")
    assert fake.accepted == ["ann"] and "not verified" in screen.lines[-1]
    assert fake.accepted_changes == [["master key changed"]]  # only what the warning showed


# -- 9. a file whose name is encrypted -----------------------------------------------------------


async def test_a_file_without_a_name_is_an_encrypted_file() -> None:
    chat, screen, _ = chat_with()
    chat.view = View(conversation(["me", "ann"], encryption="e2ee"))
    chat.show_messages([message("", Attachment("att1", None, "application/octet-stream", 28))])
    assert "[file (encrypted file), 28 B" in screen.lines[-1] and "None" not in screen.lines[-1]


async def test_the_terminal_reader_drops_the_line_of_a_cancelled_question(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After Ctrl-C at "do they match?", what is typed at that prompt answers nothing; the
    prompt shows a title someone else chose as text."""
    import builtins
    import queue as threads_queue

    from keyhold.clients.chat.io import TerminalLines

    typed: threads_queue.Queue[str | None] = threads_queue.Queue()
    prompts: list[str] = []

    def fake_input(prompt: str = "") -> str:
        prompts.append(prompt)
        line = typed.get()
        if line is None:
            raise EOFError
        return line

    monkeypatch.setattr(builtins, "input", fake_input)
    lines = TerminalLines(asyncio.get_running_loop(), Screen(interactive=True))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(lines.read("do they match? [y/n] ", discard_typeahead=True), 0.2)
    typed.put("y")  # typed at the question's prompt, after it was cancelled
    typed.put("hello")
    assert await asyncio.wait_for(lines.read("title\x1b[2J> "), 5) == "hello"
    assert prompts == ["do they match? [y/n] ", "title\\x1b[2J> "]
    typed.put(None)
    assert await asyncio.wait_for(lines.read("> "), 5) is None
