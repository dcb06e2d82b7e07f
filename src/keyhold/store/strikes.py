"""Queries on strikes, and on the moderation notices a member was sent (their events)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.rows import AnyRow
from keyhold.store.schema import events, strikes, users

NOTICE_TYPES = ("moderation.action", "moderation.strike")


async def insert_strike(conn: AsyncConnection, row: dict[str, Any]) -> int:
    return int((await conn.execute(insert(strikes).values(**row).returning(strikes.c.id))).scalar_one())


async def active_count(conn: AsyncConnection, user_id: int, now_ms: int) -> int:
    result = await conn.execute(
        select(func.count()).where(strikes.c.user_id == user_id, strikes.c.expires_ms > now_ms)
    )
    return int(result.scalar_one())


async def active_of(conn: AsyncConnection, user_ids: Sequence[int], now_ms: int) -> Sequence[AnyRow]:
    """The unexpired strikes of these members, oldest first."""
    result = await conn.execute(
        select(strikes)
        .where(strikes.c.user_id.in_(list(user_ids)), strikes.c.expires_ms > now_ms)
        .order_by(strikes.c.user_id, strikes.c.created_ms, strikes.c.id)
    )
    return result.all()


async def delete_of_case(conn: AsyncConnection, case_id: int) -> int:
    return int((await conn.execute(delete(strikes).where(strikes.c.case_id == case_id))).rowcount)


async def delete_strike(conn: AsyncConnection, strike_id: int) -> int:
    return int((await conn.execute(delete(strikes).where(strikes.c.id == strike_id))).rowcount)


async def notices(conn: AsyncConnection, user_id: int, limit: int) -> Sequence[AnyRow]:
    """The moderation events a member was sent, newest first."""
    result = await conn.execute(
        select(events.c.seq, events.c.type, events.c.data, events.c.created_ms)
        .where(events.c.user_id == user_id, events.c.type.in_(NOTICE_TYPES))
        .order_by(events.c.seq.desc())
        .limit(limit)
    )
    return result.all()


async def lift_suspension(conn: AsyncConnection, user_id: int, until_ms: int) -> bool:
    """End the member's suspension if it is still the one that ran to `until_ms` (a later,
    longer one stays); whether it ended."""
    result = await conn.execute(
        update(users)
        .where(users.c.id == user_id, users.c.suspended_until_ms == until_ms)
        .values(suspended_until_ms=0)
    )
    return bool(result.rowcount)
