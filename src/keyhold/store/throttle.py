"""Queries on sign-in throttle counters: claim an attempt atomically, settle it, prune.

A claim is one conditional UPDATE, so that concurrent sign-ins (on one server or several)
cannot both take the last attempt left in a window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.schema import signin_throttle as throttle


@dataclass(frozen=True, slots=True)
class Counter:
    window_start_ms: int
    failures: int
    pending: int


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
        await conn.execute(
            select(throttle.c.window_start_ms, throttle.c.failures, throttle.c.pending).where(
                throttle.c.key == key
            )
        )
    ).first()
    if row is not None:
        return Counter(row.window_start_ms, row.failures, row.pending)
    try:
        async with conn.begin_nested():
            await conn.execute(insert(throttle).values(key=key, window_start_ms=now, failures=0, pending=1))
        return None
    except IntegrityError:  # another sign-in made the row first: claim through it
        return await claim(conn, key, limit, window_ms, now)


async def settle(conn: AsyncConnection, key: bytes, failed: bool, forgive: bool = False) -> None:
    """End an attempt: count it as a failure, or (`forgive`, a success) clear the failures."""
    values: dict[str, Any] = {"pending": case((throttle.c.pending > 0, throttle.c.pending - 1), else_=0)}
    if failed:
        values["failures"] = throttle.c.failures + 1
    elif forgive:
        values["failures"] = 0
    await conn.execute(update(throttle).where(throttle.c.key == key).values(values))


async def prune(conn: AsyncConnection, older_than_ms: int) -> int:
    """Forget counters whose window ended and that have nothing in progress."""
    result = await conn.execute(
        delete(throttle).where(throttle.c.window_start_ms < older_than_ms, throttle.c.pending == 0)
    )
    return int(result.rowcount)
