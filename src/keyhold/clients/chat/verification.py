"""The chat's verification commands: `/safety USER` (the safety number to compare),
`/verify USER` (interactive SAS: seven emoji and three numbers to compare), `/verify accept
USER` and `/verify reject USER` for a request from someone else, and `/trust USER` after a
contact's identity changed. What is verified is kept by this device (in its state file).

SAS needs both devices online: the requester waits (up to `WAIT` seconds for each step) for
the other member to accept on their device and then to compare. Ctrl-C at a terminal cancels
the verification (and tells the other side), not the chat.

Requests from others wait, one per member (the newest), until answered by name; each member's
requests are announced at most once per `NOTICE_EVERY` seconds, so nobody can flood the screen
or slip their request in place of the one the user expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from keyhold.clients.chat.io import Part, ctrl_c_calls
from keyhold.clients.chat.text import detail
from keyhold.sdk import Conversation, IdentityChanged, KeyholdError, SasVerification, VerificationCancelled

if TYPE_CHECKING:
    from keyhold.clients.chat.session import Chat

WAIT = 120.0  # seconds for the other member to accept, then to compare (Matrix allows 10 minutes)
CHECK = "✓"
NOTICE_EVERY = 30.0  # seconds between two announcements of one member's requests
ANSWERS = {"y": True, "yes": True, "n": False, "no": False}
TRIES = 3  # answers to "do they match?" that are neither y nor n before the verification is cancelled


class VerifyCommands:
    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.client = chat.client
        self.pending: dict[str, SasVerification] = {}  # requests from others, the newest of each member
        self.noticed: dict[str, float] = {}  # when each member's requests were last announced
        self.changes: dict[str, list[str]] = {}  # what the last identity warning said, per contact
        self._asking = False
        self.commands: dict[str, Callable[[str], Awaitable[bool]]] = {
            "safety": self.cmd_safety,
            "verify": self.cmd_verify,
            "trust": self.cmd_trust,
        }

    # -- what the chat shows ---------------------------------------------------------------

    def members(self, conv: Conversation) -> str:
        """The members of a conversation, a ✓ after each one this device verified (e2ee only)."""
        if conv.encryption != "e2ee":
            return ", ".join(conv.members)
        marked = [
            f"{m} {CHECK}" if m != self.chat.me and self.client.is_verified(m) else m for m in conv.members
        ]
        return ", ".join(marked)

    def identity_changed(self, exc: IdentityChanged) -> None:
        """The warning when a send stopped because a contact's identity changed."""
        user = exc.username
        self.changes[user] = list(exc.changes)
        self.chat.screen.show(
            ("⚠ not sent: ", "bold red"),
            (f"{user}'s identity changed since this device last saw it", "bold"),
            f" ({'; '.join(exc.changes)}).",
        )
        self.chat.screen.show(
            f"   A new phone of theirs does this, and so would a key someone slipped in. Check with "
            f"/safety {user} (compare the digits with {user} directly) or /verify {user}, then "
            f"/trust {user} to send to them again."
        )

    # -- /safety -----------------------------------------------------------------------------

    async def cmd_safety(self, args: str) -> bool:
        user = args.strip().removeprefix("@")
        if not user or " " in user:
            self.chat.error("usage: /safety USER")
            return True
        try:
            number = await self.client.safety_number(user)
        except KeyholdError as exc:
            self.chat.error(f"no safety number with {user}: {detail(exc)}")
            return True
        groups = number.formatted.split(" ")
        self.chat.screen.show(f"safety number of you and {user}:")
        for row in range(0, len(groups), 4):
            self.chat.screen.show(("   " + "  ".join(groups[row : row + 4]), "bold"))
        if self.client.is_verified(user):
            self.chat.screen.show((f"{CHECK} {user} is verified on this device", "green"))
        else:
            self.chat.info(
                f"{user} sees the same 60 digits if nobody is between you: compare them in person or "
                f"on a call you trust, or run /verify {user}"
            )
        return True

    # -- /trust ------------------------------------------------------------------------------

    async def cmd_trust(self, args: str) -> bool:
        user = args.strip().removeprefix("@")
        if not user or " " in user:
            self.chat.error("usage: /trust USER (after a warning that USER's identity changed)")
            return True
        changes = self.changes.get(user)
        if changes:
            self.chat.screen.show(f"to accept: {user}'s new keys ({'; '.join(changes)})")
        else:
            self.chat.info(f"(this chat saw no warning about {user}'s keys)")
        if self.chat.screen.interactive:
            answer = await self.chat.ask(f"accept {user}'s current keys without verifying them? [y/n] ")
            if not ANSWERS.get((answer or "").lower(), False):
                self.chat.info(f"not accepted: sends to {user} stay stopped if their keys changed")
                return True
        # Only what the warning showed: if the keys changed again since, nothing is accepted.
        if not self.client.accept_identity(user, changes or None):
            self.chat.info(
                f"nothing accepted for {user}: no change of their keys is waiting, or it is not the one "
                "shown above (send again to see the current one)"
            )
            return True
        self.changes.pop(user, None)
        self.chat.info(
            f"{user}'s current keys accepted: sends to them work again. "
            f"They are not verified: /safety {user} or /verify {user} checks them"
        )
        return True

    # -- /verify -----------------------------------------------------------------------------

    async def cmd_verify(self, args: str) -> bool:
        words = args.split()
        if not words:
            self.chat.error("usage: /verify USER [DEVICE] | /verify accept USER | /verify reject USER")
            waiting = self._waiting()
            if waiting:
                self.chat.info(f"(requests waiting from: {', '.join(sorted(waiting))})")
            return True
        if words[0] in ("accept", "reject"):
            return await self._answer(words[0], words[1].removeprefix("@") if len(words) > 1 else None)
        user = words[0].removeprefix("@")
        device = words[1] if len(words) > 1 else None
        verification = await self.client.start_verification(user, device)
        self.chat.info(
            f"asked {user}'s device{'' if device else 's'} to verify with you; waiting for them to "
            f"accept (/verify accept {self.chat.me} on their side)"
            + ("… (Ctrl-C cancels)" if self.chat.screen.interactive else "…")
        )
        await self._compare(verification)
        return True

    def _waiting(self) -> dict[str, SasVerification]:
        """The requests from others still waiting for an answer, by member."""
        self.pending = {user: r for user, r in self.pending.items() if r.state == "incoming"}
        return self.pending

    async def _answer(self, action: str, user: str | None) -> bool:
        waiting = self._waiting()
        if user is None:  # only when there is no doubt whose request it is
            if len(waiting) != 1:
                self.chat.error(
                    f"requests from {', '.join(sorted(waiting))} are waiting: /verify {action} USER"
                    if waiting
                    else "no verification request is waiting for an answer"
                )
                return True
            (user,) = waiting
        request = waiting.pop(user, None)
        self.noticed.pop(user, None)  # answered: that member's next request is announced at once
        if request is None:
            others = f" (waiting: {', '.join(sorted(waiting))})" if waiting else ""
            self.chat.error(f"no verification request from {user} is waiting{others}")
            return True
        if action == "reject":
            await request.cancel(reason="declined")
            self.chat.info(f"declined {user}'s verification request")
            return True
        self.chat.info(f"accepting {user}'s verification request (their device {request.other_device})")
        await request.accept()
        await self._compare(request)
        return True

    async def _compare(self, sas: SasVerification) -> None:
        """`_steps`, which Ctrl-C at a terminal cancels (the other side is told) without
        ending the chat."""
        steps = asyncio.ensure_future(self._steps(sas))
        interrupted = False

        def interrupt() -> None:
            nonlocal interrupted
            interrupted = True
            steps.cancel()

        with ctrl_c_calls(interrupt, enabled=self.chat.screen.interactive):
            try:
                await steps
            except asyncio.CancelledError:
                if not interrupted:
                    raise  # the chat is ending
        if interrupted:
            with contextlib.suppress(KeyholdError):
                await sas.cancel(reason="the user cancelled")
            enter = "; press Enter to get back to the chat prompt" if self._asking else ""
            self.chat.error(f"verification with {sas.other_user} cancelled (Ctrl-C){enter}")
        self._asking = False

    async def _match(self) -> bool | None:
        """The user's answer to "do they match?": True or False; None if none came."""
        for _ in range(TRIES):
            self._asking = True  # a question is on screen (a Ctrl-C then leaves its prompt there)
            answer = await self.chat.ask("do they match? [y/n] ")
            self._asking = False
            if answer is None:
                return None
            if answer.lower() in ANSWERS:
                return ANSWERS[answer.lower()]
            self.chat.error("answer y (yes) or n (no)")
        return None

    async def _steps(self, sas: SasVerification) -> None:
        """Show the codes, ask the user whether they match, confirm or cancel, report the end."""
        user = sas.other_user
        try:
            codes = await sas.codes(timeout=WAIT)
            self.chat.screen.show(
                f"compare with what {user}'s device {sas.other_device} shows (they see the same if "
                "nobody is between you):"
            )
            emoji: list[Part] = ["   "]
            for symbol, name in codes.emoji:
                emoji += [(symbol, "bold"), f" {name}   "]
            self.chat.screen.show(*emoji)
            self.chat.screen.show(("   " + "  ".join(f"{n:04d}" for n in codes.decimals), "bold"))
            match = await self._match()
            if match is None:
                await sas.cancel(reason="no answer whether the codes match")
                self.chat.error(f"verification with {user} cancelled: no y or n answer")
                return
            if not match:
                await sas.cancel(reason="the codes did not match", code="m.mismatched_sas")
                self.chat.error(
                    f"verification with {user} cancelled. If the codes really differ, someone may be "
                    "between you: do not trust these keys"
                )
                return
            await sas.confirm()
            verified = await sas.done(timeout=WAIT)
        except VerificationCancelled as exc:
            self.chat.error(f"verification with {user} ended: {exc.reason}")
            return
        if verified:
            self.chat.screen.show(
                (f"{CHECK} verified {user}", "bold green"),
                f" (their device {sas.other_device}); a {CHECK} marks them in your e2ee conversations",
            )
        else:
            self.chat.error(f"verification with {user} failed: {sas.cancel_reason or 'it did not complete'}")

    async def watch(self) -> None:
        """Announce verification requests from others as they come (while a stream is open)."""
        while True:
            try:
                request = await self.client.next_verification_request(timeout=3600)
            except TimeoutError:
                continue
            except KeyholdError:
                return  # no e2ee device: no requests can come
            self.arrived(request)

    def arrived(self, request: SasVerification) -> None:
        """Keep `request` as its member's newest; announce it unless it repeats one already
        announced, or that member's last announcement, not answered yet, is less than
        `NOTICE_EVERY` seconds old."""
        user = request.other_user
        earlier = self.pending.get(user)
        self.pending[user] = request
        if earlier is not None and earlier.transaction_id == request.transaction_id:
            return
        now = time.monotonic()
        if now - self.noticed.get(user, -math.inf) < NOTICE_EVERY:
            return
        self.noticed[user] = now
        self.chat.notice(
            f"{user} (device {request.other_device}) asks to verify with you",
            (f"   (/verify accept {user} to compare codes, /verify reject {user} to decline)", "dim"),
        )
