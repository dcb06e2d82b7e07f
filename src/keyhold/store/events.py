"""Queries on the per-user event log and its sequence counters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from keyhold.store.db import insert_tuples
from keyhold.store.rows import AnyRow
from keyhold.store.schema import events, users

# The order of an event row's values (see `append`).
EVENT_COLUMNS = ("user_id", "seq", "type", "conversation_id", "message_id", "data", "created_ms", "device_id")


def last_seqs(conn: Connection, user_ids: Iterable[int]) -> dict[int, int]:
    result = conn.execute(select(users.c.id, users.c.event_seq).where(users.c.id.in_(list(user_ids))))
    return {row.id: row.event_seq for row in result}


def append(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Event rows as tuples in `EVENT_COLUMNS` order."""
    insert_tuples(conn, events, EVENT_COLUMNS, rows)


_SET_SEQ = update(users).where(users.c.id == bindparam("uid")).values(event_seq=bindparam("new_seq"))


def store_seqs(conn: Connection, seqs: dict[int, int]) -> None:
    conn.execute(_SET_SEQ, [{"uid": uid, "new_seq": seq} for uid, seq in seqs.items()])


async def page_after(
    conn: AsyncConnection, user_id: int, device_id: str | None, after_seq: int, limit: int
) -> Sequence[AnyRow]:
    """The user's events after `after_seq`: those for all their devices and those for this one."""
    for_device: ColumnElement[bool] = events.c.device_id.is_(None)
    if device_id is not None:
        for_device = or_(for_device, events.c.device_id == device_id)
    result = await conn.execute(
        select(events.c.seq, events.c.type, events.c.conversation_id, events.c.message_id, events.c.data)
        .where(events.c.user_id == user_id, events.c.seq > after_seq, for_device)
        .order_by(events.c.seq)
        .limit(limit)
    )
    return result.all()


async def any_delivered(conn: AsyncConnection, user_id: int, device_id: str, upto_seq: int) -> bool:
    """Whether the device has events of its own at or before `upto_seq` (to forget)."""
    result = await conn.execute(
        select(events.c.seq)
        .where(events.c.user_id == user_id, events.c.device_id == device_id, events.c.seq <= upto_seq)
        .limit(1)
    )
    return result.first() is not None


async def forget_delivered(conn: AsyncConnection, user_id: int, device_id: str, upto_seq: int) -> None:
    """The device reconnected past these events of its own: they are not kept any longer."""
    await conn.execute(
        delete(events).where(events.c.user_id == user_id, events.c.device_id == device_id, events.c.seq <= upto_seq)
    )
