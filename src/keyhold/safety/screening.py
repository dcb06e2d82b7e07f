"""The safety pipeline behind core's screening seam (`core.screening.Screen`).

For a `standard` send, `SafetyScreen.text` works out who the text goes from and to
(`ScanContext`: the recipients, whether one of them is a minor whom the sender, an adult, is
not friends with, the sender's account age) in one or two queries, kept a couple of seconds
(`Audiences`), asks the `Scanner`, and turns its `Verdict` into core's `Screening`. For an upload it asks the `AttachmentMatcher`
(hash lists) in a worker thread: decoding an image for its perceptual hash takes milliseconds.

Self-harm is never punished: a verdict in that category points the sender to support and, at
most, opens a case for a moderator (`flag`); it never holds or blocks the message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import now_ms
from keyhold.core.screening import ALLOWED, Screening, TextToScreen
from keyhold.safety.policy import Band
from keyhold.safety.scan_process import Answer, Request, ScanProcess, asked
from keyhold.safety.scanning import ScanContext, Scanner, Verdict
from keyhold.store import contacts as contact_store
from keyhold.store import verdicts as store

log = logging.getLogger("keyhold.safety.screening")
DAY_MS = 24 * 3600 * 1000
AUDIENCE_SECONDS = 2.0
MAX_AUDIENCES = 50_000
NEVER_PUNISHED = ("self_harm",)
# The rules a member falls under today from their birthdate and region (`ContactRules.band`).
BandOf = Callable[[str, str], str]


class Matcher(Protocol):
    """What the upload screen asks of hash lists (`safety.attachments.AttachmentMatcher`)."""

    def match(self, data: bytes, content_type: str | None) -> Verdict: ...


def as_screening(verdict: Verdict) -> Screening:
    action = verdict.action
    self_harm = verdict.category in NEVER_PUNISHED
    if self_harm and action in ("hold", "block"):
        action = "flag"  # help and a moderator's eye, never a punishment
    return Screening(
        action,
        verdict.category,
        verdict.policy,
        dict(verdict.scores),
        tuple(verdict.fired),
        verdict.support or self_harm,
    )


@dataclass(frozen=True, slots=True)
class Audience:
    """Who a member's sends to one conversation reach, as far as the scanner weighs it."""

    recipient_ids: tuple[int, ...]
    recipient_minor: bool
    adult_stranger: bool  # the sender is an adult not friends with a minor among them
    sender_created_ms: int


async def audience_of(
    conn: AsyncConnection, sender_id: int, conversation_id: int, band: BandOf
) -> Audience | None:
    """One or two queries; None when there is nothing to scan: a conversation that is not
    `standard` (its content is the devices' ciphertext) or a sender who is not a member (the
    send is refused anyway)."""
    rows = await store.screening_facts(conn, conversation_id)
    sender = next((r for r in rows if r.id == sender_id), None)
    if sender is None or rows[0].encryption != "standard":
        return None
    recipients = [r for r in rows if r.id != sender_id]
    minors = [r.id for r in recipients if band(r.birthdate, r.region) != Band.ADULT]
    adult_stranger = False
    if minors and band(sender.birthdate, sender.region) == Band.ADULT:
        edges = await contact_store.follow_edges(conn, sender_id, minors)
        adult_stranger = any((sender_id, m) not in edges or (m, sender_id) not in edges for m in minors)
    return Audience(tuple(r.id for r in recipients), bool(minors), adult_stranger, sender.created_ms)


class Audiences:
    """The `ScanContext` of each (sender, conversation), from its `Audience`, kept for `ttl`
    seconds: a member's run of messages costs one look-up, not one per message (a query on
    every send would cost more than the scan). Sends that find none wait for the one look-up
    under way; sends that find an expired one use it while it is looked up again. The price: a
    member added or a follow changed within the last `ttl` seconds (and the look-up) is
    weighed as before, and the sender's account age is its age at the look-up."""

    def __init__(
        self,
        engine: AsyncEngine,
        band: BandOf,
        ttl: float = AUDIENCE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._band = band
        self._ttl = ttl
        self._clock = clock
        self._known: dict[tuple[int, int], tuple[float, ScanContext | None]] = {}
        self._loading: dict[tuple[int, int], asyncio.Task[ScanContext | None]] = {}

    async def context(self, sender_id: int, conversation_id: int) -> ScanContext | None:
        key = (sender_id, conversation_id)
        found = self._known.get(key)
        if found is None or found[0] <= self._clock():
            loading = self._loading.get(key) or self._load(key)
            return await asyncio.shield(loading) if found is None else found[1]
        return found[1]

    def known(self, sender_id: int, conversation_id: int) -> ScanContext | Literal[False] | None:
        """The context without waiting: from the `Audience` known (an expired one while it is
        looked up again); False when none is known yet (the caller waits on `context`)."""
        key = (sender_id, conversation_id)
        found = self._known.get(key)
        if found is None:
            return False
        if found[0] <= self._clock() and key not in self._loading:
            self._load(key)  # looked up again meanwhile, as `context` does
        return found[1]

    def _load(self, key: tuple[int, int]) -> asyncio.Task[ScanContext | None]:
        async def load() -> ScanContext | None:
            try:
                async with self._engine.connect() as conn:
                    context = _context(*key, await audience_of(conn, *key, self._band))
            finally:
                del self._loading[key]
            self._known.pop(key, None)
            if len(self._known) >= MAX_AUDIENCES:
                del self._known[next(iter(self._known))]  # the oldest
            self._known[key] = (self._clock() + self._ttl, context)
            return context

        task = self._loading[key] = asyncio.create_task(load())
        task.add_done_callback(_retrieved)
        return task


def _context(sender_id: int, conversation_id: int, audience: Audience | None) -> ScanContext | None:
    if audience is None:
        return None
    return ScanContext(
        sender_id=sender_id,
        conversation_id=conversation_id,
        recipient_ids=audience.recipient_ids,
        recipient_minor=audience.recipient_minor,
        # About the minors among the recipients: an adult who is not friends (mutual follows)
        # with one of them.
        sender_adult_non_friend=audience.adult_stranger,
        sender_account_age_days=max(0.0, (now_ms() - audience.sender_created_ms) / DAY_MS),
    )


def _retrieved(task: asyncio.Task[ScanContext | None]) -> None:
    # A refresh no send waited for may fail (storage away): the next send looks up again.
    if not task.cancelled() and task.exception() is not None:
        log.warning("looking up a send's audience failed: %s", type(task.exception()).__name__)


def _answer_if_still_waiting(waiting: asyncio.Future[Screening | None], screening: Screening | None) -> None:
    if not waiting.done():  # the request that waited was cancelled meanwhile (its client left)
        waiting.set_result(screening)


class SafetyScreen:
    """`core.screening.Screen`, filled in by the wiring (`app.py`)."""

    def __init__(
        self,
        engine: AsyncEngine,
        scanner: Scanner,
        band: BandOf,
        attachments: Matcher | None = None,
        scan_now: Callable[[str, ScanContext], Verdict] | None = None,
        process: ScanProcess | None = None,
    ) -> None:
        """`scan_now`: the scanner's answer without the event loop, when it never waits (the
        rules and the built-in scanner with no HTTP service): then `text_now` can answer.
        `process`: the same scan in a child process, which `text_soon` asks (with `scan_now`,
        which answers what the child cannot)."""
        self._scanner = scanner
        self._scan_now = scan_now
        self._process = process if scan_now is not None else None
        if self._process is not None:
            self._process.settle = self._settle
        self._audiences = Audiences(engine, band)
        self._attachments = attachments

    async def text(self, send: TextToScreen) -> Screening:
        context = await self._audiences.context(send.sender_id, send.conversation_id)
        if context is None:
            return ALLOWED
        if self._process is not None and self._scan_now is not None:
            # Full verdicts: a send with an attachment records the text's scores with the file's.
            answer: asyncio.Future[Screening | None] = asyncio.get_running_loop().create_future()
            if self._process.scan(send.text, context, functools.partial(_answer_if_still_waiting, answer), full=True):
                screening = await answer
                if screening is not None:
                    return screening
        return as_screening(await self._scanner.scan(send.text, context))

    def text_now(self, send: TextToScreen) -> Screening | None:
        if self._scan_now is None:
            return None
        context = self._audiences.known(send.sender_id, send.conversation_id)
        if context is False:
            return None
        if context is None:
            return ALLOWED
        verdict = self._scan_now(send.text, context)
        if verdict.nothing_to_note:
            # Most sends; one answered here carries no attachment whose verdict its scores
            # would join.
            return ALLOWED
        return as_screening(verdict)

    def text_soon(self, send: TextToScreen, answer: Callable[[Screening | None], None]) -> bool:
        if self._process is None:
            return False
        context = self._audiences.known(send.sender_id, send.conversation_id)
        if not context:
            self._process.start_soon()  # started by the first send to screen, ready for the next
            return False  # not known yet (the caller waits), or nothing to scan (`text_now` says so)
        return self._process.scan(send.text, context, answer)

    def _settle(self, answer: Callable[[Screening | None], None], got: Answer, request: Request) -> None:
        """A send's answer from the child's: ALLOWED for None (most sends), a verdict as a
        screening; for GONE (the child went away, or could not scan this text), the text scanned
        here, or None when that fails too (the caller takes the waiting path)."""
        if got is None:
            answer(ALLOWED)
        elif isinstance(got, Verdict):
            answer(as_screening(got))
        else:
            assert self._scan_now is not None  # a child is asked only beside the in-process scan
            try:
                screening: Screening | None = as_screening(self._scan_now(*asked(request)))
            except Exception as exc:
                log.error("scanning a send failed: %s", type(exc).__name__)  # the text could be in it
                screening = None
            answer(screening)

    async def aclose(self) -> None:
        if self._process is not None:
            await self._process.aclose()
        closing = getattr(self._scanner, "aclose", None)
        if closing is not None:
            await closing()

    async def file(
        self, sender_id: int, conversation_id: int, data: bytes, content_type: str | None
    ) -> Screening:
        if self._attachments is None:
            return ALLOWED
        return as_screening(await asyncio.to_thread(self._attachments.match, data, content_type))
