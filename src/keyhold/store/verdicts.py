"""Queries on scanning verdicts (`scan_verdicts`) and on the review state of held messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import case, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.schema import (
    case_messages,
    conversations,
    members,
    messages,
    scan_verdicts,
    users,
)


@dataclass(frozen=True, slots=True)
class VerdictRow:
    """A verdict row, its JSON columns decoded."""

    id: int
    message_id: int | None
    attachment_id: str | None
    conversation_id: int
    sender_id: int
    action: str
    category: str | None
    policy: str
    scores: dict[str, float]
    fired: list[str]
    created_ms: int


def _verdict(row: Any) -> VerdictRow:
    fields = dict(row._mapping)
    return VerdictRow(**{**fields, "scores": orjson.loads(row.scores), "fired": orjson.loads(row.fired)})


async def insert_verdict(conn: AsyncConnection, row: dict[str, Any]) -> int:
    values = {
        **row,
        "scores": orjson.dumps(row["scores"]).decode(),
        "fired": orjson.dumps(row["fired"]).decode(),
    }
    result = await conn.execute(insert(scan_verdicts).values(**values).returning(scan_verdicts.c.id))
    return int(result.scalar_one())


async def for_attachment(conn: AsyncConnection, attachment_id: str) -> VerdictRow | None:
    """The verdict an upload got, if it got one other than allow."""
    result = await conn.execute(
        select(scan_verdicts)
        .where(scan_verdicts.c.attachment_id == attachment_id, scan_verdicts.c.message_id.is_(None))
        .order_by(scan_verdicts.c.id.desc())
        .limit(1)
    )
    row = result.first()
    return None if row is None else _verdict(row)


async def for_messages(conn: AsyncConnection, message_ids: Iterable[int]) -> dict[int, VerdictRow]:
    """The verdict each of these messages was stored with (the latest, if several)."""
    result = await conn.execute(
        select(scan_verdicts)
        .where(scan_verdicts.c.message_id.in_(list(message_ids)))
        .order_by(scan_verdicts.c.id)
    )
    return {row.message_id: _verdict(row) for row in result}


async def of_sender(conn: AsyncConnection, sender_id: int) -> list[VerdictRow]:
    result = await conn.execute(
        select(scan_verdicts).where(scan_verdicts.c.sender_id == sender_id).order_by(scan_verdicts.c.id)
    )
    return [_verdict(row) for row in result]


async def set_review(conn: AsyncConnection, message_id: int, review: str | None) -> None:
    await conn.execute(update(messages).where(messages.c.id == message_id).values(review=review))


async def review_of(conn: AsyncConnection, message_ids: Iterable[int]) -> dict[int, tuple[str | None, bool]]:
    """message id -> (review state, deleted)."""
    result = await conn.execute(
        select(messages.c.id, messages.c.review, messages.c.deleted_ms).where(
            messages.c.id.in_(list(message_ids))
        )
    )
    return {row.id: (row.review, row.deleted_ms is not None) for row in result}


async def still_held(conn: AsyncConnection, case_id: int) -> bool:
    """Whether a case's message waits for a moderator's release or refusal."""
    result = await conn.execute(
        select(messages.c.id)
        .select_from(messages.join(case_messages, case_messages.c.message_id == messages.c.id))
        .where(
            case_messages.c.case_id == case_id,
            messages.c.review == "pending",
            messages.c.deleted_ms.is_(None),
        )
        .limit(1)
    )
    return result.first() is not None


async def show_in_preview(conn: AsyncConnection, conversation_id: int, message_id: int) -> None:
    """A released message becomes its conversation's latest, unless a later one is."""
    await conn.execute(
        update(conversations)
        .where(conversations.c.id == conversation_id)
        .values(
            last_message_id=case(
                (conversations.c.last_message_id > message_id, conversations.c.last_message_id),
                else_=message_id,
            )
        )
    )


async def screening_facts(conn: AsyncConnection, conversation_id: int) -> list[Any]:
    """One query for what a screen needs to know about a send: the conversation's encryption
    and each current member's id, birthdate, region and account creation time."""
    result = await conn.execute(
        select(conversations.c.encryption, users.c.id, users.c.birthdate, users.c.region, users.c.created_ms)
        .select_from(
            conversations.join(members, members.c.conversation_id == conversations.c.id).join(
                users, users.c.id == members.c.user_id
            )
        )
        .where(conversations.c.id == conversation_id, members.c.left_ms.is_(None))
    )
    return list(result.all())
