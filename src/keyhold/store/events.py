"""Queries on the per-user event log and its sequence counters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.db import insert_tuples
from keyhold.store.rows import AnyRow
from keyhold.store.schema import events, users

# The order of an event row's values (see `append`).
EVENT_COLUMNS = ("user_id", "seq", "type", "conversation_id", "message_id", "data", "created_ms")


def last_seqs(conn: Connection, user_ids: Iterable[int]) -> dict[int, int]:
    result = conn.execute(select(users.c.id, users.c.event_seq).where(users.c.id.in_(list(user_ids))))
    return {row.id: row.event_seq for row in result}


def append(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Event rows as tuples in `EVENT_COLUMNS` order."""
    insert_tuples(conn, events, EVENT_COLUMNS, rows)


_SET_SEQ = update(users).where(users.c.id == bindparam("uid")).values(event_seq=bindparam("new_seq"))


def store_seqs(conn: Connection, seqs: dict[int, int]) -> None:
    conn.execute(_SET_SEQ, [{"uid": uid, "new_seq": seq} for uid, seq in seqs.items()])


async def page_after(conn: AsyncConnection, user_id: int, after_seq: int, limit: int) -> Sequence[AnyRow]:
    result = await conn.execute(
        select(events.c.seq, events.c.type, events.c.conversation_id, events.c.message_id, events.c.data)
        .where(events.c.user_id == user_id, events.c.seq > after_seq)
        .order_by(events.c.seq)
        .limit(limit)
    )
    return result.all()
