"""Queries on conversations and their members."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import and_, case, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.absent import insert_if_absent
from keyhold.store.rows import AnyRow
from keyhold.store.schema import conversation_keys, conversations, hidden_messages, members, messages, users

# Activity in message-id space: the last message's id, or for an empty conversation, the id a
# message would have had at its creation (ids count ms since 2026-01-01 in their high bits).
ACTIVITY = func.coalesce(
    conversations.c.last_message_id, (conversations.c.created_ms - literal(1_767_225_600_000)) * literal(4096)
)


async def insert_conversation(conn: AsyncConnection, row: dict[str, Any]) -> int | None:
    """New conversation id, or None when a direct conversation for the pair exists already."""
    created = (await insert_if_absent(conn, conversations, row, returning=conversations.c.id)).scalar_one_or_none()
    return None if created is None else int(created)


async def by_direct_key(conn: AsyncConnection, direct_key: str) -> int | None:
    result = await conn.execute(select(conversations.c.id).where(conversations.c.direct_key == direct_key))
    found = result.scalar_one_or_none()
    return None if found is None else int(found)


async def insert_members(
    conn: AsyncConnection, conversation_id: int, user_ids: Sequence[int], now: int, owner: int | None = None
) -> None:
    if not user_ids:
        return
    await conn.execute(
        insert(members),
        [
            {"conversation_id": conversation_id, "user_id": uid, "joined_ms": now, "role": "owner" if uid == owner else "member"}
            for uid in user_ids
        ],
    )


async def rejoin(conn: AsyncConnection, conversation_id: int, user_ids: Sequence[int], now: int) -> None:
    await conn.execute(
        update(members)
        .where(members.c.conversation_id == conversation_id, members.c.user_id.in_(list(user_ids)))
        .values(left_ms=None, joined_ms=now, role="member", request_from=None, declined_ms=None)
    )


async def set_role(conn: AsyncConnection, conversation_id: int, user_id: int, role: str) -> None:
    await conn.execute(
        update(members)
        .where(members.c.conversation_id == conversation_id, members.c.user_id == user_id)
        .values(role=role)
    )


async def set_title(conn: AsyncConnection, conversation_id: int, title: str) -> None:
    await conn.execute(update(conversations).where(conversations.c.id == conversation_id).values(title=title))


async def membership(conn: AsyncConnection, conversation_id: int, user_id: int) -> AnyRow | None:
    """The member row joined with its conversation, or None (left members included)."""
    result = await conn.execute(
        select(
            conversations.c.id,
            conversations.c.kind,
            conversations.c.encryption,
            conversations.c.title,
            conversations.c.created_ms,
            conversations.c.last_message_id,
            conversations.c.disappear_after_s,
            members.c.joined_ms,
            members.c.left_ms,
            members.c.read_upto,
            members.c.delivered_upto,
            members.c.role,
            members.c.request_from,
            members.c.declined_ms,
        )
        .select_from(conversations.join(members, members.c.conversation_id == conversations.c.id))
        .where(conversations.c.id == conversation_id, members.c.user_id == user_id)
    )
    return result.first()


def asked_since(row: AnyRow) -> int | None:
    """For a membership (`membership`, `list_for_user`) that is a message request not accepted
    yet, when it was made: what its member may see starts there. None for any other."""
    return None if row.request_from is None else int(row.joined_ms)


async def member_rows(conn: AsyncConnection, conversation_ids: Sequence[int]) -> Sequence[AnyRow]:
    """(conversation_id, user id, username, region, left_ms, role, joined_ms) for every member ever."""
    result = await conn.execute(
        select(
            members.c.conversation_id,
            users.c.id,
            users.c.username,
            users.c.region,
            members.c.left_ms,
            members.c.role,
            members.c.joined_ms,
        )
        .select_from(members.join(users, users.c.id == members.c.user_id))
        .where(members.c.conversation_id.in_(list(conversation_ids)))
        .order_by(members.c.conversation_id, users.c.username)
    )
    return result.all()


def _unread_where(conversation_id: Any, user_id: int, read_upto: Any, since_ms: Any = 0) -> list[Any]:
    """`since_ms`: only messages sent then or later count (a request not accepted yet: from when
    it was made, `asked_since`)."""
    return [
        messages.c.conversation_id == conversation_id,
        messages.c.sent_ms >= since_ms,
        messages.c.id > read_upto,
        messages.c.sender_id != user_id,
        messages.c.deleted_ms.is_(None),
        messages.c.review.is_(None),  # held for review: not delivered to them (yet)
        messages.c.id.not_in(select(hidden_messages.c.message_id).where(hidden_messages.c.user_id == user_id)),
    ]


async def unread_count(
    conn: AsyncConnection, conversation_id: int, user_id: int, read_upto: int, since_ms: int | None = None
) -> int:
    result = await conn.execute(
        select(func.count()).where(*_unread_where(conversation_id, user_id, read_upto, since_ms or 0))
    )
    return int(result.scalar_one())


async def list_for_user(
    conn: AsyncConnection, user_id: int, before_activity: int | None, limit: int, requests: bool = False
) -> Sequence[AnyRow]:
    """The member's conversations, most recent activity first; with `requests`, only those that
    are still message requests to them (otherwise, only the others)."""
    unread = (
        select(func.count())
        .where(
            *_unread_where(
                conversations.c.id,
                user_id,
                members.c.read_upto,
                case((members.c.request_from.is_not(None), members.c.joined_ms), else_=0),
            )
        )
        .scalar_subquery()
    )
    query = (
        select(
            conversations.c.id,
            conversations.c.kind,
            conversations.c.encryption,
            conversations.c.title,
            conversations.c.created_ms,
            conversations.c.last_message_id,
            conversations.c.disappear_after_s,
            members.c.read_upto,
            members.c.joined_ms,
            members.c.request_from,
            ACTIVITY.label("activity"),
            unread.label("unread"),
        )
        .select_from(conversations.join(members, members.c.conversation_id == conversations.c.id))
        .where(
            members.c.user_id == user_id,
            members.c.left_ms.is_(None),
            members.c.declined_ms.is_(None),
            members.c.request_from.is_not(None) if requests else members.c.request_from.is_(None),
        )
        .order_by(ACTIVITY.desc(), conversations.c.id.desc())
        .limit(limit)
    )
    if before_activity is not None:
        query = query.where(ACTIVITY < before_activity)
    return (await conn.execute(query)).all()


async def co_members(
    conn: AsyncConnection, user_id: int, among: Collection[int] | None = None, with_declined: bool = True
) -> set[int]:
    """Who shares a conversation with the user now (both current members), optionally only
    among `among`; the user themself is not included. Without `with_declined`, a conversation
    either deleted as a message request is not shared (a request's sender, who must not see
    the deletion, still counts it as shared)."""
    mine = members.alias("mine")
    theirs = members.alias("theirs")
    query = (
        select(theirs.c.user_id)
        .select_from(mine.join(theirs, theirs.c.conversation_id == mine.c.conversation_id))
        .where(
            mine.c.user_id == user_id,
            mine.c.left_ms.is_(None),
            theirs.c.left_ms.is_(None),
            theirs.c.user_id != user_id,
        )
        .distinct()
    )
    if not with_declined:
        query = query.where(mine.c.declined_ms.is_(None), theirs.c.declined_ms.is_(None))
    if among is not None:
        query = query.where(theirs.c.user_id.in_(list(among)))
    return {int(row[0]) for row in await conn.execute(query)}


async def set_left(conn: AsyncConnection, conversation_id: int, user_id: int, now: int) -> None:
    await conn.execute(
        update(members)
        .where(members.c.conversation_id == conversation_id, members.c.user_id == user_id)
        .values(left_ms=now)
    )


async def leave_all(conn: AsyncConnection, user_id: int, now: int) -> list[int]:
    result = await conn.execute(
        select(members.c.conversation_id).where(members.c.user_id == user_id, members.c.left_ms.is_(None))
    )
    ids = [row[0] for row in result]
    await conn.execute(
        update(members).where(members.c.user_id == user_id, members.c.left_ms.is_(None)).values(left_ms=now)
    )
    return ids


async def force_new_epoch(conn: AsyncConnection, conversation_id: int) -> None:
    # epoch_started_ms = 0 makes the next sealed item start a new epoch, wrapped for the
    # regions of the members at that time.
    await conn.execute(
        update(conversations).where(conversations.c.id == conversation_id).values(epoch_started_ms=0)
    )


async def advance_receipt(
    conn: AsyncConnection, conversation_id: int, user_id: int, column: str, message_id: int
) -> bool:
    col = members.c[column]
    result = await conn.execute(
        update(members)
        .where(
            and_(members.c.conversation_id == conversation_id, members.c.user_id == user_id, col < message_id)
        )
        .values({column: message_id})
    )
    return bool(result.rowcount)


async def message_in_conversation(conn: AsyncConnection, conversation_id: int, message_id: int) -> bool:
    result = await conn.execute(
        select(messages.c.id).where(
            messages.c.id == message_id, messages.c.conversation_id == conversation_id
        )
    )
    return result.first() is not None


async def key_regions(conn: AsyncConnection, conversation_ids: Sequence[int]) -> dict[int, set[str]]:
    """Regions whose KEK still wraps a live key of each conversation (who could be compelled)."""
    result = await conn.execute(
        select(conversation_keys.c.conversation_id, conversation_keys.c.region)
        .where(conversation_keys.c.conversation_id.in_(list(conversation_ids)))
        .where(conversation_keys.c.wrapped_dek.is_not(None))
        .distinct()
    )
    found: dict[int, set[str]] = {}
    for conversation_id, region in result:
        found.setdefault(conversation_id, set()).add(region)
    return found


async def set_timer(conn: AsyncConnection, conversation_id: int, seconds: int | None) -> None:
    await conn.execute(update(conversations).where(conversations.c.id == conversation_id).values(disappear_after_s=seconds))
