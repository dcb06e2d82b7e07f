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
from pathlib import Path

from keyhold.clients.chat.events import on_event
from keyhold.clients.chat.io import Part, Screen
from keyhold.clients.chat.text import (
    COMMANDS_HELP,
    DEFAULT_PAGE,
    REPORT_CATEGORIES,
    detail,
    save_new,
    size,
    when,
)
from keyhold.sdk import Client, Conversation, Event, KeyholdConnectionError, KeyholdError, Message


@dataclass
class View:
    """The open conversation as shown: its messages' short numbers, and where its pages end.
    `draft` is the other member of a 1:1 not started yet (`conversation` is None until then)."""

    conversation: Conversation | None
    draft: str | None = None
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


class Chat:
    def __init__(self, client: Client, screen: Screen, page: int = DEFAULT_PAGE) -> None:
        self.client = client
        self.screen = screen
        self.page = page
        self.listed: list[Conversation] = []
        self.known: dict[int, Conversation] = {}
        self.view: View | None = None
        self.commands: dict[str, Callable[[str], Awaitable[bool]]] = {
            "list": self.cmd_list,
            "open": self.cmd_open,
            "new": self.cmd_new,
            "history": self.cmd_history,
            "read": self.cmd_read,
            "delete": self.cmd_delete,
            "attach": self.cmd_attach,
            "save": self.cmd_save,
            "report": self.cmd_report,
            "appeal": self.cmd_appeal,
            "add": self.cmd_add,
            "remove": self.cmd_remove,
            "rename": self.cmd_rename,
            "promote": self.cmd_promote,
            "leave": self.cmd_leave,
            "whoami": self.cmd_whoami,
            "help": self.cmd_help,
            "quit": self.cmd_quit,
            "exit": self.cmd_quit,
        }

    @property
    def me(self) -> str:
        return self.client.username

    @property
    def open(self) -> Conversation | None:
        return self.view.conversation if self.view else None

    # -- rendering ---------------------------------------------------------------------------

    def label(self, conv: Conversation) -> str:
        others = [m for m in conv.members if m != self.me]
        return conv.title or ", ".join(others) or "(only you)"

    def prompt(self) -> str:
        if self.view is None:
            return "> "
        return f"{self.label(self.view.conversation) if self.view.conversation else self.view.draft}> "

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
        if msg.text:
            parts.append(msg.text.replace("\n", "\n    "))
        if msg.attachment is not None:
            att = msg.attachment
            parts.append((f" [file {att.filename}, {size(att.size)}; /save {n} FILE]", "magenta"))
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
        if text.startswith("//"):
            return await self.send(text[1:])
        if not text.startswith("/"):
            return await self.send(text)
        name, _, rest = text[1:].partition(" ")
        command = self.commands.get(name.lower())
        if command is None:
            self.error(f"unknown command /{name}; /help lists the commands")
            return True
        try:
            return await command(rest.strip())
        except KeyholdError as exc:
            self.error(detail(exc))
        return True

    async def _ensure_started(self) -> Conversation | None:
        """The open conversation, started now if it is a draft 1:1; None (and an error) if none is open."""
        if self.view is None:
            self.error("no conversation is open: /list, then /open N (or /open USER)")
            return None
        if self.view.conversation is None and self.view.draft is not None:
            conv = await self.client.start_conversation([self.view.draft])
            self.view.conversation = conv
            self.known[conv.id] = conv
        return self.view.conversation

    async def send(self, text: str) -> bool:
        try:
            conv = await self._ensure_started()
            if conv is None:
                return True
            msg = await self.client.send(conv.id, text)
        except KeyholdConnectionError as exc:
            self.error(f"not sent: {detail(exc)}")
            return True
        except KeyholdError as exc:
            self.error(detail(exc))
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

    def _message(self, token: str) -> Message | None:
        """The message `#N` of the open conversation (N as typed, with or without `#`)."""
        raw = token.removeprefix("#")
        if self.view is None or not raw.isdigit() or int(raw) not in self.view.messages:
            self.error(f"no message #{raw} shown here (numbers are those shown before messages)")
            return None
        return self.view.messages[int(raw)]

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

    async def _direct_with(self, username: str) -> Conversation | None:
        before: int | None = None
        while True:
            page = await self.client.conversations(limit=200, before=before)
            for conv in page:
                if conv.kind == "direct" and username in conv.members:
                    return conv
            if len(page) < 200 or page[-1].last_message is None:
                return None
            before = int(page[-1].last_message["id"])

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
            await self.show_open(self.listed[n - 1])
            return True
        username = args.removeprefix("@")
        found = await self._direct_with(username)
        if found is not None:
            await self.show_open(found)
            return True
        await self.client.user(username)  # a 404 here: no such member
        self.view = View(None, draft=username)
        rule = f"── {username} "
        self.screen.show((rule + "─" * max(4, 60 - len(rule)), "bold"))
        self.info(f"(no conversation with {username} yet: your first message starts it)")
        return True

    async def cmd_new(self, args: str) -> bool:
        # Everything after --title is the title: `/new ann ben --title Trip planning` needs no quotes.
        users_part, _, title = args.partition("--title")
        users = [w.removeprefix("@") for w in users_part.split()]
        title = title.strip().removeprefix("=").strip().strip('"').strip("'")
        if not users:
            self.error("usage: /new USER1 USER2 ... [--title TITLE]")
            return True
        conv = await self.client.start_conversation(users, title=title, kind="group")
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
            ("members: ", "dim"), ", ".join(conv.members), (f"   [{conv.encryption}]{roles}", "dim")
        )
        self.screen.show(("readable by: ", "dim"), conv.readable_by)
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
        if args and not args.isdigit():
            self.error("usage: /history [N]")
            return True
        limit = max(1, min(int(args) if args else self.page, 200))
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

    # -- messages and files ------------------------------------------------------------------

    async def cmd_delete(self, args: str) -> bool:
        if not args:
            return await self.delete_my_last()
        msg = self._message(args)
        if msg is not None:
            await self.client.delete_message(msg.id)
            self.info(f"deleted #{args.removeprefix('#')} for everyone")
        return True

    async def delete_my_last(self) -> bool:
        if self.open is None or self.view is None:
            self.error("no conversation is open: open one, then /delete N or /delete for your last message")
            return True
        recent = await self.client.history(self.open.id, limit=50)
        mine = [m for m in recent if m.sender == self.me and not m.deleted]
        if not mine:
            self.info("(none of the last 50 messages here is yours to delete)")
            return True
        await self.client.delete_message(mine[-1].id)
        number = self.view.numbers.get(mine[-1].id)
        self.info(f"deleted {'#' + str(number) if number else 'your last message'} for everyone")
        return True

    async def cmd_attach(self, args: str) -> bool:
        path_text, _, caption = args.partition(" ")
        if not path_text:
            self.error("usage: /attach FILE [TEXT]")
            return True
        path = Path(path_text)
        try:
            data = await asyncio.to_thread(lambda: path.expanduser().read_bytes())
        except OSError as exc:
            self.error(f"cannot read {path}: {exc.strerror or exc}")
            return True
        conv = await self._ensure_started()
        if conv is None:
            return True
        msg = await self.client.send_file(conv.id, data, path.name, text=caption.strip())
        if self.view and msg.id not in self.view.numbers:
            self.show_messages([msg])
        return True

    async def cmd_save(self, args: str) -> bool:
        number, _, target = args.partition(" ")
        if not number or not target.strip():
            self.error("usage: /save N FILE (N: the #number shown before the message)")
            return True
        msg = self._message(number)
        if msg is None:
            return True
        if msg.attachment is None:
            self.error(f"message #{number.removeprefix('#')} has no file")
            return True
        data = await self.client.download(msg.attachment.id)
        try:
            name = msg.attachment.filename or f"{msg.attachment.id}.bin"  # e2ee: the name is not on the server
            path = await asyncio.to_thread(save_new, Path(target.strip()), name, data)
        except FileExistsError as exc:
            self.error(f"{exc.filename} exists: give another name")
            return True
        except OSError as exc:
            self.error(f"cannot save there: {exc.strerror or exc}")
            return True
        self.info(f"saved {msg.attachment.filename} ({size(len(data))}) to {path}")
        return True

    # -- safety ------------------------------------------------------------------------------

    async def cmd_report(self, args: str) -> bool:
        words = args.split()
        numbers = [w for w in words if w.removeprefix("#").isdigit()]
        rest = words[len(numbers) :]
        if not numbers or not rest or rest[0] not in REPORT_CATEGORIES:
            self.error(
                f"usage: /report N [N...] CATEGORY [COMMENT]; CATEGORY: {', '.join(REPORT_CATEGORIES)}"
            )
            return True
        messages = [self._message(n) for n in numbers]
        if self.open is None or any(m is None for m in messages):
            return True
        ids = [m.id for m in messages if m is not None]
        case = await self.client.report(self.open.id, ids, rest[0], " ".join(rest[1:]))
        self.info(f"reported to the moderators (case {case['id']}); you will be told the outcome")
        return True

    async def cmd_appeal(self, args: str) -> bool:
        case, _, statement = args.partition(" ")
        if not case.isdigit() or not statement.strip():
            self.error("usage: /appeal CASE TEXT (CASE: the number in the moderation notice)")
            return True
        await self.client.appeal(int(case), statement.strip())
        self.info(f"appeal of case {case} sent; another moderator will decide it")
        return True

    # -- groups ------------------------------------------------------------------------------

    def _open_group(self) -> Conversation | None:
        if self.open is None or self.open.kind != "group":
            self.error("open a group first (/list, /open N)")
            return None
        return self.open

    async def _changed(self, conv: Conversation, text: str) -> bool:
        self.known[conv.id] = conv
        if self.view is not None:
            self.view.conversation = conv
        self.info(text)
        return True

    async def cmd_add(self, args: str) -> bool:
        group = self._open_group()
        users = [w.removeprefix("@") for w in args.split()]
        if group is None:
            return True
        if not users:
            self.error("usage: /add USER [USER...]")
            return True
        return await self._changed(
            await self.client.add_members(group.id, users), f"added {', '.join(users)}"
        )

    async def cmd_remove(self, args: str) -> bool:
        group = self._open_group()
        if group is None:
            return True
        if not args:
            self.error("usage: /remove USER")
            return True
        return await self._changed(
            await self.client.remove_member(group.id, args.removeprefix("@")), f"removed {args}"
        )

    async def cmd_rename(self, args: str) -> bool:
        group = self._open_group()
        if group is None:
            return True
        if not args:
            self.error("usage: /rename TITLE")
            return True
        return await self._changed(await self.client.rename(group.id, args), f"renamed to {args}")

    async def cmd_promote(self, args: str) -> bool:
        group = self._open_group()
        if group is None:
            return True
        if not args:
            self.error("usage: /promote USER")
            return True
        changed = await self.client.set_role(group.id, args.removeprefix("@"), "admin")
        return await self._changed(changed, f"{args} is now an admin")

    async def cmd_leave(self, _args: str) -> bool:
        group = self._open_group()
        if group is None:
            return True
        await self.client.leave(group.id)
        self.view = None
        self.info(f"you left {self.label(group)}")
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
