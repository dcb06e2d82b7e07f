"""The chat's commands for end-to-end encryption and disappearing messages: `/devices`,
`/timer`, and how an e2ee message that cannot be read, or a franked report, is shown.

They live beside `Chat` (session.py) and act on it: `E2eeCommands(chat).commands` joins the
chat's command table.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from keyhold.clients.chat.io import Part
from keyhold.clients.chat.text import detail, when
from keyhold.sdk import Conversation, KeyholdError, Message

if TYPE_CHECKING:
    from keyhold.clients.chat.session import Chat

# What `/timer` takes: a number and a unit, largest first when written back.
TIMER_UNITS = (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_TIMER = re.compile(r"^(\d{1,9})\s*([wdhms])$", re.ASCII)
TIMER_USAGE = "usage: /timer 1d | 8h | 30m | 45s | 2w | off  (no argument: show the timer)"


def parse_timer(text: str) -> int | None:
    """Seconds for `1d`, `8h`, `30m`, `45s`, `2w`; None for `off`; ValueError otherwise."""
    word = text.strip().lower()
    if word in ("off", "none", "0"):
        return None
    found = _TIMER.match(word)
    if found is None:
        raise ValueError(word)
    return int(found.group(1)) * dict(TIMER_UNITS)[found.group(2)]


def timer_text(seconds: int | None) -> str:
    """`1d`, `8h`, `90s`: the largest unit that divides `seconds` exactly; `off` for None."""
    if seconds is None:
        return "off"
    for unit, length in TIMER_UNITS:
        if seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"  # pragma: no cover - every integer divides by 1


def unreadable(msg: Message) -> str:
    """How an e2ee message this device could not read is shown, in place of its text."""
    reason = msg.undecryptable or "unknown reason"
    if reason.startswith("unverifiable"):
        return f"(unverifiable message: {reason.removeprefix('unverifiable').lstrip(': ')})"
    return f"(cannot decrypt: {reason})"


class E2eeCommands:
    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.client = chat.client
        self.commands: dict[str, Callable[[str], Awaitable[bool]]] = {
            "devices": self.cmd_devices,
            "timer": self.cmd_timer,
        }

    # -- what the chat shows ---------------------------------------------------------------

    def conversation_lines(self, conv: Conversation) -> list[list[Part]]:
        """Lines shown under a conversation's members when it opens: its timer."""
        if conv.disappear_after_seconds is None:
            return []
        return [
            [
                ("disappearing messages: ", "dim"),
                (f"after {timer_text(conv.disappear_after_seconds)}", "yellow"),
            ]
        ]

    # -- /devices ----------------------------------------------------------------------------

    async def cmd_devices(self, args: str) -> bool:
        action, _, rest = args.partition(" ")
        if not action:
            return await self._list_devices()
        if action == "rename":
            device_id, _, name = rest.strip().partition(" ")
            if not device_id or not name.strip():
                self.chat.error("usage: /devices rename ID NAME")
                return True
            await self.client.rename_device(device_id, name.strip())
            self.chat.info(f"device {device_id} is now named {name.strip()}")
            return True
        if action == "remove":
            return await self._remove_device(rest.strip())
        self.chat.error("usage: /devices | /devices rename ID NAME | /devices remove ID")
        return True

    async def _list_devices(self) -> bool:
        devices = await self.client.devices()
        for device in devices:
            line: list[Part] = [
                (f"{device['device_id']}", "bold"),
                f"  {device.get('display_name') or '(no name)'}",
            ]
            seen = device.get("last_seen_at")
            if seen:
                line.append((f"  last seen {when(str(seen))}", "dim"))
            if device.get("current"):
                line.append(("  (this device)", "green"))
            self.chat.screen.show(*line)
        if self.client.crypto is None:
            self.chat.info(f"this device has no end-to-end encryption: {self.client.e2ee_unavailable}")
        self.chat.info(f"{len(devices)} device(s); /devices remove ID signs one out and deletes its keys")
        return True

    async def _remove_device(self, device_id: str) -> bool:
        if not device_id:
            self.chat.error("usage: /devices remove ID (the ID as /devices lists it)")
            return True
        if device_id == self.client.device_id:
            self.chat.error("that is this device: remove it from another one (or sign out by /quit)")
            return True
        known = {str(d["device_id"]) for d in await self.client.devices()}
        if device_id not in known:
            self.chat.error(f"no device {device_id} (/devices lists yours)")
            return True
        password = await self.chat.ask(f"your password, to remove device {device_id}: ", secret=True)
        if not password:
            self.chat.info("not removed")
            return True
        await self.client.remove_device(device_id, password)
        self.chat.info(f"removed device {device_id}: it is signed out and its keys are deleted")
        return True

    # -- /timer ------------------------------------------------------------------------------

    async def cmd_timer(self, args: str) -> bool:
        conv = self.chat.open
        if conv is None:
            self.chat.error("open a conversation first (/list, /open N)")
            return True
        if not args:
            self.chat.info(
                f"disappearing messages: {timer_text(conv.disappear_after_seconds)}   ({TIMER_USAGE})"
            )
            return True
        try:
            seconds = parse_timer(args)
        except ValueError:
            self.chat.error(f"{args!r} is not a timer; {TIMER_USAGE}")
            return True
        changed = await self.client.set_timer(conv.id, seconds)
        self.chat.remember(changed)
        if seconds is None:
            self.chat.info("disappearing messages off: messages sent from now on stay")
        else:
            self.chat.info(
                f"disappearing messages on: each message sent from now on is deleted {timer_text(seconds)} "
                "after it was sent, for everyone"
            )
        return True

    # -- /report of e2ee messages -------------------------------------------------------------

    async def report(self, conv: Conversation, messages: list[Message], category: str, comment: str) -> None:
        """One case per message: a franked message this device read is revealed (the case is
        then marked "verified sender" and shows the moderators that message and nothing
        else); one it could not read, or that was not franked, is reported unverified (the
        moderators cannot read it: the service holds no key)."""
        for msg in messages:
            number = self.chat.view.numbers.get(msg.id) if self.chat.view else None
            label = f"#{number}" if number else "the message"
            try:
                if msg.evidence is not None:
                    case: dict[str, Any] = await self.client.report(
                        conv.id, [msg.id], category, comment, reveal=msg
                    )
                else:
                    case = await self.client.report(conv.id, [msg.id], category, comment)
            except KeyholdError as exc:
                self.chat.error(f"{label} not reported: {detail(exc)}")
                continue
            if case.get("verified_sender"):
                how = "verified sender: the moderators see what it says, and nothing else of the conversation"
            elif msg.undecryptable is not None:
                how = "unverified: this device could not read it, so it could not be revealed"
            else:
                how = "unverified: its sender did not frank it, so the moderators cannot check it"
            self.chat.info(f"reported {label} to the moderators (case {case['id']}, {how})")
        self.chat.info("you will be told the outcome")
