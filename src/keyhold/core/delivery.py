"""Rendering stored events for a reconnecting client (replay after `since`)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.core.accounts import Member
from keyhold.core.messages import MessageService
from keyhold.core.writer import PendingEvent, render_event
from keyhold.store import conversations as conversation_store
from keyhold.store import events as event_store
from keyhold.store import messages as message_store


class Replayer:
    def __init__(self, engine: AsyncEngine, messages: MessageService, page_size: int) -> None:
        self._engine = engine
        self._messages = messages
        self._page_size = page_size

    async def latest_seq(self, member: Member) -> int:
        async with self._engine.connect() as conn:
            return (await event_store.last_seqs(conn, [member.id])).get(member.id, 0)

    async def page(self, member: Member, after_seq: int) -> list[tuple[int, bytes]]:
        """The next page of the member's events after `after_seq`, rendered as sent live.

        Content is opened only for conversations the member still belongs to: an event from a
        conversation they have left is still delivered (so that seq stays gap-free) but with
        `message: null`.
        """
        async with self._engine.connect() as conn:
            rows = await event_store.page_after(conn, member.id, after_seq, self._page_size)
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
