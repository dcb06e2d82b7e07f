"""A chat session: the commands a member types, and the live events they see.

Messages of the open conversation carry short numbers (`#1`, `#2`, … in the order they were
shown), which every command that names a message takes; the long ids stay out of sight. Opening
or answering a conversation marks it read. `/open USER` finds your 1:1 with USER; if there is
none, the conversation is started only by the first message you send, so nobody is shown an
empty conversation they did not ask for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from keyhold.clients.chat.e2ee_commands import E2eeCommands, timer_text, unreadable
from keyhold.clients.chat.events import on_event
from keyhold.clients.chat.groups import GroupCommands
from keyhold.clients.chat.io import Part, Screen
from keyhold.clients.chat.messages import MessageCommands
from keyhold.clients.chat.text import (
    COMMANDS_HELP,
    DEFAULT_PAGE,
    detail,
    number,
    parse_new,
    size,
    when,
)
from keyhold.clients.chat.verification import VerifyCommands
from keyhold.sdk import (
    Client,
    Conversation,
    Event,
    IdentityChanged,
    KeyholdConnectionError,
    KeyholdError,
    Message,
)


@dataclass
class View:
    """The open conversation as shown: its messages' short numbers, and where its pages end.
    `draft` is the other member of a 1:1 not started yet (`conversation` is None until then)."""

    conversation: Conversation | None
    draft: str | None = None
    draft_encryption: str = "standard"  # the model the draft 1:1 starts with
    numbers: dict[int, int] = field(default_factory=dict)  # message id -> short number
    messages: dict[int, Message] = field(default_factory=dict)  # short number -> message
    oldest: int | None = None
    newest: int | None = None

    def number(self, msg: Message) -> int:
        if msg.id not in self.numbers:
            self.numbers[msg.id] = len(self.numbers) + 1
        n = self.numbers[msg.id]
        self.messages[n] = msg
        self.newest = max(self.newest or 0, msg.id)
        return n


# Asks the user for one line (`secret`: not echoed); None if there is no answer to be had.
Ask = Callable[[str, bool], Awaitable[str | None]]


async def _no_answer(_prompt: str, _secret: bool) -> None:
    return None


class Chat:
    def __init__(
        self, client: Client, screen: Screen, page: int = DEFAULT_PAGE, ask: Ask = _no_answer
    ) -> None:
        self.client = client
        self.screen = screen
        self.page = page
        self._ask = ask
        self.listed: list[Conversation] = []
        self.known: dict[int, Conversation] = {}
        self.view: View | None = None
        self.commands: dict[str, Callable[[str], Awaitable[bool]]] = {
            "list": self.cmd_list,
            "open": self.cmd_open,
            "new": self.cmd_new,
            "history": self.cmd_history,
            "read": self.cmd_read,
            "whoami": self.cmd_whoami,
            "help": self.cmd_help,
            "quit": self.cmd_quit,
            "exit": self.cmd_quit,
        }
        self.commands.update(MessageCommands(self).commands)
        self.commands.update(GroupCommands(self).commands)
        self.e2ee = E2eeCommands(self)
        self.commands.update(self.e2ee.commands)
        self.verify = VerifyCommands(self)
        self.commands.update(self.verify.commands)

    @property
    def me(self) -> str:
        return self.client.username

    @property
    def open(self) -> Conversation | None:
        return self.view.conversation if self.view else None

    async def ask(self, prompt: str, secret: bool = False) -> str | None:
        """One line from the user, in the middle of a command (a confirmation, a password)."""
        answer = await self._ask(prompt, secret)
        return None if answer is None else answer.strip()

    def remember(self, conv: Conversation) -> None:
        """A newer view of a conversation (after a change): known, and shown if open."""
        self.known[conv.id] = conv
        if (
            self.view is not None
            and self.view.conversation is not None
            and self.view.conversation.id == conv.id
        ):
            self.view.conversation = conv

    # -- rendering ---------------------------------------------------------------------------

    def label(self, conv: Conversation) -> str:
        others = [m for m in conv.members if m != self.me]
        return conv.title or ", ".join(others) or "(only you)"

    def prompt(self) -> str:
        if self.view is None:
            return "> "
        conv = self.view.conversation
        e2ee = (conv.encryption if conv else self.view.draft_encryption) == "e2ee"
        return f"{self.label(conv) if conv else self.view.draft}{' [e2ee]' if e2ee else ''}> "

    def render(self, msg: Message) -> list[Part]:
        n = (
            self.view.number(msg)
            if self.view and msg.conversation_id == (self.open.id if self.open else None)
            else None
        )
        parts: list[Part] = [
            (f"#{n} " if n is not None else "", "dim"),
            (f"{when(msg.sent_at)} ", "dim"),
            (msg.sender, "bold green" if msg.sender == self.me else "bold cyan"),
            ": ",
        ]
        if msg.deleted:
            parts.append(("(message deleted)", "dim italic"))
            return parts
        if msg.undecryptable is not None:  # never its text: there is none this device can trust
            parts.append((unreadable(msg), "bold red"))
            return parts
        if msg.text:
            parts.append(msg.text.replace("\n", "\n    "))
        if msg.attachment is not None:
            att = msg.attachment
            name = att.filename or "(encrypted file)"  # e2ee: the name is inside the message
            parts.append((f" [file {name}, {size(att.size)}; /save {n} FILE]", "magenta"))
        return parts

    def show_messages(self, messages: list[Message]) -> None:
        for msg in messages:
            self.screen.show(*self.render(msg))

    def error(self, text: str) -> None:
        self.screen.show(("error: ", "bold red"), text)

    def info(self, text: str) -> None:
        self.screen.show((text, "dim"))

    def notice(self, *parts: Part) -> None:
        self.screen.live(("● ", "bold yellow"), *parts)

    # -- the command loop --------------------------------------------------------------------

    async def handle(self, line: str) -> bool:
        """Run one input line; False once the user quits."""
        text = line.strip()
        if not text:
            return True
        if text.startswith("//") or not text.startswith("/"):
            return await self.send(text[1:] if text.startswith("//") else text)
        name, _, rest = text[1:].partition(" ")
        command = self.commands.get(name.lower())
        if command is None:
            self.error(f"unknown command /{name}; /help lists the commands")
            return True
        try:
            return await command(rest.strip())
        except IdentityChanged as exc:  # a send (/attach) to someone whose keys changed
            self.verify.identity_changed(exc)
        except KeyholdError as exc:
            self.error(detail(exc))
        except TimeoutError:
            self.error(f"/{name} timed out: the server did not answer in time; try again")
        except Exception as exc:  # a bug, or something unforeseen: the chat goes on
            self.unexpected(f"/{name}", exc)
        return True

    def unexpected(self, what: str, exc: Exception) -> None:
        """Only the kind of failure: its text could hold what the user typed (a password)."""
        self.error(f"{what} failed unexpectedly ({type(exc).__name__}); the chat goes on")

    async def ensure_started(self) -> Conversation | None:
        """The open conversation, started now if it is a draft 1:1; None (and an error) if none is open."""
        if self.view is None:
            self.error("no conversation is open: /list, then /open N (or /open USER)")
            return None
        if self.view.conversation is None and self.view.draft is not None:
            conv = await self.client.start_conversation(
                [self.view.draft], encryption=self.view.draft_encryption
            )
            self.view.conversation = conv
            self.known[conv.id] = conv
        return self.view.conversation

    async def send(self, text: str) -> bool:
        try:
            conv = await self.ensure_started()
            if conv is None:
                return True
            msg = await self.client.send(conv.id, text)
        except KeyholdConnectionError as exc:
            self.error(f"not sent: {detail(exc)}")
            return True
        except IdentityChanged as exc:
            self.verify.identity_changed(exc)
            return True
        except KeyholdError as exc:
            self.error(detail(exc))
            return True
        except TimeoutError:
            self.error("not sent: the server did not answer in time")
            return True
        except Exception as exc:
            self.unexpected("sending", exc)
            return True
        if self.view and msg.id not in self.view.numbers:  # the live stream may have shown it already
            self.show_messages([msg])
        await self._mark_read(quiet=True)  # answering a conversation reads it
        return True

    async def _mark_read(self, quiet: bool = False) -> None:
        if self.open is None:
            return
        latest = await self.client.history(self.open.id, limit=1)
        if not latest:
            if not quiet:
                self.info("(nothing to mark: no messages yet)")
            return
        changed = await self.client.mark(self.open.id, latest[-1].id, "read")
        if not quiet:
            number = self.view.numbers.get(latest[-1].id) if self.view else None
            self.info(
                ("marked read" + (f" up to #{number}" if number else "")) if changed else "already read"
            )

    def numbered(self, token: str) -> Message | None:
        """The message `#N` of the open conversation (N as typed, with or without `#`)."""
        raw = token.removeprefix("#")
        n = number(raw)
        if self.view is None or n is None or n not in self.view.messages:
            self.error(f"no message #{raw} shown here (numbers are those shown before messages)")
            return None
        return self.view.messages[n]

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
            (f" on device {self.client.device_id}" if self.client.device_id else "", "dim"),
        )
        return True

    # -- conversations -----------------------------------------------------------------------

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
            if conv.disappear_after_seconds is not None:
                head.append((f"  disappearing after {timer_text(conv.disappear_after_seconds)}", "yellow"))
            self.screen.show(*head)
            last = conv.last_message
            if last is None:
                self.screen.show(("    (no messages yet)", "dim"))
            elif last.get("deleted"):
                self.screen.show(f"    {last.get('sender')}: ", ("(message deleted)", "dim italic"))
            else:
                blank = (
                    "(end-to-end encrypted: open it to read)" if conv.encryption == "e2ee" else "(attachment)"
                )
                preview = (last.get("preview") or blank).replace("\n", " ")
                self.screen.show(f"    {last.get('sender')}: {preview}")
            self.screen.show(("    readable by: ", "dim"), (conv.readable_by, "dim"))
        return True

    async def _direct_with(self, username: str, encryption: str | None = None) -> Conversation | None:
        """The 1:1 with `username` (of that model, if given; else the most recently active)."""
        before: int | None = None
        while True:
            page = await self.client.conversations(limit=200, before=before)
            for conv in page:
                if (
                    conv.kind == "direct"
                    and username in conv.members
                    and encryption in (None, conv.encryption)
                ):
                    return conv
            if len(page) < 200 or page[-1].last_message is None:
                return None
            before = int(page[-1].last_message["id"])

    async def cmd_open(self, args: str) -> bool:
        words = args.split()
        encryption = "e2ee" if "--e2ee" in words else "standard" if "--standard" in words else None
        args = " ".join(w for w in words if w not in ("--e2ee", "--standard"))
        if not args:
            self.error("usage: /open N (a number from /list) or /open USER [--e2ee]")
            return True
        n = number(args)
        if n is not None:
            if not self.listed:
                self.listed = await self.client.conversations(limit=50)
            if not 1 <= n <= len(self.listed):
                self.error(
                    f"no conversation {n} in /list (there are {len(self.listed)}); /open @{n} for a user"
                )
                return True
            await self.show_open(self.listed[n - 1])
            return True
        username = args.removeprefix("@")
        found = await self._direct_with(username, encryption)
        if found is not None:
            await self.show_open(found)
            return True
        await self.client.user(username)  # a 404 here: no such member
        self.view = View(None, draft=username, draft_encryption=encryption or "standard")
        rule = f"── {username} "
        self.screen.show((rule + "─" * max(4, 60 - len(rule)), "bold"))
        model = " end-to-end encrypted (e2ee)" if encryption == "e2ee" else ""
        self.info(f"(no{model} conversation with {username} yet: your first message starts it)")
        return True

    async def cmd_new(self, args: str) -> bool:
        try:
            users, encryption, title = parse_new(args)
        except ValueError as exc:
            self.error(str(exc))
            return True
        conv = await self.client.start_conversation(users, encryption=encryption, title=title, kind="group")
        self.info(f"started group {self.label(conv)} with {', '.join(conv.members)}")
        await self.show_open(conv)
        return True

    async def show_open(self, conv: Conversation) -> None:
        self.view = View(conv)
        self.known[conv.id] = conv
        rule = f"── {self.label(conv)} "
        self.screen.show((rule + "─" * max(4, 60 - len(rule)), "bold"))
        roles = (
            f"   owner {conv.owner}" + (f", admins {', '.join(conv.admins)}" if conv.admins else "")
            if conv.owner
            else ""
        )
        self.screen.show(
            ("members: ", "dim"), self.verify.members(conv), (f"   [{conv.encryption}]{roles}", "dim")
        )
        self.screen.show(("readable by: ", "dim"), conv.readable_by)
        for line in self.e2ee.conversation_lines(conv):
            self.screen.show(*line)
        messages = await self.client.history(conv.id, limit=self.page)
        if not messages:
            self.info("(no messages yet: type a line to send one)")
            return
        if len(messages) == self.page:
            self.info("(/history for older messages)")
        self.view.oldest = messages[0].id
        self.show_messages(messages)
        if conv.unread:
            await self._mark_read(quiet=True)  # shown is read
            self.info(f"({conv.unread} unread, now read)")

    async def cmd_history(self, args: str) -> bool:
        if self.open is None or self.view is None:
            self.error("no conversation is open")
            return True
        count = number(args) if args else self.page
        if count is None:
            self.error("usage: /history [N]")
            return True
        limit = max(1, min(count, 200))
        if self.view.oldest is None:
            self.info("(no older messages)")
            return True
        messages = await self.client.history(self.open.id, limit=limit, before=self.view.oldest)
        if not messages:
            self.info("(no older messages)")
            return True
        self.info(f"── {len(messages)} older message(s) ──")
        self.view.oldest = messages[0].id
        self.show_messages(messages)
        return True

    async def cmd_read(self, _args: str) -> bool:
        if self.open is None:
            self.error("no conversation is open")
            return True
        await self._mark_read()
        return True

    # -- live events (what they print: events.py) ---------------------------------------------

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
        await on_event(self, event)

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
                self.screen.live(("live updates stopped: ", "bold red"), detail(exc))
                return
            except Exception as exc:  # e.g. the server refused the upgrade while restarting
                self.screen.live((f"live updates interrupted ({exc}); reconnecting", "dim"))
                await asyncio.sleep(2.0)
