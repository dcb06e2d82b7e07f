"""Disappearing messages, in both models: a member sets a conversation's timer; each message
sent while it is set gets an expiry; a sweep deletes expired messages through `Erasure`, as a
sender's delete would (so a preservation hold keeps them, hidden, until it ends), tells the
members (`message.deleted`), and in `standard` conversations shreds a key epoch's key once
nothing it sealed is left. Clients delete their own copies when they see the deletion.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.clock import now_ms
from keyhold.core.erasure import Erasure
from keyhold.core.keys import ConversationKeys
from keyhold.core.retrying import run_periodically
from keyhold.core.writer import EventSink, Writer
from keyhold.store import keys as key_store
from keyhold.store import messages as message_store

log = logging.getLogger("keyhold.disappearing")
SWEEP_SECONDS = 1.0
SWEEP_BATCH = 500
# A timer: from a second to a year, or off.
MIN_TIMER_S, MAX_TIMER_S = 1, 365 * 24 * 3600


class DisappearingMessages:
    def __init__(self, writer: Writer, erasure: Erasure, keys: ConversationKeys) -> None:
        self._writer = writer
        self._erasure = erasure
        self._keys = keys
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(
            run_periodically(SWEEP_SECONDS, self.sweep, log, "deleting disappearing messages"),
            name="keyhold-disappearing-messages",
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def sweep(self) -> int:
        """Delete the messages whose time is up (a batch); how many."""

        async def run(conn: AsyncConnection, sink: EventSink) -> tuple[int, set[int]]:
            now = now_ms()
            rows = await message_store.expired(conn, now, SWEEP_BATCH)
            if not rows:
                return 0, set()
            await self._erasure.erase(conn, sink, rows, now)
            members = await conn.run_sync(message_store.active_members, {r.conversation_id for r in rows})
            await self._erasure.announce(conn, sink, rows, members)
            sealed = {(r.conversation_id, r.epoch) for r in rows if r.kind != "e2ee"}
            shredded = set()
            for conversation_id, epoch in await message_store.spent_epochs(conn, sealed):
                await key_store.shred(conn, conversation_id, now, epoch)
                shredded.add(conversation_id)
            return len(rows), shredded

        count, shredded = await self._writer.run(run)
        for conversation_id in shredded:
            self._keys.forget_conversation(conversation_id)  # no copy of a shredded key stays
        return count
