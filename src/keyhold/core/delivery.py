"""Delivery to a member's stream: every event after `since`, replayed from storage, then live
from the bus, each exactly once and in `seq` order.

Subscribed first, replayed second: anything committed meanwhile is queued in the subscription
and skipped if the replay already carried it. Live events then go straight from the bus to the
stream's outbox. A subscriber that falls too far behind is cut off (the stream ends) and
resumes from storage with `since`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.bus.base import Bus
from keyhold.core.accounts import Member
from keyhold.core.messages import MessageService
from keyhold.core.writer import PendingEvent, render_event
from keyhold.store import conversations as conversation_store
from keyhold.store import events as event_store
from keyhold.store import messages as message_store

# Frames a stream gets right after `ready`, made for its member at the position reached (a
# seam: end-to-end encryption tells each connection its device's one-time key counts).
Greeting = Callable[[Member, int], Awaitable[bytes | None]]


class Delivery:
    def __init__(self, engine: AsyncEngine, bus: Bus, messages: MessageService, page_size: int) -> None:
        self._engine = engine
        self._bus = bus
        self._messages = messages
        self._page_size = page_size
        self.greetings: list[Greeting] = []

    async def position(self, member: Member, since: int | None) -> int:
        """Where a stream starts: after `since`, or after everything so far when `since` is
        None (live only). A position ahead of the log (a client of a restored server) would
        silence the stream: it is brought back to the log's end. The device's own events up to
        there (to-device messages) are then deleted: it has reconnected past them."""
        async with self._engine.connect() as conn:
            latest = (await conn.run_sync(event_store.last_seqs, [member.id])).get(member.id, 0)
            position = latest if since is None else min(since, latest)
            # A read first: most connections have nothing to forget, and need no write.
            stale = member.device_id is not None and await event_store.any_delivered(
                conn, member.id, member.device_id, position
            )
        if stale and member.device_id is not None:
            async with self._engine.begin() as conn:
                await event_store.forget_delivered(conn, member.id, member.device_id, position)
        return position

    async def deliver(
        self,
        member: Member,
        since: int,
        origin: int,
        push: Callable[[bytes], None],
        room: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """Push the member's events after `since` as rendered frames: the replay, a `ready`
        frame with the position reached, then live events as they are published (those that
        answer `origin`, the stream's own sends, left out). Returns when the subscription is
        cut off (the member fell behind); the caller cancels it to stop. `room`: awaited before
        each frame of the replay, so that it goes at the client's pace instead of into memory (a
        long history to a client that reads slowly, or not at all; a page of 500 frames can be
        too much to hold at once); False ends the delivery (the connection is ending)."""
        subscription = self._bus.subscribe(member.id, origin, member.device_id)
        try:
            last = since
            while True:
                page = await self.page(member, last)
                for seq, payload in page:
                    if room is not None and not await room():
                        return
                    push(payload)
                    last = seq
                if len(page) < self._page_size:
                    break
            push(orjson.dumps({"type": "ready", "seq": last}))
            replayed = last
            for greeting in self.greetings:
                frame = await greeting(member, last)
                if frame is not None:
                    push(frame)

            def live(seq: int, payload: bytes) -> None:
                if seq > replayed:  # committed during the replay: sent already
                    push(payload)

            subscription.forward(live)
            await subscription.wait_closed()
        finally:
            subscription.close()

    async def page(self, member: Member, after_seq: int) -> list[tuple[int, bytes]]:
        """The next page of the member's events after `after_seq`, rendered as sent live.

        Content is opened only for conversations the member still belongs to: an event from a
        conversation they have left is still delivered (so that seq stays gap-free) but with
        `message: null`.
        """
        async with self._engine.connect() as conn:
            rows = await event_store.page_after(conn, member.id, member.device_id, after_seq, self._page_size)
            message_ids = [r.message_id for r in rows if r.type == "message.new" and r.message_id]
            found = await message_store.by_ids(conn, message_ids) if message_ids else {}
            memberships: dict[int, bool] = {}
            rendered: dict[int, bytes] = {}
            for mid, row in found.items():
                cid = row.conversation_id
                if cid not in memberships:
                    m = await conversation_store.membership(conn, cid, member.id)
                    memberships[cid] = m is not None and m.left_ms is None
                if memberships[cid]:
                    opened = await self._messages.render_for_member(conn, [row])
                    rendered[mid] = orjson.dumps(opened[0])
        out: list[tuple[int, bytes]] = []
        for r in rows:
            data: dict[str, Any] = orjson.loads(r.data)
            event = PendingEvent(
                user_ids=[member.id],
                type=r.type,
                conversation_id=r.conversation_id,
                message_id=r.message_id,
                data=data,
                message_json=rendered.get(r.message_id, b"null") if r.type == "message.new" else None,
            )
            out.append((r.seq, render_event(event, r.seq)))
        return out
