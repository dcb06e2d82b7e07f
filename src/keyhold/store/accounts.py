"""Queries on users, sessions and follows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.rows import AnyRow
from keyhold.store.schema import follows, sessions, users

USER_COLUMNS = (
    users.c.id,
    users.c.username,
    users.c.display_name,
    users.c.region,
    users.c.birthdate,
    users.c.created_ms,
    users.c.disabled,
    users.c.deleted_ms,
    users.c.suspended_until_ms,
)


async def insert_user(conn: AsyncConnection, row: dict[str, Any]) -> int | None:
    """New user id, or None if the username is taken."""
    try:
        async with conn.begin_nested():
            result = await conn.execute(insert(users).values(**row).returning(users.c.id))
            return int(result.scalar_one())
    except IntegrityError:
        return None


async def by_username(conn: AsyncConnection, username: str) -> AnyRow | None:
    result = await conn.execute(
        select(*USER_COLUMNS, users.c.password_hash).where(users.c.username == username)
    )
    return result.first()


async def by_usernames(conn: AsyncConnection, usernames: Sequence[str]) -> dict[str, AnyRow]:
    result = await conn.execute(select(*USER_COLUMNS).where(users.c.username.in_(list(usernames))))
    return {row.username: row for row in result}


async def by_id(conn: AsyncConnection, user_id: int) -> AnyRow | None:
    result = await conn.execute(select(*USER_COLUMNS, users.c.password_hash).where(users.c.id == user_id))
    return result.first()


async def list_users(conn: AsyncConnection, after_id: int, limit: int) -> Sequence[AnyRow]:
    result = await conn.execute(
        select(*USER_COLUMNS).where(users.c.id > after_id).order_by(users.c.id).limit(limit)
    )
    return result.all()


async def update_user(conn: AsyncConnection, user_id: int, **values: Any) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(**values))


async def insert_session(
    conn: AsyncConnection, token_hash: bytes, user_id: int, now: int, expires: int
) -> None:
    await conn.execute(
        insert(sessions).values(token_hash=token_hash, user_id=user_id, created_ms=now, expires_ms=expires)
    )


async def session_user(conn: AsyncConnection, token_hash: bytes) -> AnyRow | None:
    result = await conn.execute(
        select(sessions.c.expires_ms, sessions.c.revoked, *USER_COLUMNS)
        .select_from(sessions.join(users, users.c.id == sessions.c.user_id))
        .where(sessions.c.token_hash == token_hash)
    )
    return result.first()


async def revoke_session(conn: AsyncConnection, token_hash: bytes) -> None:
    await conn.execute(update(sessions).where(sessions.c.token_hash == token_hash).values(revoked=True))


async def revoke_all_sessions(conn: AsyncConnection, user_id: int) -> int:
    result = await conn.execute(
        update(sessions)
        .where(sessions.c.user_id == user_id, sessions.c.revoked.is_(False))
        .values(revoked=True)
    )
    return int(result.rowcount)


async def add_follow(conn: AsyncConnection, follower_id: int, followee_id: int, now: int) -> None:
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(follows).values(follower_id=follower_id, followee_id=followee_id, created_ms=now)
            )
    except IntegrityError:
        pass  # already following: following is idempotent


async def remove_follow(conn: AsyncConnection, follower_id: int, followee_id: int) -> None:
    await conn.execute(
        delete(follows).where(follows.c.follower_id == follower_id, follows.c.followee_id == followee_id)
    )


async def remove_all_follows(conn: AsyncConnection, user_id: int) -> None:
    await conn.execute(
        delete(follows).where((follows.c.follower_id == user_id) | (follows.c.followee_id == user_id))
    )


async def following(conn: AsyncConnection, user_id: int) -> list[str]:
    result = await conn.execute(
        select(users.c.username)
        .select_from(follows.join(users, users.c.id == follows.c.followee_id))
        .where(follows.c.follower_id == user_id)
        .order_by(users.c.username)
    )
    return [row[0] for row in result]


async def followers(conn: AsyncConnection, user_id: int) -> list[str]:
    result = await conn.execute(
        select(users.c.username)
        .select_from(follows.join(users, users.c.id == follows.c.follower_id))
        .where(follows.c.followee_id == user_id)
        .order_by(users.c.username)
    )
    return [row[0] for row in result]


async def friends(conn: AsyncConnection, user_id: int) -> list[str]:
    back = follows.alias("back")
    result = await conn.execute(
        select(users.c.username)
        .select_from(
            follows.join(
                back,
                and_(
                    back.c.follower_id == follows.c.followee_id, back.c.followee_id == follows.c.follower_id
                ),
            ).join(users, users.c.id == follows.c.followee_id)
        )
        .where(follows.c.follower_id == user_id)
        .order_by(users.c.username)
    )
    return [row[0] for row in result]
