"""Queries on users, sessions and follows."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    LargeBinary,
    String,
    and_,
    bindparam,
    delete,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from keyhold.store.absent import insert_if_absent
from keyhold.store.db import DriverStatement, db_now_ms
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
    created = (await insert_if_absent(conn, users, row, returning=users.c.id)).scalar_one_or_none()
    return None if created is None else int(created)


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


async def replace_password(conn: AsyncConnection, user_id: int, verified_hash: str, new_hash: str) -> bool:
    """Set a new password hash if the old one is still `verified_hash` (False otherwise)."""
    result = await conn.execute(
        update(users)
        .where(users.c.id == user_id, users.c.password_hash == verified_hash)
        .values(password_hash=new_hash)
    )
    return bool(result.rowcount)


async def update_user(conn: AsyncConnection, user_id: int, **values: Any) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(**values))


async def insert_session(
    conn: AsyncConnection, token_hash: bytes, user_id: int, verified_hash: str, now: int, expires: int, device_id: str
) -> bool:
    """A new session, only if the password it was verified against is still the account's: a
    password change that commits meanwhile leaves nothing behind (on PostgreSQL the row lock
    orders the two; on SQLite the one statement is atomic). False if it changed."""
    still = (
        select(
            literal(token_hash, LargeBinary()),
            users.c.id,
            literal(now, BigInteger()),
            literal(expires, BigInteger()),
            literal(device_id, String()),
        )
        .where(users.c.id == user_id, users.c.password_hash == verified_hash)
        .with_for_update(read=True)
    )
    result = await conn.execute(
        insert(sessions).from_select(["token_hash", "user_id", "created_ms", "expires_ms", "device_id"], still)
    )
    return bool(result.rowcount)


_SESSION_USER = select(
    sessions.c.token_hash, sessions.c.expires_ms, sessions.c.revoked_ms, sessions.c.device_id, *USER_COLUMNS
).select_from(sessions.join(users, users.c.id == sessions.c.user_id))


async def session_user(conn: AsyncConnection, token_hash: bytes) -> AnyRow | None:
    result = await conn.execute(_SESSION_USER.where(sessions.c.token_hash == token_hash))
    return result.first()


_SESSION_USERS = DriverStatement(_SESSION_USER.where(sessions.c.token_hash.in_(bindparam("hashes", expanding=True))))


def session_users(conn: Connection, token_hashes: Collection[bytes]) -> dict[bytes, AnyRow]:
    """The session-and-account rows of these tokens (unknown ones are absent). Synchronous:
    a batch of sends checks its sessions on the writer's database thread."""
    return {bytes(row.token_hash): row for row in _SESSION_USERS.execute(conn, hashes=list(token_hashes))}


# Revocations and restrictions are stamped with the database's clock: open streams are found
# by comparing these stamps with that same clock (core.revocation).


async def revoke_session(conn: AsyncConnection, token_hash: bytes) -> None:
    await conn.execute(
        update(sessions)
        .where(sessions.c.token_hash == token_hash, sessions.c.revoked_ms.is_(None))
        .values(revoked_ms=db_now_ms())
    )


async def revoke_all_sessions(conn: AsyncConnection, user_id: int, keep: bytes | None = None) -> int:
    """Revoke every live session of a user (but `keep`, the one asking); how many there were."""
    where = [sessions.c.user_id == user_id]
    if keep is not None:
        where.append(sessions.c.token_hash != keep)
    return await revoke_where(conn, *where)


async def revoke_where(conn: AsyncConnection, *where: ColumnElement[bool]) -> int:
    """Revoke the live sessions matching `where`; how many there were."""
    query = update(sessions).where(*where, sessions.c.revoked_ms.is_(None)).values(revoked_ms=db_now_ms())
    return int((await conn.execute(query)).rowcount)


async def restrict_user(conn: AsyncConnection, user_id: int, **values: Any) -> None:
    """Disable, suspend, ban or delete: servers notice `restricted_ms` and close the open streams."""
    await update_user(conn, user_id, restricted_ms=db_now_ms(), **values)


async def db_now(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(db_now_ms()))).scalar_one())


async def revoked_since(conn: AsyncConnection, since_ms: int) -> set[bytes]:
    result = await conn.execute(select(sessions.c.token_hash).where(sessions.c.revoked_ms >= since_ms))
    return {bytes(row[0]) for row in result}


async def restricted_since(conn: AsyncConnection, since_ms: int) -> set[int]:
    result = await conn.execute(select(users.c.id).where(users.c.restricted_ms >= since_ms))
    return {int(row[0]) for row in result}


async def add_follow(conn: AsyncConnection, follower_id: int, followee_id: int, now: int) -> None:
    # Already following leaves the row as it is: following is idempotent.
    await insert_if_absent(conn, follows, {"follower_id": follower_id, "followee_id": followee_id, "created_ms": now})


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


async def follows_one_way(conn: AsyncConnection, follower_id: int, followee_id: int) -> bool:
    result = await conn.execute(
        select(follows.c.follower_id).where(follows.c.follower_id == follower_id, follows.c.followee_id == followee_id)
    )
    return result.first() is not None
