"""The chat's verification commands: `/safety USER` (the safety number to compare),
`/verify USER` (interactive SAS: seven emoji and three numbers to compare), `/verify accept`
and `/verify reject` for a request from someone else, and `/trust USER` after a contact's
identity changed. What is verified is kept by this device (in its state file).

SAS needs both devices online: the requester waits (up to `WAIT` seconds for each step) for
the other member to accept on their device and then to compare.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from keyhold.clients.chat.io import Part
from keyhold.clients.chat.text import detail
from keyhold.sdk import Conversation, IdentityChanged, KeyholdError, SasVerification, VerificationCancelled

if TYPE_CHECKING:
    from keyhold.clients.chat.session import Chat

WAIT = 120.0  # seconds for the other member to accept, then to compare (Matrix allows 10 minutes)
CHECK = "✓"


class VerifyCommands:
    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.client = chat.client
        self.pending: SasVerification | None = None  # a request from someone else, not answered yet
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
        self.client.accept_identity(user)
        self.chat.info(
            f"{user}'s current keys accepted: sends to them work again. They are not verified: "
            f"/safety {user} or /verify {user} checks them"
        )
        return True

    # -- /verify -----------------------------------------------------------------------------

    async def cmd_verify(self, args: str) -> bool:
        words = args.split()
        if not words:
            self.chat.error("usage: /verify USER [DEVICE] | /verify accept | /verify reject")
            return True
        if words[0] in ("accept", "reject"):
            request, self.pending = self.pending, None
            if request is None or request.state != "incoming":
                self.chat.error("no verification request is waiting for an answer")
                return True
            if words[0] == "reject":
                await request.cancel(reason="declined")
                self.chat.info(f"declined {request.other_user}'s verification request")
                return True
            await request.accept()
            await self._compare(request)
            return True
        user = words[0].removeprefix("@")
        device = words[1] if len(words) > 1 else None
        verification = await self.client.start_verification(user, device)
        self.chat.info(
            f"asked {user}'s device{'' if device else 's'} to verify with you; waiting for them to "
            "accept (/verify accept on their side)…"
        )
        await self._compare(verification)
        return True

    async def _compare(self, sas: SasVerification) -> None:
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
            answer = await self.chat.ask("do they match? [y/n] ")
            if (answer or "").lower() not in ("y", "yes"):
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
            if self.pending is not None and self.pending.state == "incoming":
                with contextlib.suppress(KeyholdError):
                    await self.pending.cancel(reason="another request came in")
            self.pending = request
            self.chat.notice(
                f"{request.other_user} (device {request.other_device}) asks to verify with you",
                ("   (/verify accept to compare codes, /verify reject to decline)", "dim"),
            )
