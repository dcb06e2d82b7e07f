"""Queries on the access log's per-member blocks (its entries and heads: `store.merkle_log`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.rows import AnyRow
from keyhold.store.schema import access_log, access_log_subjects


async def append_blocks(conn: AsyncConnection, blocks: Sequence[dict[str, Any]]) -> None:
    if blocks:
        await conn.execute(access_log_subjects.insert(), list(blocks))


async def all_blocks(conn: AsyncConnection) -> Sequence[AnyRow]:
    return (await conn.execute(select(access_log_subjects).order_by(access_log_subjects.c.idx))).all()


async def visible_blocks(conn: AsyncConnection, user_id: int, now_ms: int) -> Sequence[AnyRow]:
    result = await conn.execute(
        select(access_log_subjects.c.idx, access_log_subjects.c.block, access_log.c.entry)
        .select_from(access_log_subjects.join(access_log, access_log.c.idx == access_log_subjects.c.idx))
        .where(access_log_subjects.c.user_id == user_id, access_log_subjects.c.visible_from_ms <= now_ms)
        .order_by(access_log_subjects.c.idx)
    )
    return result.all()


async def due_notifications(conn: AsyncConnection, now_ms: int) -> Sequence[AnyRow]:
    result = await conn.execute(
        select(access_log_subjects.c.idx, access_log_subjects.c.user_id).where(
            access_log_subjects.c.visible_from_ms <= now_ms, access_log_subjects.c.notified_ms.is_(None)
        )
    )
    return result.all()


async def mark_notified(conn: AsyncConnection, pairs: Sequence[tuple[int, int]], now_ms: int) -> None:
    for idx, user_id in pairs:
        await conn.execute(
            update(access_log_subjects)
            .where(access_log_subjects.c.idx == idx, access_log_subjects.c.user_id == user_id)
            .values(notified_ms=now_ms)
        )
