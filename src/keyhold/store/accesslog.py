"""Queries on the access log, its per-member blocks and the signed tree heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.rows import AnyRow
from keyhold.store.schema import access_log, access_log_subjects, tree_heads


async def all_entries(conn: AsyncConnection) -> Sequence[AnyRow]:
    return (await conn.execute(select(access_log.c.idx, access_log.c.entry).order_by(access_log.c.idx))).all()


async def entries(conn: AsyncConnection, start: int, end: int) -> Sequence[AnyRow]:
    result = await conn.execute(
        select(access_log.c.idx, access_log.c.entry)
        .where(access_log.c.idx >= start, access_log.c.idx < end)
        .order_by(access_log.c.idx)
    )
    return result.all()


async def append(
    conn: AsyncConnection, rows: Sequence[dict[str, Any]], blocks: Sequence[dict[str, Any]]
) -> None:
    await conn.execute(access_log.insert(), list(rows))
    if blocks:
        await conn.execute(access_log_subjects.insert(), list(blocks))


async def insert_head(
    conn: AsyncConnection, size: int, root: bytes, timestamp_ms: int, signature: bytes
) -> None:
    await conn.execute(
        tree_heads.insert().values(size=size, root=root, timestamp_ms=timestamp_ms, signature=signature)
    )


async def heads(conn: AsyncConnection) -> Sequence[AnyRow]:
    return (await conn.execute(select(tree_heads).order_by(tree_heads.c.size))).all()


async def latest_head(conn: AsyncConnection) -> AnyRow | None:
    return (await conn.execute(select(tree_heads).order_by(tree_heads.c.size.desc()).limit(1))).first()


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
