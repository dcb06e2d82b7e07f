"""Queries on staff accounts and staff sessions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.absent import insert_if_absent
from keyhold.store.rows import AnyRow
from keyhold.store.schema import staff, staff_sessions


async def insert_staff(conn: AsyncConnection, row: dict[str, Any]) -> int | None:
    created = (await insert_if_absent(conn, staff, row, returning=staff.c.id)).scalar_one_or_none()
    return None if created is None else int(created)


async def by_username(conn: AsyncConnection, username: str) -> AnyRow | None:
    return (await conn.execute(select(staff).where(staff.c.username == username))).first()


async def by_id(conn: AsyncConnection, staff_id: int) -> AnyRow | None:
    return (await conn.execute(select(staff).where(staff.c.id == staff_id))).first()


async def list_staff(conn: AsyncConnection) -> Sequence[AnyRow]:
    return (await conn.execute(select(staff).order_by(staff.c.id))).all()


async def update_staff(conn: AsyncConnection, staff_id: int, **values: Any) -> None:
    await conn.execute(update(staff).where(staff.c.id == staff_id).values(**values))


async def use_totp_step(conn: AsyncConnection, staff_id: int, step: int) -> bool:
    """Mark a TOTP step used, atomically; False if it (or a later one) was used already."""
    result = await conn.execute(
        update(staff).where(staff.c.id == staff_id, staff.c.last_totp_step < step).values(last_totp_step=step)
    )
    return bool(result.rowcount)


async def insert_session(
    conn: AsyncConnection, token_hash: bytes, staff_id: int, now: int, expires: int
) -> None:
    await conn.execute(
        insert(staff_sessions).values(
            token_hash=token_hash, staff_id=staff_id, created_ms=now, expires_ms=expires
        )
    )


async def session_staff(conn: AsyncConnection, token_hash: bytes) -> AnyRow | None:
    result = await conn.execute(
        select(staff_sessions.c.expires_ms, staff_sessions.c.revoked, staff)
        .select_from(staff_sessions.join(staff, staff.c.id == staff_sessions.c.staff_id))
        .where(staff_sessions.c.token_hash == token_hash)
    )
    return result.first()


async def revoke_sessions_of(conn: AsyncConnection, staff_id: int) -> int:
    result = await conn.execute(
        update(staff_sessions)
        .where(staff_sessions.c.staff_id == staff_id, staff_sessions.c.revoked.is_(False))
        .values(revoked=True)
    )
    return int(result.rowcount)


async def revoke_session(conn: AsyncConnection, token_hash: bytes) -> None:
    await conn.execute(
        update(staff_sessions).where(staff_sessions.c.token_hash == token_hash).values(revoked=True)
    )
