"""Queries on messages, attachments and the conversation rows the message writer touches.

The send path's queries are synchronous (`Connection`): a batch of sends runs whole on the
writer's database thread (see `store.db.Transactions`); async callers reach them through
`AsyncConnection.run_sync`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import BigInteger, bindparam, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.clock import first_message_id_near
from keyhold.store.db import DriverStatement, insert_tuples
from keyhold.store.rows import AnyRow
from keyhold.store.schema import attachments, conversations, hidden_messages, members, messages, users

MESSAGE_COLUMNS = (
    messages.c.id,
    messages.c.conversation_id,
    messages.c.sender_id,
    users.c.username.label("sender"),
    messages.c.epoch,
    messages.c.kind,
    messages.c.body,
    messages.c.attachment_id,
    messages.c.sent_ms,
    messages.c.deleted_ms,
    messages.c.sender_device,
    messages.c.franking,
    messages.c.expires_ms,
    messages.c.review,
)
_FROM = messages.join(users, users.c.id == messages.c.sender_id)


# The send path's reads, run as driver SQL (see `store.db.DriverStatement`).
_BY_IDEMPOTENCY = DriverStatement(
    select(messages.c.idem, *MESSAGE_COLUMNS)
    .select_from(_FROM)
    .where(messages.c.idem.in_(bindparam("idems", expanding=True)))
)
_CONVERSATION_STATES = DriverStatement(
    select(
        conversations.c.id,
        conversations.c.kind,
        conversations.c.encryption,
        conversations.c.current_epoch,
        conversations.c.epoch_messages,
        conversations.c.epoch_started_ms,
        conversations.c.disappear_after_s,
    ).where(conversations.c.id.in_(bindparam("ids", expanding=True)))
)
_ACTIVE_MEMBERS = DriverStatement(
    select(members.c.conversation_id, members.c.user_id, users.c.region)
    .select_from(members.join(users, users.c.id == members.c.user_id))
    .where(members.c.conversation_id.in_(bindparam("ids", expanding=True)), members.c.left_ms.is_(None))
)


def by_idempotency(conn: Connection, idems: Iterable[str]) -> dict[str, AnyRow]:
    return {row.idem: row for row in _BY_IDEMPOTENCY.execute(conn, idems=list(idems))}


async def by_ids(conn: AsyncConnection, ids: Iterable[int]) -> dict[int, AnyRow]:
    result = await conn.execute(
        select(*MESSAGE_COLUMNS).select_from(_FROM).where(messages.c.id.in_(list(ids)))
    )
    return {row.id: row for row in result}


def conversation_states(conn: Connection, ids: Iterable[int]) -> dict[int, AnyRow]:
    return {row.id: row for row in _CONVERSATION_STATES.execute(conn, ids=list(ids))}


def active_members(conn: Connection, conversation_ids: Iterable[int]) -> dict[int, dict[int, str]]:
    """conversation id -> {member user id: member region}, current members only."""
    found: dict[int, dict[int, str]] = {}
    for row in _ACTIVE_MEMBERS.execute(conn, ids=list(conversation_ids)):
        found.setdefault(row.conversation_id, {})[row.user_id] = row.region
    return found


# The order of a message row's values (see `insert_messages`).
NEW_MESSAGE_COLUMNS = (
    "id", "conversation_id", "sender_id", "epoch", "idem", "kind", "body", "attachment_id", "sent_ms",
    "sender_device", "franking", "expires_ms",
)  # fmt: skip


def insert_messages(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """New messages as tuples in `NEW_MESSAGE_COLUMNS` order."""
    insert_tuples(conn, messages, NEW_MESSAGE_COLUMNS, rows)


async def start_epoch(conn: AsyncConnection, conversation_id: int, epoch: int, at_ms: int) -> None:
    await conn.execute(
        update(conversations)
        .where(conversations.c.id == conversation_id)
        .values(current_epoch=epoch, epoch_messages=0, epoch_started_ms=at_ms)
    )


_CONVERSATION_AFTER_SEND = (
    update(conversations)
    .where(conversations.c.id == bindparam("cid"))
    .values(
        current_epoch=bindparam("epoch"),
        epoch_messages=bindparam("count"),
        epoch_started_ms=bindparam("started"),
        # NULL when only a held message was added: the latest others see stays as it was.
        last_message_id=func.coalesce(bindparam("last_id", type_=BigInteger), conversations.c.last_message_id),
    )
)


def update_conversations_after_send(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    conn.execute(_CONVERSATION_AFTER_SEND, list(rows))


def mark_held(conn: Connection, message_ids: Sequence[int]) -> None:
    """Messages the safety screen held: pending a moderator's review (see `schema.messages`)."""
    conn.execute(update(messages).where(messages.c.id.in_(list(message_ids))).values(review="pending"))


async def page(
    conn: AsyncConnection,
    conversation_id: int,
    before: int | None,
    after: int | None,
    limit: int,
    viewer_id: int | None = None,
    since_ms: int | None = None,
) -> list[AnyRow]:
    """A page of a conversation's messages, as `viewer_id` sees it (without the messages hidden
    for them: see `hidden_messages`), sent at `since_ms` or later if given."""
    query = select(*MESSAGE_COLUMNS).select_from(_FROM).where(messages.c.conversation_id == conversation_id)
    if since_ms is not None:
        query = query.where(messages.c.id >= first_message_id_near(since_ms), messages.c.sent_ms >= since_ms)
    if viewer_id is not None:
        hidden = select(hidden_messages.c.message_id).where(hidden_messages.c.user_id == viewer_id)
        query = query.where(messages.c.id.not_in(hidden))
        # A message held for review (or refused) is its sender's alone to see.
        query = query.where(or_(messages.c.review.is_(None), messages.c.sender_id == viewer_id))
    if after is not None:
        query = query.where(messages.c.id > after).order_by(messages.c.id.asc())
    else:
        if before is not None:
            query = query.where(messages.c.id < before)
        query = query.order_by(messages.c.id.desc())
    rows = list((await conn.execute(query.limit(limit))).all())
    return rows if after is not None else rows[::-1]


async def tombstone(conn: AsyncConnection, message_ids: Sequence[int], at_ms: int, keep_body: bool) -> None:
    """Mark messages deleted. Their sealed body is destroyed, unless `keep_body` (a
    preservation hold), which hides it until the hold ends (see `purge_hidden`)."""
    if not message_ids:
        return
    values: dict[str, Any] = {"deleted_ms": at_ms} if keep_body else {"body": None, "deleted_ms": at_ms}
    await conn.execute(update(messages).where(messages.c.id.in_(list(message_ids))).values(**values))


async def live_by_sender(conn: AsyncConnection, sender_id: int) -> list[AnyRow]:
    """(id, conversation_id, attachment_id) of every message of one sender not yet deleted."""
    result = await conn.execute(
        select(messages.c.id, messages.c.conversation_id, messages.c.attachment_id).where(
            messages.c.sender_id == sender_id, messages.c.deleted_ms.is_(None)
        )
    )
    return list(result.all())


async def purge_hidden(conn: AsyncConnection, conversation_ids: Iterable[int]) -> list[str]:
    """Destroy content a preservation hold kept behind tombstones, once no hold covers these
    conversations any more. Returns the attachment ids whose blobs are to be removed."""
    hidden = (
        messages.c.conversation_id.in_(list(conversation_ids))
        & messages.c.deleted_ms.is_not(None)
        & messages.c.body.is_not(None)
    )
    result = await conn.execute(
        select(messages.c.attachment_id).where(hidden, messages.c.attachment_id.is_not(None))
    )
    attachment_ids = [row[0] for row in result]
    await conn.execute(update(messages).where(hidden).values(body=None))
    return attachment_ids


def attachments_by_ids(conn: Connection, ids: Iterable[str]) -> dict[str, AnyRow]:
    result = conn.execute(select(attachments).where(attachments.c.id.in_(list(ids))))
    return {row.id: row for row in result}


async def attachment_sent_ms(conn: AsyncConnection, attachment_id: str) -> int | None:
    """When the message that carries an attachment was sent (None: none carries it yet)."""
    result = await conn.execute(select(messages.c.sent_ms).where(messages.c.attachment_id == attachment_id))
    found = result.scalar()
    return None if found is None else int(found)


def attachments_in_use(conn: Connection, ids: Iterable[str]) -> set[str]:
    result = conn.execute(
        select(messages.c.attachment_id).where(messages.c.attachment_id.in_(list(ids)))
    )
    return {row[0] for row in result}


async def insert_attachment(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(attachments.insert(), row)


async def hide_attachments(conn: AsyncConnection, ids: Sequence[str], at_ms: int) -> None:
    """Deleted for members (410) while a hold keeps the sealed name and bytes."""
    if ids:
        await conn.execute(update(attachments).where(attachments.c.id.in_(list(ids))).values(deleted_ms=at_ms))


async def mark_attachments_deleted(conn: AsyncConnection, ids: Sequence[str], at_ms: int) -> None:
    """Deleted for good: the sealed name and type go now, the bytes once this commits."""
    if ids:
        await conn.execute(
            update(attachments)
            .where(attachments.c.id.in_(list(ids)))
            .values(deleted_ms=at_ms, sealed_meta=b"")
        )


async def max_message_id(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.coalesce(func.max(messages.c.id), 0)))).scalar_one())


async def expired(conn: AsyncConnection, now: int, limit: int) -> list[AnyRow]:
    """Disappearing messages whose time is up and that are not deleted yet, oldest first."""
    result = await conn.execute(
        select(
            messages.c.id,
            messages.c.conversation_id,
            messages.c.attachment_id,
            messages.c.epoch,
            messages.c.kind,
            messages.c.sender_id,
            messages.c.review,  # a held message's deletion is announced to its sender only
        )
        .where(messages.c.expires_ms <= now, messages.c.deleted_ms.is_(None))
        .order_by(messages.c.expires_ms)
        .limit(limit)
    )
    return list(result.all())


async def spent_epochs(conn: AsyncConnection, pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Of these (conversation, key epoch) pairs, those whose key seals nothing any more: no
    message body (a hold keeps bodies) and no attachment left under it."""
    spent = []
    for conversation_id, epoch in sorted(set(pairs)):
        body_left = await conn.execute(
            select(messages.c.id)
            .where(messages.c.conversation_id == conversation_id, messages.c.epoch == epoch, messages.c.body.is_not(None))
            .limit(1)
        )
        file_left = await conn.execute(
            select(attachments.c.id)
            .where(
                attachments.c.conversation_id == conversation_id,
                attachments.c.epoch == epoch,
                attachments.c.deleted_ms.is_(None),
            )
            .limit(1)
        )
        if body_left.first() is None and file_left.first() is None:
            spent.append((conversation_id, epoch))
    return spent
