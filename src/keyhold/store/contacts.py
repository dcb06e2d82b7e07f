"""Queries on who may reach whom: blocks, DM audiences, message requests, messages hidden for a
blocker, and the facts the send path needs about a batch (run on the writer's connection)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import NamedTuple

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.clock import first_message_id_near
from keyhold.store.absent import insert_if_absent
from keyhold.store.db import insert_tuples
from keyhold.store.rows import AnyRow
from keyhold.store.schema import (
    blocks,
    conversations,
    follows,
    guardian_links,
    hidden_messages,
    members,
    messages,
    users,
)

# -- blocks ------------------------------------------------------------------------------------


async def add_block(conn: AsyncConnection, blocker_id: int, blocked_id: int, now: int) -> bool:
    """Whether the block is new (blocking twice leaves the first)."""
    result = await insert_if_absent(conn, blocks, {"blocker_id": blocker_id, "blocked_id": blocked_id, "created_ms": now})
    return bool(result.rowcount)


async def remove_block(conn: AsyncConnection, blocker_id: int, blocked_id: int) -> bool:
    result = await conn.execute(
        delete(blocks).where(blocks.c.blocker_id == blocker_id, blocks.c.blocked_id == blocked_id)
    )
    return bool(result.rowcount)


async def blocked_by(conn: AsyncConnection, blocker_id: int) -> list[AnyRow]:
    """(username, created_ms) of everyone the member blocks, by name."""
    result = await conn.execute(
        select(users.c.username, blocks.c.created_ms)
        .select_from(blocks.join(users, users.c.id == blocks.c.blocked_id))
        .where(blocks.c.blocker_id == blocker_id)
        .order_by(users.c.username)
    )
    return list(result.all())


async def blocks_between(conn: AsyncConnection, user_id: int, others: Collection[int]) -> set[tuple[int, int]]:
    """(blocker, blocked) pairs between the user and any of `others`, either way."""
    if not others:
        return set()
    ids = list(others)
    result = await conn.execute(
        select(blocks.c.blocker_id, blocks.c.blocked_id).where(
            ((blocks.c.blocker_id == user_id) & blocks.c.blocked_id.in_(ids))
            | ((blocks.c.blocked_id == user_id) & blocks.c.blocker_id.in_(ids))
        )
    )
    return {(int(r[0]), int(r[1])) for r in result}


async def blockers_among(conn: AsyncConnection, blocked_id: int, among: Collection[int]) -> set[int]:
    """Who among `among` blocks `blocked_id`."""
    if not among:
        return set()
    result = await conn.execute(
        select(blocks.c.blocker_id).where(blocks.c.blocked_id == blocked_id, blocks.c.blocker_id.in_(list(among)))
    )
    return {int(r[0]) for r in result}


# -- follows, seen from one member -------------------------------------------------------------


async def follow_edges(conn: AsyncConnection, user_id: int, others: Collection[int]) -> set[tuple[int, int]]:
    """(follower, followee) pairs between the user and any of `others`, either way."""
    if not others:
        return set()
    ids = list(others)
    result = await conn.execute(
        select(follows.c.follower_id, follows.c.followee_id).where(
            ((follows.c.follower_id == user_id) & follows.c.followee_id.in_(ids))
            | ((follows.c.followee_id == user_id) & follows.c.follower_id.in_(ids))
        )
    )
    return {(int(r[0]), int(r[1])) for r in result}


async def remove_follows_between(conn: AsyncConnection, a: int, b: int) -> None:
    await conn.execute(
        delete(follows).where(
            ((follows.c.follower_id == a) & (follows.c.followee_id == b))
            | ((follows.c.follower_id == b) & (follows.c.followee_id == a))
        )
    )


# -- DM audiences ------------------------------------------------------------------------------


async def set_audience(conn: AsyncConnection, user_id: int, audience: str | None) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(dm_audience=audience))


async def audience_rows(conn: AsyncConnection, user_ids: Collection[int]) -> dict[int, AnyRow]:
    """id -> (id, username, birthdate, region, dm_audience) for these users."""
    if not user_ids:
        return {}
    result = await conn.execute(
        select(users.c.id, users.c.username, users.c.birthdate, users.c.region, users.c.dm_audience).where(
            users.c.id.in_(list(user_ids))
        )
    )
    return {int(r.id): r for r in result}


async def guardian_audiences(conn: AsyncConnection, teen_ids: Collection[int]) -> dict[int, list[str]]:
    """teen id -> the DM settings their (accepted) guardians chose for them."""
    if not teen_ids:
        return {}
    result = await conn.execute(
        select(guardian_links.c.teen_id, guardian_links.c.dm_audience).where(
            guardian_links.c.teen_id.in_(list(teen_ids)),
            guardian_links.c.dm_audience.is_not(None),
            guardian_links.c.guardian_accepted_ms.is_not(None),
            guardian_links.c.teen_accepted_ms.is_not(None),
        )
    )
    found: dict[int, list[str]] = {}
    for row in result:
        found.setdefault(int(row.teen_id), []).append(str(row.dm_audience))
    return found


# -- message requests --------------------------------------------------------------------------


async def mark_requests(conn: AsyncConnection, conversation_id: int, user_ids: Collection[int], from_id: int) -> None:
    if user_ids:
        await conn.execute(
            update(members)
            .where(members.c.conversation_id == conversation_id, members.c.user_id.in_(list(user_ids)))
            .values(request_from=from_id)
        )


async def accept_request(conn: AsyncConnection, conversation_id: int, user_id: int) -> bool:
    result = await conn.execute(
        update(members)
        .where(
            members.c.conversation_id == conversation_id,
            members.c.user_id == user_id,
            members.c.left_ms.is_(None),
            members.c.declined_ms.is_(None),
            members.c.request_from.is_not(None),
        )
        .values(request_from=None)
    )
    return bool(result.rowcount)


async def request_from(conn: AsyncConnection, conversation_id: int, user_id: int) -> int | None:
    """Who a current member's pending request in this conversation is from (None: not a request)."""
    result = await conn.execute(
        select(members.c.request_from).where(
            members.c.conversation_id == conversation_id,
            members.c.user_id == user_id,
            members.c.left_ms.is_(None),
        )
    )
    found = result.scalar_one_or_none()
    return None if found is None else int(found)


async def requests_between(conn: AsyncConnection, a: int, b: int) -> list[AnyRow]:
    """(user_id, conversation_id, kind) of every open request from either of the two to the other."""
    result = await conn.execute(
        select(members.c.user_id, members.c.conversation_id, conversations.c.kind)
        .select_from(members.join(conversations, conversations.c.id == members.c.conversation_id))
        .where(
            members.c.left_ms.is_(None),
            members.c.declined_ms.is_(None),
            ((members.c.user_id == a) & (members.c.request_from == b))
            | ((members.c.user_id == b) & (members.c.request_from == a)),
        )
    )
    return list(result.all())


async def decline_request(conn: AsyncConnection, conversation_id: int, user_id: int, now: int) -> None:
    await conn.execute(
        update(members)
        .where(members.c.conversation_id == conversation_id, members.c.user_id == user_id)
        .values(declined_ms=now)
    )


async def reopen_declined(conn: AsyncConnection, conversation_id: int, user_id: int) -> bool:
    """A member who deleted a direct request starts the conversation themselves: it is theirs again."""
    result = await conn.execute(
        update(members)
        .where(
            members.c.conversation_id == conversation_id,
            members.c.user_id == user_id,
            members.c.declined_ms.is_not(None),
        )
        .values(declined_ms=None, request_from=None)
    )
    return bool(result.rowcount)


# -- the send path (synchronous: the writer's batch handler) -----------------------------------


def user_facts(conn: Connection, user_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """id -> (birthdate, region)."""
    ids = list(user_ids)
    if not ids:
        return {}
    result = conn.execute(select(users.c.id, users.c.birthdate, users.c.region).where(users.c.id.in_(ids)))
    return {int(r[0]): (str(r[1]), str(r[2])) for r in result}


class Request(NamedTuple):
    """A membership that is a message request not accepted yet."""

    asker: int
    declined: bool  # its member deleted it
    since_ms: int  # when it was made


def requests_in(conn: Connection, conversation_ids: Iterable[int]) -> dict[int, dict[int, Request]]:
    """conversation -> {pending member: their `Request`}, current members."""
    ids = list(conversation_ids)
    result = conn.execute(
        select(
            members.c.conversation_id,
            members.c.user_id,
            members.c.request_from,
            members.c.declined_ms,
            members.c.joined_ms,
        ).where(members.c.conversation_id.in_(ids), members.c.left_ms.is_(None), members.c.request_from.is_not(None))
    )
    found: dict[int, dict[int, Request]] = {}
    for row in result:
        found.setdefault(int(row[0]), {})[int(row[1])] = Request(int(row[2]), row[3] is not None, int(row[4]))
    return found


def blocks_among(conn: Connection, user_ids: Collection[int]) -> set[tuple[int, int]]:
    """(blocker, blocked) pairs with both sides among `user_ids`."""
    if len(user_ids) < 2:
        return set()
    ids = list(user_ids)
    result = conn.execute(
        select(blocks.c.blocker_id, blocks.c.blocked_id).where(blocks.c.blocker_id.in_(ids), blocks.c.blocked_id.in_(ids))
    )
    return {(int(r[0]), int(r[1])) for r in result}


def follows_among(conn: Connection, user_ids: Collection[int]) -> set[tuple[int, int]]:
    """(follower, followee) pairs with both sides among `user_ids`."""
    if len(user_ids) < 2:
        return set()
    ids = list(user_ids)
    result = conn.execute(
        select(follows.c.follower_id, follows.c.followee_id).where(
            follows.c.follower_id.in_(ids), follows.c.followee_id.in_(ids)
        )
    )
    return {(int(r[0]), int(r[1])) for r in result}


def sent_by(conn: Connection, conversation_id: int, sender_id: int, at_most: int) -> int:
    """How many messages `sender_id` sent in the conversation, counted up to `at_most`."""
    mine = (
        select(messages.c.id)
        .where(messages.c.conversation_id == conversation_id, messages.c.sender_id == sender_id)
        .limit(at_most)
        .subquery()
    )
    return int(conn.execute(select(func.count()).select_from(mine)).scalar_one())


def hide_messages(conn: Connection, rows: Sequence[tuple[int, int]]) -> None:
    """(user id, message id) pairs: messages not shown to that member."""
    insert_tuples(conn, hidden_messages, ("user_id", "message_id"), rows)


async def hidden_for(conn: AsyncConnection, user_id: int, message_ids: Collection[int]) -> set[int]:
    """Which of these messages are hidden for the member."""
    if not message_ids:
        return set()
    result = await conn.execute(
        select(hidden_messages.c.message_id).where(
            hidden_messages.c.user_id == user_id, hidden_messages.c.message_id.in_(list(message_ids))
        )
    )
    return {int(r[0]) for r in result}


async def kept_from(conn: AsyncConnection, rows: Sequence[AnyRow]) -> dict[int, set[int]]:
    """message id -> the current members not to be told of it (rows: id, conversation_id,
    sent_ms): those it is hidden from (`hidden_messages`), and those asked to join since it was
    sent who have not accepted (what was sent before is not theirs to see)."""
    if not rows:
        return {}
    found: dict[int, set[int]] = {}
    result = await conn.execute(
        select(hidden_messages.c.message_id, hidden_messages.c.user_id).where(
            hidden_messages.c.message_id.in_([row.id for row in rows])
        )
    )
    for message_id, user_id in result:
        found.setdefault(int(message_id), set()).add(int(user_id))
    conversation_ids = {row.conversation_id for row in rows}
    waiting = await conn.run_sync(lambda sync: requests_in(sync, conversation_ids))
    for row in rows:
        late = {
            uid
            for uid, request in waiting.get(row.conversation_id, {}).items()
            if not request.declined and request.since_ms > row.sent_ms
        }
        if late:
            found.setdefault(row.id, set()).update(late)
    return found


async def last_visible(
    conn: AsyncConnection, conversation_id: int, user_id: int, since_ms: int | None = None
) -> int | None:
    """The newest message of a conversation not hidden for the member (held ones excluded),
    sent at `since_ms` or later if given."""
    hidden = select(hidden_messages.c.message_id).where(hidden_messages.c.user_id == user_id)
    query = select(func.max(messages.c.id)).where(
        messages.c.conversation_id == conversation_id,
        messages.c.id.not_in(hidden),
        messages.c.review.is_(None) | (messages.c.sender_id == user_id),
    )
    if since_ms is not None:
        query = query.where(messages.c.id >= first_message_id_near(since_ms), messages.c.sent_ms >= since_ms)
    result = await conn.execute(query)
    found = result.scalar_one_or_none()
    return None if found is None else int(found)
