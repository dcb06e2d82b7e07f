"""The seam through which `standard` sends and uploads are screened before they are stored.

Core reads no policy: it asks a `Screen` (filled at wiring time by `safety`) what to do with a
send's text or an upload's bytes, and acts on the answer, a `Screening`:
- `allow`: stored and delivered as ever;
- `flag`: stored and delivered, and `on_screened` is told in the same transaction (governance
  opens a case);
- `hold`: stored sealed but delivered to no one until a moderator releases it
  (`governance.held`); the sender sees it as "pending review";
- `block`: nothing stored, the sender gets a 422 naming the policy.
Every non-allow answer is recorded (`store.verdicts`: action, category, scores, what fired —
never the content). `e2ee` content is never screened: the service cannot read it, and core
does not call the screen for encrypted content at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import now_ms
from keyhold.config import Settings
from keyhold.core.errors import Problem, outage, unavailable
from keyhold.core.writer import EventSink, Writer
from keyhold.store import messages as message_store
from keyhold.store import verdicts as verdict_store

if TYPE_CHECKING:
    from keyhold.core.messages import SendRequest, Sent

log = logging.getLogger("keyhold.screening")

ScreenAction = Literal["allow", "flag", "hold", "block"]
SEVERITY: tuple[ScreenAction, ...] = ("allow", "flag", "hold", "block")  # least severe first
# What a held message's `status` reads to its sender, while held and once refused.
PENDING_REVIEW = "pending_review"
REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Screening:
    """A screen's answer about one send or upload: no content, only what may be recorded."""

    action: ScreenAction = "allow"
    category: str | None = None
    policy: str = ""  # a short phrase naming the policy, shown to the sender of a blocked send
    scores: Mapping[str, float] = field(default_factory=dict)
    fired: tuple[str, ...] = ()
    # Point the sender to support resources (self-harm): never a punishment.
    support: bool = False

    @property
    def recorded(self) -> bool:
        return self.action != "allow"


ALLOWED = Screening()


def most_severe(first: Screening, second: Screening) -> Screening:
    """The more severe of two answers (the first of equals), with what fired in both."""
    top = first if SEVERITY.index(first.action) >= SEVERITY.index(second.action) else second
    scores = {**second.scores, **first.scores}
    for category, score in second.scores.items():
        scores[category] = max(score, scores[category])
    fired = tuple(dict.fromkeys((*first.fired, *second.fired)))
    return Screening(top.action, top.category, top.policy, scores, fired, first.support or second.support)


def blocked(screening: Screening) -> Problem:
    """The sender's answer to a blocked send or upload: the policy named, nothing stored."""
    name = (screening.category or "content").replace("_", " ")
    detail = f"blocked by the safety policy: {name}"
    if screening.policy:
        detail += f". {screening.policy}"
    return Problem(
        422,
        "blocked",
        "Blocked by the safety policy",
        detail,
        category=screening.category,
        policy=screening.policy,
    )


class TextToScreen(NamedTuple):
    """What a screen is shown of a `standard` send (the text only in memory, never stored).
    (A named tuple: one is made per send, cheaper than a frozen dataclass.)"""

    sender_id: int
    conversation_id: int
    text: str


class Screen(Protocol):
    async def text(self, send: TextToScreen) -> Screening:
        """The answer for a send's text (ALLOWED when there is nothing to screen: a
        conversation that is not `standard`, a sender who is not a member). On every send:
        it keeps what it needs to know cheap to get (no query when it can be helped)."""
        ...

    def text_now(self, send: TextToScreen) -> Screening | None:
        """The answer without waiting when it can be had (what `text` needs is at hand and the
        scanners never wait), else None and the caller awaits `text`. A screen may scan once
        per send only: scanners count what each sender sends (spam)."""
        ...

    def text_soon(self, send: TextToScreen, answer: Callable[[Screening | None], None]) -> bool:
        """Scan off the event loop when the screen can: True, and `answer` is called once with
        the answer later, on the loop (None: it could not be had; the caller takes the waiting
        path, `text`); else False (nothing scanned) and the caller tries `text_now`, then
        `text`."""
        ...

    async def file(
        self, sender_id: int, conversation_id: int, data: bytes, content_type: str | None
    ) -> Screening:
        """The answer for an upload's plaintext bytes to a `standard` conversation."""
        ...


@dataclass(frozen=True, slots=True)
class Screened:
    """A recorded non-allow answer, as `on_screened` is told of it inside the transaction that
    recorded it: a stored message (flag, hold) or nothing stored (block: `message_id` None)."""

    verdict_id: int
    sender_id: int
    conversation_id: int
    message_id: int | None
    screening: Screening


OnScreened = Callable[[AsyncConnection, EventSink, Screened], Awaitable[None]]


async def nothing_more(_conn: AsyncConnection, _sink: EventSink, _screened: Screened) -> None:
    """The default of `MessageService.on_screened`: the verdict is recorded, and that is all."""


def verdict_row(
    screening: Screening, sender_id: int, conversation_id: int, now: int, **ids: Any
) -> dict[str, Any]:
    """A `scan_verdicts` row (`message_id` / `attachment_id` in `ids`): never any content."""
    return {
        "sender_id": sender_id,
        "conversation_id": conversation_id,
        "action": screening.action,
        "category": screening.category,
        "policy": screening.policy[:200],
        "scores": {k: round(float(v), 4) for k, v in screening.scores.items()},
        "fired": list(screening.fired),
        "created_ms": now,
        **ids,
    }


def screening_of(row: Any) -> Screening:
    """A recorded verdict (an upload's) as an answer again."""
    return Screening(row.action, row.category, row.policy, dict(row.scores), tuple(row.fired))


Done = Callable[["Sent | Problem"], None]
# The writer's batch handler (`MessageService._commit_sends`), run here for one screened send.
Commit = Callable[[Connection, list["SendRequest"], EventSink], list["Sent | Problem"]]
RETRY = "retry with the same idempotency key"


class Place:
    """A send's place in its client's line: done once the send is queued for storage or
    refused (and so every send before it). What a future offers here (`done`,
    `add_done_callback` in order, `await`), lighter: a screened send makes one, and the loop
    makes thousands a second (a future costs a look-up of the running loop each)."""

    __slots__ = ("_reached", "_then")

    def __init__(self) -> None:
        self._reached = False
        self._then: list[Callable[[Any], object]] | None = None

    def done(self) -> bool:
        return self._reached

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        if self._reached:
            asyncio.get_running_loop().call_soon(fn, self)
        elif self._then is None:
            self._then = [fn]
        else:
            self._then.append(fn)

    def reached(self) -> None:
        self._reached = True
        if self._then:
            # On the loop, as a future's callbacks: a long line of sends behind this one is
            # handed over one by one, never by recursion.
            loop = asyncio.get_running_loop()
            for fn in self._then:
                loop.call_soon(fn, self)
            self._then = None

    def __await__(self) -> Generator[Any, None, None]:
        if not self._reached:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.add_done_callback(lambda _: _settle(future))
            yield from future


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():  # a waiter cancelled meanwhile
        future.set_result(None)


# What `SendScreening.submit` returns and takes as `after`: a `Place`, or the task of a send
# on the waiting path.
InLine = Place | asyncio.Future[None]


class _ScreenedSoon(Place):
    """One send screened off the loop: its answer hands it over (`__call__`), after `after`.
    (An object, not closures: a send makes one, and the loop makes thousands a second.)"""

    __slots__ = ("after", "owner", "reply", "request")

    def __init__(self, owner: SendScreening, request: SendRequest, done: Done, after: InLine | None) -> None:
        super().__init__()
        self.owner, self.request, self.reply, self.after = owner, request, done, after

    def __call__(self, screening: Screening | None) -> None:
        self.request.screening = screening
        if self.after is not None and not self.after.done():
            self.after.add_done_callback(self._hand_over)
        else:
            self._hand_over(None)

    def _hand_over(self, _: object) -> None:
        screening = self.request.screening
        if screening is not None and screening.action == "allow":
            self.owner._submit_screened(self.request, self.reply)
            self.reached()
            return
        # Blocked, flagged or held (rare): recorded on the waiting path, which takes the answer
        # from the request and does not scan again; or no answer (None): screened there.
        task = self.owner._task(self.owner.screen_then_submit(self.request, self.reply))
        task.add_done_callback(lambda _: self.reached())


async def _reached(after: InLine) -> None:
    """Wait for a send's place in line; a failed or cancelled task before it is no error here
    (that send's own answer says so)."""
    if isinstance(after, Place):
        await after
    else:
        await asyncio.wait([after])


class SendScreening:
    """Screening on the send path, for `MessageService`: which sends are screened, what their
    answer does, and what is recorded.

    Screening happens before a send is queued, never in the writer's transaction (a screen
    may take a query or a network call). Allowed sends then go to the writer's group commit as
    ever; a flagged or held one (rare) is stored in a transaction of its own, with its verdict
    and what `on_screened` adds there (the case a moderator reviews): all of it, or nothing."""

    def __init__(self, engine: AsyncEngine, writer: Writer, settings: Settings, commit: Commit) -> None:
        self._engine = engine
        self._writer = writer
        self._settings = settings
        self._commit = commit
        self.screen: Screen | None = None  # None: nothing is screened
        self.on_screened: OnScreened = nothing_more
        self._tasks: set[asyncio.Task[None]] = set()

    def screens(self, request: SendRequest) -> bool:
        # Structural: encrypted content never reaches a screen.
        return self.screen is not None and request.encrypted is None

    def submit(self, request: SendRequest, done: Done, after: InLine | None = None) -> InLine | None:
        """Queue a validated send, screened first when it must be. One client's sends are queued
        in the order they came: `after` is what this returned for its previous send. Returns its
        place in line (a `Place`, or its task on the waiting path), done once this send is
        queued or refused (and so every send before it), or None when it was queued at once
        (nothing to screen, nothing ahead of it)."""
        ahead = after is not None and not after.done()
        if not self.screens(request):
            if not ahead:
                self._writer.submit(request, done)
                return None
            assert after is not None
            return self._queue_behind(after, request, done)
        send = self._text_only(request)
        if send is not None:
            handed = self._screen_soon(send, request, done, after if ahead else None)
            if handed is not None:
                return handed
            if self._screened_now(send, request):
                if not ahead:
                    # The common case in-process, without a task: a text-only send whose screen
                    # answered at once and allows it (a task per send cost a few percent).
                    self._submit_screened(request, done)
                    return None
                assert after is not None
                return self._queue_behind(after, request, done)
        return self._task(self.screen_then_submit(request, done, after if ahead else None))

    def _queue_behind(self, after: InLine, request: SendRequest, done: Done) -> Place:
        """A send that needs no more screening, behind this client's earlier send still being
        screened: queued once that one is, in order (a future's done-callbacks run in the order
        they were added), with no task of its own; else a busy client's sends would each take
        one from then on. Its own place, done once it is queued (the earlier one's before)."""
        queued = Place()

        def hand_over(_: object) -> None:
            self._submit_screened(request, done)
            queued.reached()

        after.add_done_callback(hand_over)
        return queued

    def _task(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._tasks.discard)
        return task

    def _text_only(self, request: SendRequest) -> TextToScreen | None:
        """What a screen is shown of a text-only send; None for one with an attachment or no
        text (the waiting path screens those)."""
        if self.screen is None or request.attachment_id or not request.text.strip():
            return None
        return TextToScreen(request.sender_id, request.conversation_id, request.text)

    def _screen_soon(
        self, send: TextToScreen, request: SendRequest, done: Done, after: InLine | None
    ) -> Place | None:
        """A text-only send screened off the loop (`Screen.text_soon`), then queued after
        `after`; the place returned is done once it is queued or refused. None when the screen
        cannot: nothing was scanned."""
        assert self.screen is not None
        pending = _ScreenedSoon(self, request, done, after)
        return pending if self.screen.text_soon(send, pending) else None

    def _screened_now(self, send: TextToScreen, request: SendRequest) -> bool:
        """Screen a text-only send without waiting when the screen can, and allows it (the
        answer goes on the request); False when the send must take the waiting path. An answer
        other than allow is kept on the request for that path, so no text is scanned twice."""
        assert self.screen is not None
        screening = self.screen.text_now(send)
        if screening is None:
            return False
        request.screening = screening
        return screening.action != "block" and not screening.recorded

    async def screen_send(self, request: SendRequest) -> None:
        """Screen a validated send's text, with the verdict its attachment got on upload; the
        answer goes on the request. A `block` is recorded and raised: nothing is stored."""
        if self.screen is None or not self.screens(request):
            return
        screening = ALLOWED
        if request.screening is not None:
            screening = request.screening  # answered at once by `_screened_now`
        elif request.text.strip():
            text = TextToScreen(request.sender_id, request.conversation_id, request.text)
            screening = await self.screen.text(text)
        if request.attachment_id:
            async with self._engine.connect() as conn:
                found = await verdict_store.for_attachment(conn, request.attachment_id)
            if found is not None and (found.sender_id, found.conversation_id) == (
                request.sender_id,
                request.conversation_id,
            ):
                screening = most_severe(screening, screening_of(found))
        if screening.action == "block":
            await self._record_block(screening, request.sender_id, request.conversation_id)
            raise blocked(screening)
        request.screening = screening

    async def screen_upload(
        self, user_id: int, conversation_id: int, content_type: str, data: bytes
    ) -> Screening:
        """An upload's plaintext bytes to a `standard` conversation, screened before anything is
        stored. An upload to an `e2ee` conversation is the device's ciphertext: never screened."""
        if self.screen is None:
            return ALLOWED
        async with self._engine.connect() as conn:
            states = await conn.run_sync(message_store.conversation_states, [conversation_id])
            members = await conn.run_sync(message_store.active_members, [conversation_id])
        state = states.get(conversation_id)
        if state is None or state.encryption != "standard" or user_id not in members.get(conversation_id, {}):
            return ALLOWED  # nothing to screen: the upload itself refuses it
        screening = await self.screen.file(user_id, conversation_id, data, content_type)
        if screening.action == "block":
            await self._record_block(screening, user_id, conversation_id)
            raise blocked(screening)
        return screening

    async def record_upload(
        self,
        conn: AsyncConnection,
        screening: Screening,
        user_id: int,
        conversation_id: int,
        attachment_id: str,
        now: int,
    ) -> None:
        """In the upload's transaction: a flagged or held file's verdict, which the send that
        carries it takes on (`screen_send`)."""
        if screening.recorded:
            row = verdict_row(screening, user_id, conversation_id, now, attachment_id=attachment_id)
            await verdict_store.insert_verdict(conn, row)

    def support_notice(self) -> dict[str, Any]:
        return {"text": self._settings.support_text, "url": self._settings.support_url or None}

    async def screen_then_submit(self, request: SendRequest, done: Done, after: InLine | None = None) -> None:
        """`submit` for a caller that may wait (a REST request): no task of its own."""
        refusal: Problem | None = None
        try:
            await self.screen_send(request)
        except Problem as problem:
            refusal = problem
        except Exception as exc:
            # Only the type: an exception's text could quote the message.
            log.error("screening a send failed: %s", type(exc).__name__)
            refusal = outage(exc) or unavailable(f"the message could not be screened; {RETRY}")
        if after is not None and not after.done():
            await _reached(after)  # queued after the same client's previous send
        if refusal is not None:
            done(refusal)
            return
        screening = request.screening
        if screening is None or not screening.recorded:
            self._submit_screened(request, done)
        else:
            if screening.support:
                done = self._with_support(done)
            done(await self._commit_screened(request, screening))

    def _submit_screened(self, request: SendRequest, done: Done) -> None:
        """A send that is allowed (or not screened): to the writer's group commit."""
        if request.screening is not None and request.screening.support:
            done = self._with_support(done)
        self._writer.submit(request, done)

    def _with_support(self, done: Done) -> Done:
        """The sender's answer carries support resources; what others get does not."""
        notice = self.support_notice()

        def answer(result: Sent | Problem) -> None:
            done(result if isinstance(result, Problem) else result.with_fields(support=notice))

        return answer

    async def _commit_screened(self, request: SendRequest, screening: Screening) -> Sent | Problem:
        async def run(conn: AsyncConnection, sink: EventSink) -> Sent | Problem:
            request.stored_id = None  # a retried transaction starts over
            result = (await conn.run_sync(self._commit, [request], sink))[0]
            if request.stored_id is not None and not isinstance(result, Problem):
                row = verdict_row(
                    screening,
                    request.sender_id,
                    request.conversation_id,
                    now_ms(),
                    message_id=request.stored_id,
                )
                verdict_id = await verdict_store.insert_verdict(conn, row)
                screened = Screened(
                    verdict_id, request.sender_id, request.conversation_id, request.stored_id, screening
                )
                await self.on_screened(conn, sink, screened)
            return result

        try:
            return await self._writer.run(run)
        except Problem as problem:
            return problem
        except Exception as exc:
            log.error("a screened send failed to commit: %s", type(exc).__name__)
            return outage(exc) or unavailable(f"the message may not be stored; {RETRY}")

    async def _record_block(self, screening: Screening, sender_id: int, conversation_id: int) -> None:
        """A blocked send or upload: its verdict is recorded (never its content), nothing else."""

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            row = verdict_row(screening, sender_id, conversation_id, now_ms())
            verdict_id = await verdict_store.insert_verdict(conn, row)
            await self.on_screened(
                conn, sink, Screened(verdict_id, sender_id, conversation_id, None, screening)
            )

        await self._writer.run(run)
