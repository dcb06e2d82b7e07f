"""The chat's group commands: `/add`, `/remove`, `/rename`, `/promote`, `/leave` (the open
group's owner and admins; anyone may leave)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from keyhold.sdk import Conversation

if TYPE_CHECKING:
    from keyhold.clients.chat.session import Chat


class GroupCommands:
    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.commands: dict[str, Callable[[str], Awaitable[bool]]] = {
            "add": self.cmd_add,
            "remove": self.cmd_remove,
            "rename": self.cmd_rename,
            "promote": self.cmd_promote,
            "leave": self.cmd_leave,
        }

    def _open_group(self) -> Conversation | None:
        if self.chat.open is None or self.chat.open.kind != "group":
            self.chat.error("open a group first (/list, /open N)")
            return None
        return self.chat.open

    async def _changed(self, conv: Conversation, text: str) -> bool:
        self.chat.known[conv.id] = conv
        if self.chat.view is not None:
            self.chat.view.conversation = conv
        self.chat.info(text)
        return True

    async def cmd_add(self, args: str) -> bool:
        group = self._open_group()
        users = [w.removeprefix("@") for w in args.split()]
        if group is None:
            return True
        if not users:
            self.chat.error("usage: /add USER [USER...]")
            return True
        return await self._changed(
            await self.chat.client.add_members(group.id, users), f"added {', '.join(users)}"
        )

    async def cmd_remove(self, args: str) -> bool:
        group = self._open_group()
        if group is None:
            return True
        if not args:
            self.chat.error("usage: /remove USER")
            return True
        return await self._changed(
            await self.chat.client.remove_member(group.id, args.removeprefix("@")), f"removed {args}"
        )

    async def cmd_rename(self, args: str) -> bool:
        group = self._open_group()
        if group is None:
            return True
        if not args:
            self.chat.error("usage: /rename TITLE")
            return True
        return await self._changed(await self.chat.client.rename(group.id, args), f"renamed to {args}")

    async def cmd_promote(self, args: str) -> bool:
        group = self._open_group()
        if group is None:
            return True
        if not args:
            self.chat.error("usage: /promote USER")
            return True
        changed = await self.chat.client.set_role(group.id, args.removeprefix("@"), "admin")
        return await self._changed(changed, f"{args} is now an admin")

    async def cmd_leave(self, _args: str) -> bool:
        group = self._open_group()
        if group is None:
            return True
        await self.chat.client.leave(group.id)
        self.chat.view = None
        self.chat.info(f"you left {self.chat.label(group)}")
        return True
