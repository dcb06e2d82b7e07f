"""Queries on sign-in throttle counters: claim an attempt atomically, settle it, prune.

A claim is one conditional UPDATE, so that concurrent sign-ins (on one server or several)
cannot both take the last attempt left in a window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.absent import insert_if_absent
from keyhold.store.schema import signin_known as known
from keyhold.store.schema import signin_throttle as throttle


@dataclass(frozen=True, slots=True)
class Counter:
    window_start_ms: int
    failures: int


async def claim(conn: AsyncConnection, key: bytes, limit: int, window_ms: int, now: int) -> Counter | None:
    """Take one attempt for `key`: None when taken, else the counter that refused it (its
    failures reached `limit`, or failures and attempts in progress did together)."""
    expired = throttle.c.window_start_ms <= now - window_ms
    taken = await conn.execute(
        update(throttle)
        .where(throttle.c.key == key, or_(expired, throttle.c.failures + throttle.c.pending < limit))
        .values(
            failures=case((expired, 0), else_=throttle.c.failures),
            # A new window forgets attempts left pending by a process that died mid-sign-in.
            pending=case((expired, 1), else_=throttle.c.pending + 1),
            window_start_ms=case((expired, now), else_=throttle.c.window_start_ms),
        )
    )
    if taken.rowcount:
        return None
    row = (
        await conn.execute(select(throttle.c.window_start_ms, throttle.c.failures).where(throttle.c.key == key))
    ).first()
    if row is not None:
        return Counter(row.window_start_ms, row.failures)
    made = {"key": key, "window_start_ms": now, "failures": 0, "pending": 1}
    if (await insert_if_absent(conn, throttle, made)).rowcount:
        return None
    return await claim(conn, key, limit, window_ms, now)  # another sign-in made the row first


async def settle(conn: AsyncConnection, key: bytes, failed: bool, forgive: bool = False) -> None:
    """End an attempt: count it as a failure, or (`forgive`, a success) clear the failures."""
    values: dict[str, Any] = {"pending": case((throttle.c.pending > 0, throttle.c.pending - 1), else_=0)}
    if failed:
        values["failures"] = throttle.c.failures + 1
    elif forgive:
        values["failures"] = 0
    await conn.execute(update(throttle).where(throttle.c.key == key).values(values))


async def known_since(conn: AsyncConnection, key: bytes, since_ms: int) -> bool:
    """Whether this (address, account) pair signed in successfully since `since_ms`."""
    result = await conn.execute(select(known.c.key).where(known.c.key == key, known.c.last_ms >= since_ms))
    return result.first() is not None


async def remember(conn: AsyncConnection, key: bytes, now: int) -> None:
    if not (await conn.execute(update(known).where(known.c.key == key).values(last_ms=now))).rowcount:
        await insert_if_absent(conn, known, {"key": key, "last_ms": now})  # or a concurrent success did


async def prune(conn: AsyncConnection, windows_before_ms: int, known_before_ms: int) -> int:
    """Forget counters whose window ended (with nothing in progress) and stale known pairs."""
    counters = await conn.execute(
        delete(throttle).where(throttle.c.window_start_ms < windows_before_ms, throttle.c.pending == 0)
    )
    pairs = await conn.execute(delete(known).where(known.c.last_ms < known_before_ms))
    return int(counters.rowcount) + int(pairs.rowcount)
