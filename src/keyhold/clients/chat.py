"""`keyhold chat`: a line-oriented terminal client, built on the SDK (the public API only).

It reads one line at a time, so it works in a plain terminal, in tmux, and driven by a pipe.
Input is read on a thread; the event loop meanwhile prints new messages as they arrive. In a
terminal, a live message erases the half-typed line, prints itself, then redraws the prompt and
what was typed (GNU readline keeps the buffer), so typing is not lost.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import datetime as dt
import getpass
import os
import queue
import shlex
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, Protocol

import typer
from rich.text import Text

from keyhold.clients.terminal import console, fail
from keyhold.sdk import Client, Conversation, Event, KeyholdConnectionError, KeyholdError, Message

try:  # GNU readline: line editing and history at the prompt, when available
    import readline as _readline
except ImportError:  # pragma: no cover - readline is part of CPython on Debian
    _readline = None  # type: ignore[assignment]

Part = str | tuple[str, str]
DEFAULT_PAGE = 20
STREAM_OPEN_TIMEOUT = 30.0

COMMANDS_HELP = """\
/list              conversations: number, title or members, unread count,
                   last message, and who can read it (readable by)
/open N            open conversation N of /list, show its recent messages
/open USER         open (or start) your 1:1 with USER; @USER works too
/new U1 U2 [--title T]
                   start a group with these members and open it
/history [N]       N older messages of the open conversation (default 20)
/read              mark the open conversation read up to its newest message
/delete [ID]       delete your message #ID for everyone (a tombstone stays);
                   without ID: your last message in the open conversation
/whoami            who you are signed in as, and where
/help              this list
/quit              leave (Ctrl-D works too)
other text         is sent to the open conversation (// sends a leading /)
New messages arrive live: printed as they come in the open conversation,
and as a one-line notice for the others."""


def _detail(exc: KeyholdError) -> str:
    detail = exc.problem.get("detail") or exc.problem.get("title")
    return str(detail) if detail else str(exc)


def _fatal(message: str) -> NoReturn:
    fail(message)
    raise AssertionError("unreachable")  # fail() exits


def _when(sent_at: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(sent_at.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return sent_at
    today = dt.datetime.now().astimezone().date()
    return moment.strftime("%H:%M") if moment.date() == today else moment.strftime("%b %d %H:%M")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / (1024 * 1024):.1f} MiB"


# -- output ------------------------------------------------------------------------------------


class Screen:
    """Prints whole lines; `live` lines keep an interactive user's half-typed input intact."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self.prompt: str | None = None  # set while the reader thread waits in input()
        self._lock = threading.Lock()

    def show(self, *parts: Part) -> None:
        with self._lock:
            console.print(Text.assemble(*parts), soft_wrap=True, highlight=False)

    def live(self, *parts: Part) -> None:
        prompt = self.prompt
        if not self.interactive or prompt is None:
            self.show(*parts)
            return
        typed = _readline.get_line_buffer() if _readline is not None else ""
        with self._lock:
            sys.stdout.write("\r\x1b[2K")
            sys.stdout.flush()
            console.print(Text.assemble(*parts), soft_wrap=True, highlight=False)
            sys.stdout.write(prompt + typed)
            sys.stdout.flush()


# -- input -------------------------------------------------------------------------------------


class Lines(Protocol):
    async def read(self, prompt: str) -> str | None:
        """The next line without its newline, or None at the end of input."""


def _post(loop: asyncio.AbstractEventLoop, q: asyncio.Queue[str | None], item: str | None) -> bool:
    try:
        loop.call_soon_threadsafe(q.put_nowait, item)
    except RuntimeError:  # the loop is closed: the chat has ended
        return False
    return True


class PipedLines:
    """Lines from a pipe or file, read ahead on a daemon thread. `os.read` holds no Python-level
    lock, so a thread still blocked in it never stalls the interpreter's exit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int = 0) -> None:
        self._loop = loop
        self._fd = fd
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._ended = False
        threading.Thread(target=self._run, name="chat-stdin", daemon=True).start()

    def _run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:
                chunk = b""
            pending += decoder.decode(chunk, final=not chunk)
            *complete, pending = pending.split("\n")
            for line in complete:
                if not _post(self._loop, self._queue, line.removesuffix("\r")):
                    return
            if not chunk:
                if pending:
                    _post(self._loop, self._queue, pending)
                _post(self._loop, self._queue, None)
                return

    async def read(self, prompt: str) -> str | None:
        if self._ended:
            return None
        line = await self._queue.get()
        self._ended = line is None
        return line


class TerminalLines:
    """`input()` with readline editing, on a daemon thread, one prompt at a time: the loop asks
    for the next line only when it has finished with the previous one, so the prompt is current."""

    def __init__(self, loop: asyncio.AbstractEventLoop, screen: Screen) -> None:
        self._loop = loop
        self._screen = screen
        self._prompts: queue.Queue[str] = queue.Queue()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._ended = False
        threading.Thread(target=self._run, name="chat-input", daemon=True).start()

    def _run(self) -> None:
        while True:
            prompt = self._prompts.get()
            if _readline is not None:
                # Set once readline has drawn the prompt, so a live line redraws it only then.
                def drawn(shown: str = prompt) -> None:
                    self._screen.prompt = shown

                _readline.set_pre_input_hook(drawn)
            else:
                self._screen.prompt = prompt
            line: str | None
            try:
                line = input(prompt)
            except (EOFError, OSError):
                line = None
            finally:
                self._screen.prompt = None
            if not _post(self._loop, self._queue, line) or line is None:
                return

    async def read(self, prompt: str) -> str | None:
        if self._ended:
            return None
        self._prompts.put(prompt)
        line = await self._queue.get()
        if line is None:
            self._ended = True
            self._screen.show("")
        return line


# -- the session -------------------------------------------------------------------------------


class Chat:
    def __init__(self, client: Client, screen: Screen, page: int = DEFAULT_PAGE) -> None:
        self.client = client
        self.screen = screen
        self.page = page
        self.listed: list[Conversation] = []
        self.known: dict[int, Conversation] = {}
        self.open: Conversation | None = None
        self.oldest: int | None = None
        self.newest: int | None = None
        self.shown: set[int] = set()  # message ids printed in the open conversation
        self.commands: dict[str, Callable[[str], Awaitable[bool]]] = {
            "list": self.cmd_list,
            "open": self.cmd_open,
            "new": self.cmd_new,
            "history": self.cmd_history,
            "read": self.cmd_read,
            "delete": self.cmd_delete,
            "whoami": self.cmd_whoami,
            "help": self.cmd_help,
            "quit": self.cmd_quit,
            "exit": self.cmd_quit,
        }

    @property
    def me(self) -> str:
        return self.client.username

    # -- rendering ---------------------------------------------------------------------------

    def label(self, conv: Conversation) -> str:
        others = [m for m in conv.members if m != self.me]
        return conv.title or ", ".join(others) or "(only you)"

    def prompt(self) -> str:
        return f"{self.label(self.open)}> " if self.open else "> "

    def render(self, msg: Message) -> list[Part]:
        parts: list[Part] = [
            (f"#{msg.id} ", "dim"),
            (f"{_when(msg.sent_at)} ", "dim"),
            (msg.sender, "bold green" if msg.sender == self.me else "bold cyan"),
            ": ",
        ]
        if msg.deleted:
            parts.append(("(message deleted)", "dim italic"))
            return parts
        if msg.text:
            parts.append(msg.text.replace("\n", "\n    "))
        if msg.attachment is not None:
            att = msg.attachment
            parts.append((f" [file {att.filename}, {_size(att.size)}]", "magenta"))
        return parts

    def show_messages(self, messages: list[Message]) -> None:
        for msg in messages:
            self.shown.add(msg.id)
            self.screen.show(*self.render(msg))

    def error(self, text: str) -> None:
        self.screen.show(("error: ", "bold red"), text)

    def info(self, text: str) -> None:
        self.screen.show((text, "dim"))

    # -- the command loop --------------------------------------------------------------------

    async def handle(self, line: str) -> bool:
        """Run one input line; False once the user quits."""
        text = line.strip()
        if not text:
            return True
        if text.startswith("//"):
            return await self.send(line.strip()[1:])
        if not text.startswith("/"):
            return await self.send(line.strip())
        name, _, rest = text[1:].partition(" ")
        command = self.commands.get(name.lower())
        if command is None:
            self.error(f"unknown command /{name}; /help lists the commands")
            return True
        try:
            return await command(rest.strip())
        except KeyholdError as exc:
            self.error(_detail(exc))
        return True

    async def send(self, text: str) -> bool:
        if self.open is None:
            self.error("no conversation is open: /list, then /open N (or /open USER)")
            return True
        try:
            msg = await self.client.send(self.open.id, text)
        except KeyholdConnectionError as exc:
            self.error(f"not sent: {_detail(exc)}")
            return True
        except KeyholdError as exc:
            self.error(_detail(exc))
            return True
        self.newest = max(self.newest or 0, msg.id)
        if msg.id not in self.shown:  # the live stream may have printed it already
            self.show_messages([msg])
        return True

    async def cmd_help(self, _args: str) -> bool:
        self.screen.show(COMMANDS_HELP)
        return True

    async def cmd_quit(self, _args: str) -> bool:
        return False

    async def cmd_whoami(self, _args: str) -> bool:
        me = await self.client.me()
        self.screen.show(
            (str(me["username"]), "bold"),
            f" ({me.get('display_name') or me['username']}), region {me.get('region', '?')}, "
            f"signed in to {self.client.base_url}",
        )
        return True

    async def cmd_list(self, _args: str) -> bool:
        conversations = await self.client.conversations(limit=50)
        self.listed = conversations
        self.known.update({c.id: c for c in conversations})
        if not conversations:
            self.info("no conversations yet: /open USER starts a 1:1, /new U1 U2 --title T a group")
            return True
        for i, conv in enumerate(conversations, 1):
            head: list[Part] = [(f"{i:>2}. ", "bold"), (self.label(conv), "bold")]
            if conv.kind == "group":
                head.append((f"  (group: {', '.join(conv.members)})", "dim"))
            if conv.unread:
                head.append((f"  {conv.unread} unread", "bold yellow"))
            if conv.encryption != "standard":
                head.append((f"  [{conv.encryption}]", "magenta"))
            self.screen.show(*head)
            last = conv.last_message
            if last is None:
                self.screen.show(("    (no messages yet)", "dim"))
            elif last.get("deleted"):
                self.screen.show(f"    {last.get('sender')}: ", ("(message deleted)", "dim italic"))
            else:
                preview = (last.get("preview") or "(attachment)").replace("\n", " ")
                self.screen.show(f"    {last.get('sender')}: {preview}")
            self.screen.show(("    readable by: ", "dim"), (conv.readable_by, "dim"))
        return True

    async def cmd_open(self, args: str) -> bool:
        if not args:
            self.error("usage: /open N (a number from /list) or /open USER")
            return True
        if args.isdigit():
            if not self.listed:
                self.listed = await self.client.conversations(limit=50)
            n = int(args)
            if not 1 <= n <= len(self.listed):
                self.error(
                    f"no conversation {n} in /list (there are {len(self.listed)}); /open @{n} for a user"
                )
                return True
            conv = self.listed[n - 1]
        else:
            conv = await self.client.start_conversation([args.removeprefix("@")])
        await self.show_open(conv)
        return True

    async def cmd_new(self, args: str) -> bool:
        try:
            words = shlex.split(args)
        except ValueError as exc:
            self.error(f"cannot read that: {exc}")
            return True
        title = ""
        users: list[str] = []
        i = 0
        while i < len(words):
            word = words[i]
            if word == "--title" and i + 1 < len(words):
                title, i = words[i + 1], i + 2
                continue
            if word.startswith("--title="):
                title = word.removeprefix("--title=")
            else:
                users.append(word.removeprefix("@"))
            i += 1
        if not users:
            self.error("usage: /new USER1 USER2 ... [--title TITLE]")
            return True
        conv = await self.client.start_conversation(users, title=title, kind="group")
        self.info(f"started group {self.label(conv)} with {', '.join(conv.members)}")
        await self.show_open(conv)
        return True

    async def show_open(self, conv: Conversation) -> None:
        self.open, self.oldest, self.newest = conv, None, None
        self.known[conv.id] = conv
        self.shown.clear()
        rule = f"── {self.label(conv)} "
        self.screen.show((rule + "─" * max(4, 60 - len(rule)), "bold"))
        self.screen.show(("members: ", "dim"), ", ".join(conv.members), (f"   [{conv.encryption}]", "dim"))
        self.screen.show(("readable by: ", "dim"), conv.readable_by)
        messages = await self.client.history(conv.id, limit=self.page)
        if not messages:
            self.info("(no messages yet: type a line to send one)")
            return
        if len(messages) == self.page:
            self.info("(/history for older messages)")
        self.oldest, self.newest = messages[0].id, messages[-1].id
        self.show_messages(messages)
        if conv.unread:
            self.info(f"({conv.unread} unread; /read marks them read)")

    async def cmd_history(self, args: str) -> bool:
        if self.open is None:
            self.error("no conversation is open")
            return True
        if args and not args.isdigit():
            self.error("usage: /history [N]")
            return True
        limit = max(1, min(int(args) if args else self.page, 200))
        if self.oldest is None:
            self.info("(no older messages)")
            return True
        messages = await self.client.history(self.open.id, limit=limit, before=self.oldest)
        if not messages:
            self.info("(no older messages)")
            return True
        self.info(f"── {len(messages)} older message(s) ──")
        self.oldest = messages[0].id
        self.show_messages(messages)
        return True

    async def cmd_read(self, _args: str) -> bool:
        if self.open is None:
            self.error("no conversation is open")
            return True
        latest = await self.client.history(self.open.id, limit=1)
        if not latest:
            self.info("(nothing to mark: no messages yet)")
            return True
        changed = await self.client.mark(self.open.id, latest[-1].id, "read")
        self.info(f"marked read up to #{latest[-1].id}" if changed else "already read")
        return True

    async def cmd_delete(self, args: str) -> bool:
        raw = args.removeprefix("#")
        if not raw:
            return await self.delete_my_last()
        if not raw.isdigit():
            self.error("usage: /delete ID (the #ID shown before a message), or /delete for your last one")
            return True
        msg = await self.client.delete_message(int(raw))
        self.info(f"deleted #{msg.id} for everyone")
        return True

    async def delete_my_last(self) -> bool:
        if self.open is None:
            self.error("no conversation is open: /delete ID, or open one for /delete of your last message")
            return True
        recent = await self.client.history(self.open.id, limit=50)
        mine = [m for m in recent if m.sender == self.me and not m.deleted]
        if not mine:
            self.info("(none of the last 50 messages here is yours to delete)")
            return True
        msg = await self.client.delete_message(mine[-1].id)
        self.info(f"deleted #{msg.id} for everyone")
        return True

    # -- live events -------------------------------------------------------------------------

    async def conversation(self, conversation_id: int) -> Conversation | None:
        if conversation_id not in self.known:
            with contextlib.suppress(KeyholdError):
                self.known[conversation_id] = await self.client.conversation(conversation_id)
        return self.known.get(conversation_id)

    def open_hint(self, conv: Conversation | None, sender: str) -> str:
        if conv is not None and conv.kind == "direct":
            return f"/open {sender}"
        for i, listed in enumerate(self.listed, 1):
            if conv is not None and listed.id == conv.id:
                return f"/open {i}"
        return "/list"

    async def on_event(self, event: Event) -> None:
        conversation_id = event.data.get("conversation_id")
        is_open = self.open is not None and conversation_id == self.open.id
        if event.type == "message.new":
            msg = event.message
            if msg is None or msg.id in self.shown:
                return
            if self.open is not None and msg.conversation_id == self.open.id:
                self.shown.add(msg.id)
                self.newest = max(self.newest or 0, msg.id)
                self.screen.live(*self.render(msg))
            elif msg.sender != self.me:
                conv = await self.conversation(msg.conversation_id)
                where = f" in {self.label(conv)}" if conv is not None and conv.kind == "group" else ""
                text = "(message deleted)" if msg.deleted else (msg.text or "(attachment)")
                preview = text.replace("\n", " ")
                preview = preview if len(preview) <= 60 else preview[:59] + "…"
                self.screen.live(
                    ("● ", "bold yellow"),
                    (f"{msg.sender}{where}: ", "bold"),
                    preview,
                    (f"   ({self.open_hint(conv, msg.sender)})", "dim"),
                )
        elif event.type == "message.deleted" and is_open:
            self.screen.live((f"#{event.data.get('message_id')} was deleted", "dim italic"))
        elif event.type == "receipt" and is_open:
            user = event.data.get("user")
            if user != self.me and event.data.get("receipt") == "read":
                self.screen.live((f"✓ {user} read up to #{event.data.get('message_id')}", "dim"))
        elif event.type == "conversation.updated" and isinstance(conversation_id, int):
            self.known.pop(conversation_id, None)
            change = event.data.get("change")
            conv = await self.conversation(conversation_id)
            if conv is not None and is_open:
                self.open = conv
            label = self.label(conv) if conv is not None else f"conversation {conversation_id}"
            by = event.data.get("by")
            if change == "created" and by != self.me:
                hint = self.open_hint(conv, str(by))
                self.screen.live(
                    ("● ", "bold yellow"),
                    f"{by} started a conversation with you: {label}",
                    (f"   ({hint})", "dim"),
                )
            elif change == "members_added" and is_open:
                added = ", ".join(event.data.get("members", []))
                self.screen.live((f"{by} added {added}", "dim"))
            elif change == "member_left" and is_open:
                self.screen.live((f"{event.data.get('member')} left", "dim"))

    async def listen(self, since: int) -> None:
        """Consume `Client.events()` from `since` (it reconnects and resumes by itself)."""
        last = since
        while True:
            try:
                async for event in self.client.events(since=last):
                    last = event.seq
                    with contextlib.suppress(KeyholdError):
                        await self.on_event(event)
                return
            except KeyholdError as exc:
                self.screen.live(("live updates stopped: ", "bold red"), _detail(exc))
                return
            except Exception as exc:  # e.g. the server refused the upgrade while restarting
                self.screen.live((f"live updates interrupted ({exc}); reconnecting", "dim"))
                await asyncio.sleep(2.0)


async def _stream_position(client: Client) -> int:
    """The member's newest event seq, so that the live view starts now, not at the beginning.
    (The stream has no "from now" option: open it, wait for `ready`, keep its seq.)"""
    stream = await client.connect(since=0)
    try:
        await asyncio.wait_for(stream.ready.wait(), STREAM_OPEN_TIMEOUT)
        return stream.last_seq
    finally:
        await stream.close()


async def run_chat(
    url: str,
    username: str,
    password: str | None,
    verify: bool | str,
    interactive: bool,
    page: int = DEFAULT_PAGE,
) -> int:
    loop = asyncio.get_running_loop()
    screen = Screen(interactive)
    lines: Lines = TerminalLines(loop, screen) if interactive else PipedLines(loop)
    if password is None:  # --password-stdin from a pipe: the first line
        password = await lines.read("")
        if password is None:
            _fatal("no password on stdin (--password-stdin reads the first line)")
    if not password:
        _fatal("the password is empty")
    try:
        client = await Client.login(url, username, password, verify=verify)
    except KeyholdConnectionError as exc:
        _fatal(f"cannot reach {url}: {_detail(exc)}")
    except KeyholdError as exc:
        _fatal(f"cannot sign in as {username}: {_detail(exc)}")
    del password
    chat = Chat(client, screen, page)
    listener: asyncio.Task[None] | None = None
    try:
        try:
            since = await _stream_position(client)
        except Exception as exc:
            chat.error(f"live updates unavailable: {exc}")
        else:
            listener = asyncio.create_task(chat.listen(since))
        screen.show(
            "signed in as ",
            (client.username, "bold"),
            f" on {client.base_url}" + (" — live updates on" if listener else ""),
            (". /help lists the commands.", "dim"),
        )
        await chat.handle("/list")
        while True:
            line = await lines.read(chat.prompt())
            if line is None or not await chat.handle(line):
                break
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener
        await client.close()
    return 0


def _terminal_state() -> Any:
    with contextlib.suppress(Exception):
        import termios

        return termios.tcgetattr(sys.stdin.fileno())
    return None


def _restore_terminal(state: Any) -> None:
    if state is None:
        return
    with contextlib.suppress(Exception):
        import termios

        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, state)


def chat(
    url: Annotated[
        str,
        typer.Option(envvar="KEYHOLD_URL", help="The Keyhold server (https://… for TLS)."),
    ] = "http://127.0.0.1:8000",
    username: Annotated[
        str | None,
        typer.Option("--username", "-u", help="Sign in as this member (asked for if omitted)."),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from the first line of stdin (for scripts); "
            "the following lines are commands.",
        ),
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Do not verify the server's TLS certificate (self-signed, testing)."),
    ] = False,
    ca_file: Annotated[
        Path | None,
        typer.Option("--ca-file", help="Verify the server's TLS certificate against this CA/cert (PEM)."),
    ] = None,
    history: Annotated[
        int, typer.Option(min=1, max=200, help="Messages shown when a conversation opens.")
    ] = DEFAULT_PAGE,
) -> None:
    """Chat in the terminal: sign in, list conversations, open one, read its
    history, send, and see new messages live.

    Asks for the password with hidden input, or reads it from the first line of
    stdin with --password-stdin. Line-oriented, so it also works in tmux or
    driven by a pipe:

    printf 'PW\\n/open bob\\nhi\\n/quit\\n' | keyhold chat -u alice --password-stdin
    """
    interactive = sys.stdin.isatty()
    if username is None:
        if not interactive:
            _fatal("--username is required when stdin is not a terminal")
        username = input("username: ").strip()
    if not password_stdin and not interactive:
        _fatal("stdin is not a terminal: pass --password-stdin and write the password as the first line")
    password: str | None = None
    if interactive:
        try:
            password = getpass.getpass("password: ")
        except (EOFError, KeyboardInterrupt):
            raise typer.Exit(1) from None
    verify: bool | str = False if insecure else (str(ca_file) if ca_file else True)
    state = _terminal_state() if interactive else None
    try:
        code = asyncio.run(run_chat(url.rstrip("/"), username, password, verify, interactive, history))
    except KeyboardInterrupt:
        console.print()
        code = 0
    finally:
        _restore_terminal(state)
    raise typer.Exit(code)

