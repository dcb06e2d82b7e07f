"""Queries on an append-only Merkle log: its entries (leaf inputs, by index) and its signed tree
heads. Two logs share them: the access log and the key-transparency log."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.rows import AnyRow
from keyhold.store.schema import access_log, key_log, key_log_heads, tree_heads


@dataclass(frozen=True)
class LogTables:
    entries: Table  # idx, entry
    heads: Table  # size, root, timestamp_ms, signature


ACCESS_LOG = LogTables(access_log, tree_heads)
KEY_LOG = LogTables(key_log, key_log_heads)


async def all_entries(conn: AsyncConnection, log: LogTables) -> Sequence[AnyRow]:
    t = log.entries
    return (await conn.execute(select(t.c.idx, t.c.entry).order_by(t.c.idx))).all()


async def entries(conn: AsyncConnection, log: LogTables, start: int, end: int) -> Sequence[AnyRow]:
    t = log.entries
    result = await conn.execute(
        select(t.c.idx, t.c.entry).where(t.c.idx >= start, t.c.idx < end).order_by(t.c.idx)
    )
    return result.all()


async def entries_at(conn: AsyncConnection, log: LogTables, indexes: Collection[int]) -> dict[int, bytes]:
    t = log.entries
    if not indexes:
        return {}
    result = await conn.execute(select(t.c.idx, t.c.entry).where(t.c.idx.in_(sorted(indexes))))
    return {int(row.idx): bytes(row.entry) for row in result}


async def append(conn: AsyncConnection, log: LogTables, rows: Sequence[dict[str, Any]]) -> None:
    await conn.execute(log.entries.insert(), list(rows))


async def insert_head(
    conn: AsyncConnection, log: LogTables, size: int, root: bytes, timestamp_ms: int, signature: bytes
) -> None:
    await conn.execute(
        log.heads.insert().values(size=size, root=root, timestamp_ms=timestamp_ms, signature=signature)
    )


async def heads(conn: AsyncConnection, log: LogTables) -> Sequence[AnyRow]:
    return (await conn.execute(select(log.heads).order_by(log.heads.c.size))).all()


async def latest_head(conn: AsyncConnection, log: LogTables) -> AnyRow | None:
    t = log.heads
    return (await conn.execute(select(t).order_by(t.c.size.desc()).limit(1))).first()
