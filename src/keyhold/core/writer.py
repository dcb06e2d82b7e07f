"""The single writer: every change that produces user events is committed here, in order.

Why one writer: each user's events carry a strictly increasing `seq`, and a reconnecting
client asks for "everything after seq N". That is only sound if seq order is commit order, so
the writer both assigns seqs and commits, one transaction at a time. Sends arriving while a
transaction is in flight are committed together in the next one (group commit): one fsync
carries hundreds of messages, and each sender is acknowledged only after that commit.
Events are published to the bus only after their commit.

A batch of sends runs as synchronous code in one transaction on the writer's database thread
(`store.db.Transactions`): one trip there and back per batch. Other jobs are async functions
on the async engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.bus.base import Bus
from keyhold.clock import now_ms
from keyhold.core.errors import invalid, unavailable
from keyhold.store import events as event_store
from keyhold.store.db import Transactions, refused_as_data, storage_unavailable

log = logging.getLogger("keyhold.writer")
T = TypeVar("T")
RETRY_SAME_KEY = "retry with the same idempotency key"


@dataclass
class PendingEvent:
    """An event for some users. `data` is stored; `message` (plaintext) is only sent live."""

    user_ids: list[int]
    type: str
    conversation_id: int | None = None
    message_id: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    message_json: bytes | None = None
    # The stream connection this event answers (see `bus.base.Bus.publish`); 0 for none.
    origin: int = 0
    # For this one of the users' devices only; None for all of them.
    device_id: str | None = None


class EventSink:
    """What a write job produces besides rows: events, and what to do once it commits or fails
    (in-memory state that must follow the transaction, like the access log's tree)."""

    def __init__(self) -> None:
        self.pending: list[PendingEvent] = []
        self.on_commit: list[Callable[[], None]] = []
        self.on_rollback: list[Callable[[], None]] = []

    def add(self, event: PendingEvent) -> None:
        if event.user_ids:
            self.pending.append(event)


def render_event(event: PendingEvent, seq: int) -> bytes:
    body: dict[str, Any] = {"type": event.type, "seq": seq, **event.data}
    if event.conversation_id is not None:
        body["conversation_id"] = event.conversation_id
    if event.message_json is not None:
        body["message"] = orjson.Fragment(event.message_json)
    return orjson.dumps(body)


BatchHandler = Callable[[Connection, list[Any], EventSink], list[Any]]
# What a transaction publishes once committed: (user, seq, rendered event, origin, device) and
# the users' new seq counters.
Published = tuple[list[tuple[int, int, bytes, int, str | None]], dict[int, int]]


@dataclass
class _Job:
    run: Callable[[AsyncConnection, EventSink], Awaitable[Any]] | None
    batchable: Any = None
    done: Callable[[Any], None] | None = None
    future: asyncio.Future[Any] | None = None
    answered: bool = False


class Writer:
    def __init__(self, engine: AsyncEngine, transactions: Transactions, bus: Bus, batch_max: int) -> None:
        self._engine = engine
        self._transactions = transactions
        self._bus = bus
        self._batch_max = batch_max
        self._queue: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._seqs: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._batch_handler: BatchHandler | None = None
        self.on_conflict: list[Callable[[], Awaitable[None]]] = []

    def set_batch_handler(self, handler: BatchHandler) -> None:
        """The function that commits a batch of sends (core.messages registers it)."""
        self._batch_handler = handler

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="keyhold-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop: nothing accepted for writing is dropped."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await self._transactions.close()

    def submit(self, item: Any, done: Callable[[Any], None]) -> None:
        """Queue one send; `done` gets its result or a `Problem` after the commit."""
        if self._stopping:
            done(unavailable("the server is shutting down; retry with the same idempotency key"))
            return
        self._queue.append(_Job(run=None, batchable=item, done=done))
        self._wakeup.set()

    async def run(self, fn: Callable[[AsyncConnection, EventSink], Awaitable[T]]) -> T:
        """Run `fn` in its own transaction, in order with all other writes; return its result."""
        if self._stopping:
            raise unavailable("the server is shutting down")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(run=fn, future=future))
        self._wakeup.set()
        return await future

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            job = self._queue.popleft()
            batch = [job]
            if job.run is None:
                while self._queue and self._queue[0].run is None and len(batch) < self._batch_max:
                    batch.append(self._queue.popleft())
            try:
                await (self._run_one(job) if job.run is not None else self._run_batch(batch))
            except Exception:
                # A bug past the transaction (an after-commit hook, a publish) must not stop
                # the writer: every later write would wait for ever.
                log.exception("the writer failed past a transaction; it goes on")
                self._fail_unanswered(batch)

    @staticmethod
    def _fail_unanswered(batch: list[_Job]) -> None:
        # Committed or not, a retry with the same idempotency key is safe.
        for job in batch:
            if job.future is not None and not job.future.done():
                job.future.set_exception(unavailable("the write failed; retry"))
            elif job.done is not None and not job.answered:
                job.answered = True
                job.done(unavailable(f"the message may not be stored; {RETRY_SAME_KEY}"))

    async def _run_one(self, job: _Job, retried: bool = False) -> None:
        assert job.run is not None and job.future is not None
        sink = EventSink()
        try:
            async with self._engine.begin() as conn:
                result = await job.run(conn, sink)
                published = await conn.run_sync(self._write_events, sink)
        except Exception as exc:
            for undo in sink.on_rollback:
                undo()
            if isinstance(exc, IntegrityError) and not retried:
                await self._reload_after_conflict()
                await self._run_one(job, retried=True)
                return
            if not job.future.done():
                job.future.set_exception(exc)
            return
        for hook in sink.on_commit:
            hook()
        self._after_commit(published)
        if not job.future.done():
            job.future.set_result(result)

    async def _run_batch(self, batch: list[_Job], retried: bool = False) -> None:
        """Commit a batch of sends. If it fails for a reason other than storage being away,
        the failing send is isolated: the batch is split and each half committed on its own,
        so that one bad item fails only itself and every other send is acknowledged."""
        handler = self._batch_handler
        assert handler is not None
        sink = EventSink()
        items = [j.batchable for j in batch]

        def transaction(conn: Connection) -> tuple[list[Any], Published]:
            results = handler(conn, items, sink)
            return results, self._write_events(conn, sink)

        try:
            results, published = await self._transactions.run(transaction)
        except Exception as exc:
            if isinstance(exc, IntegrityError) and not retried:
                await self._reload_after_conflict()
                await self._run_batch(batch, retried=True)
            elif storage_unavailable(exc):
                log.warning("storage unavailable; %d send(s) refused with 503: %s", len(batch), type(exc).__name__)
                self._answer(batch, [unavailable(f"storage is unavailable; {RETRY_SAME_KEY}") for _ in batch])
            elif len(batch) > 1:
                middle = len(batch) // 2
                await self._run_batch(batch[:middle], retried)
                await self._run_batch(batch[middle:], retried)
            else:
                # Never the exception's text: it could quote the item (hide_parameters keeps
                # the SQL parameters out, the database's own message may not).
                log.error("a send failed to commit and was refused: %s", type(exc).__name__)
                refusal = (
                    invalid("the message could not be stored as sent")
                    if refused_as_data(exc)
                    else unavailable(f"the message could not be stored; {RETRY_SAME_KEY}")
                )
                self._answer(batch, [refusal])
            return
        self._after_commit(published)
        self._answer(batch, results)

    @staticmethod
    def _answer(batch: list[_Job], results: list[Any]) -> None:
        for job, result in zip(batch, results, strict=True):
            assert job.done is not None
            job.answered = True
            job.done(result)

    async def _reload_after_conflict(self) -> None:
        """Another process may have appended events or log entries: reload what is cached
        (event counters here; registered hooks for the rest) before retrying once."""
        log.warning("write conflict; reloading cached state from storage and retrying once")
        self._seqs.clear()
        for reload in self.on_conflict:
            await reload()

    def _write_events(self, conn: Connection, sink: EventSink) -> Published:
        """Store the sink's events, each user's numbered on from their last seq. Synchronous:
        it runs in the batch's transaction on the database thread, or through `run_sync`."""
        if not sink.pending:
            return [], {}
        users = {uid for ev in sink.pending for uid in ev.user_ids}
        missing = [uid for uid in users if uid not in self._seqs]
        known = event_store.last_seqs(conn, missing) if missing else {}
        # Counters advance in a copy: a failed transaction leaves the cache untouched.
        seqs = {uid: known[uid] if uid in known else self._seqs[uid] for uid in users}
        rows: list[tuple[Any, ...]] = []
        published: list[tuple[int, int, bytes, int, str | None]] = []
        created = now_ms()
        for ev in sink.pending:
            data = orjson.dumps(ev.data).decode()
            for uid in ev.user_ids:
                seq = seqs[uid] = seqs[uid] + 1
                # In store.events.EVENT_COLUMNS order.
                rows.append((uid, seq, ev.type, ev.conversation_id, ev.message_id, data, created, ev.device_id))
                published.append((uid, seq, render_event(ev, seq), ev.origin, ev.device_id))
        event_store.append(conn, rows)
        event_store.store_seqs(conn, seqs)
        return published, seqs

    def _after_commit(self, published: Published) -> None:
        events, seqs = published
        self._seqs.update(seqs)
        for uid, seq, payload, origin, device in events:
            self._bus.publish(uid, seq, payload, origin, device)

