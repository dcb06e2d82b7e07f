"""Queries on guardian links (a guardian and a teen who both accepted)."""

from __future__ import annotations

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.absent import insert_if_absent
from keyhold.store.rows import AnyRow
from keyhold.store.schema import guardian_links, users


async def propose(conn: AsyncConnection, guardian_id: int, teen_id: int, accepted_column: str, now: int) -> None:
    """Create the link if absent, and record this side's acceptance."""
    await insert_if_absent(conn, guardian_links, {"guardian_id": guardian_id, "teen_id": teen_id, "created_ms": now})
    await conn.execute(
        update(guardian_links)
        .where(guardian_links.c.guardian_id == guardian_id, guardian_links.c.teen_id == teen_id)
        .values({accepted_column: now})
    )


async def remove(conn: AsyncConnection, guardian_id: int, teen_id: int) -> bool:
    result = await conn.execute(
        delete(guardian_links).where(guardian_links.c.guardian_id == guardian_id, guardian_links.c.teen_id == teen_id)
    )
    return bool(result.rowcount)


async def links_of(conn: AsyncConnection, user_id: int) -> list[AnyRow]:
    """Every link the user is on either side of, with both usernames."""
    guardian = users.alias("guardian")
    teen = users.alias("teen")
    result = await conn.execute(
        select(
            guardian_links.c.guardian_id,
            guardian_links.c.teen_id,
            guardian.c.username.label("guardian"),
            teen.c.username.label("teen"),
            guardian_links.c.created_ms,
            guardian_links.c.guardian_accepted_ms,
            guardian_links.c.teen_accepted_ms,
            guardian_links.c.dm_audience,
        )
        .select_from(
            guardian_links.join(guardian, guardian.c.id == guardian_links.c.guardian_id).join(
                teen, teen.c.id == guardian_links.c.teen_id
            )
        )
        .where(or_(guardian_links.c.guardian_id == user_id, guardian_links.c.teen_id == user_id))
        .order_by(guardian_links.c.created_ms)
    )
    return list(result.all())


async def set_audience(conn: AsyncConnection, guardian_id: int, teen_id: int, audience: str) -> None:
    await conn.execute(
        update(guardian_links)
        .where(guardian_links.c.guardian_id == guardian_id, guardian_links.c.teen_id == teen_id)
        .values(dm_audience=audience)
    )
