"""The chat's commands on messages: `/delete`, `/attach`, `/save`, `/report`, `/appeal`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from keyhold.clients.chat.text import REPORT_CATEGORIES, number, save_new, size

if TYPE_CHECKING:
    from keyhold.clients.chat.session import Chat


class MessageCommands:
    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.commands: dict[str, Callable[[str], Awaitable[bool]]] = {
            "delete": self.cmd_delete,
            "attach": self.cmd_attach,
            "save": self.cmd_save,
            "report": self.cmd_report,
            "appeal": self.cmd_appeal,
        }

    # -- messages and files ------------------------------------------------------------------

    async def cmd_delete(self, args: str) -> bool:
        if not args:
            return await self.delete_my_last()
        msg = self.chat.numbered(args)
        if msg is not None:
            await self.chat.client.delete_message(msg.id)
            self.chat.info(f"deleted #{args.removeprefix('#')} for everyone")
        return True

    async def delete_my_last(self) -> bool:
        if self.chat.open is None or self.chat.view is None:
            self.chat.error(
                "no conversation is open: open one, then /delete N or /delete for your last message"
            )
            return True
        recent = await self.chat.client.history(self.chat.open.id, limit=50)
        mine = [m for m in recent if m.sender == self.chat.me and not m.deleted]
        if not mine:
            self.chat.info("(none of the last 50 messages here is yours to delete)")
            return True
        await self.chat.client.delete_message(mine[-1].id)
        number = self.chat.view.numbers.get(mine[-1].id)
        self.chat.info(f"deleted {'#' + str(number) if number else 'your last message'} for everyone")
        return True

    async def cmd_attach(self, args: str) -> bool:
        path_text, _, caption = args.partition(" ")
        if not path_text:
            self.chat.error("usage: /attach FILE [TEXT]")
            return True
        path = Path(path_text)
        try:
            data = await asyncio.to_thread(lambda: path.expanduser().read_bytes())
        except OSError as exc:
            self.chat.error(f"cannot read {path}: {exc.strerror or exc}")
            return True
        conv = await self.chat.ensure_started()
        if conv is None:
            return True
        msg = await self.chat.client.send_file(conv.id, data, path.name, text=caption.strip())
        if self.chat.view and msg.id not in self.chat.view.numbers:
            self.chat.show_messages([msg])
        return True

    async def cmd_save(self, args: str) -> bool:
        number, _, target = args.partition(" ")
        if not number or not target.strip():
            self.chat.error("usage: /save N FILE (N: the #number shown before the message)")
            return True
        msg = self.chat.numbered(number)
        if msg is None:
            return True
        if msg.attachment is None:
            self.chat.error(f"message #{number.removeprefix('#')} has no file")
            return True
        data = await self.chat.client.download_file(msg)  # decrypted here if e2ee
        # The name of an e2ee file is in its message: None if this device could not read it.
        name = msg.attachment.filename or f"{msg.attachment.id}.bin"
        try:
            path = await asyncio.to_thread(save_new, Path(target.strip()), name, data)
        except FileExistsError as exc:
            self.chat.error(f"{exc.filename} exists: give another name")
            return True
        except OSError as exc:
            self.chat.error(f"cannot save there: {exc.strerror or exc}")
            return True
        self.chat.info(f"saved {msg.attachment.filename or '(encrypted file)'} ({size(len(data))}) to {path}")
        return True

    # -- safety ------------------------------------------------------------------------------

    async def cmd_report(self, args: str) -> bool:
        words = args.split()
        numbers = [w for w in words if number(w.removeprefix("#")) is not None]
        rest = words[len(numbers) :]
        if not numbers or not rest or rest[0] not in REPORT_CATEGORIES:
            self.chat.error(
                f"usage: /report N [N...] CATEGORY [COMMENT]; CATEGORY: {', '.join(REPORT_CATEGORIES)}"
            )
            return True
        messages = [self.chat.numbered(n) for n in numbers]
        if self.chat.open is None or any(m is None for m in messages):
            return True
        if self.chat.open.encryption == "e2ee":
            await self.chat.e2ee.report(
                self.chat.open, [m for m in messages if m is not None], rest[0], " ".join(rest[1:])
            )
            return True
        ids = [m.id for m in messages if m is not None]
        case = await self.chat.client.report(self.chat.open.id, ids, rest[0], " ".join(rest[1:]))
        self.chat.info(f"reported to the moderators (case {case['id']}); you will be told the outcome")
        return True

    async def cmd_appeal(self, args: str) -> bool:
        case, _, statement = args.partition(" ")
        case_id = number(case)
        if case_id is None or not statement.strip():
            self.chat.error("usage: /appeal CASE TEXT (CASE: the number in the moderation notice)")
            return True
        await self.chat.client.appeal(case_id, statement.strip())
        self.chat.info(f"appeal of case {case} sent; another moderator will decide it")
        return True
