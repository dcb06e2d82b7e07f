"""Queries on wrapped conversation keys (DEK epochs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.rows import AnyRow
from keyhold.store.schema import conversation_keys as ck

# Synchronous: a new epoch can start inside a batch of sends (see `store.messages`).


def insert_wraps(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    conn.execute(ck.insert(), list(rows))


def wraps_for(conn: Connection, conversation_id: int, epoch: int) -> Sequence[AnyRow]:
    result = conn.execute(
        select(ck.c.region, ck.c.kek_version, ck.c.wrapped_dek).where(
            ck.c.conversation_id == conversation_id, ck.c.epoch == epoch
        )
    )
    return result.all()


async def wraps_page(conn: AsyncConnection, after: tuple[int, int, str], limit: int) -> Sequence[AnyRow]:
    """Live (unshredded) wraps in primary-key order, for rewrapping after a KEK rotation."""
    c_id, epoch, region = after
    result = await conn.execute(
        select(ck.c.conversation_id, ck.c.epoch, ck.c.region, ck.c.kek_version, ck.c.wrapped_dek)
        .where(ck.c.wrapped_dek.is_not(None))
        .where(
            (ck.c.conversation_id > c_id)
            | ((ck.c.conversation_id == c_id) & (ck.c.epoch > epoch))
            | ((ck.c.conversation_id == c_id) & (ck.c.epoch == epoch) & (ck.c.region > region))
        )
        .order_by(ck.c.conversation_id, ck.c.epoch, ck.c.region)
        .limit(limit)
    )
    return result.all()


async def replace_wrap(
    conn: AsyncConnection, conversation_id: int, epoch: int, region: str, kek_version: int, blob: bytes
) -> None:
    await conn.execute(
        update(ck)
        .where(ck.c.conversation_id == conversation_id, ck.c.epoch == epoch, ck.c.region == region)
        .values(kek_version=kek_version, wrapped_dek=blob)
    )


async def counts_by_version(conn: AsyncConnection) -> Sequence[AnyRow]:
    result = await conn.execute(
        select(ck.c.region, ck.c.kek_version, func.count())
        .where(ck.c.wrapped_dek.is_not(None))
        .group_by(ck.c.region, ck.c.kek_version)
        .order_by(ck.c.region, ck.c.kek_version)
    )
    return result.all()


async def count_live(conn: AsyncConnection) -> int:
    result = await conn.execute(select(func.count()).select_from(ck).where(ck.c.wrapped_dek.is_not(None)))
    return int(result.scalar_one())


async def shred(conn: AsyncConnection, conversation_id: int, at_ms: int, epoch: int | None = None) -> int:
    """Destroy wrapped DEKs: the content they sealed can never be opened again."""
    query = update(ck).where(ck.c.conversation_id == conversation_id, ck.c.wrapped_dek.is_not(None))
    if epoch is not None:
        query = query.where(ck.c.epoch == epoch)
    result = await conn.execute(query.values(wrapped_dek=None, shredded_ms=at_ms))
    return int(result.rowcount)
