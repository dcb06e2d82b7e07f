"""Queries on cases (reports, legal requests), their items, targets, documents and holds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.rows import AnyRow
from keyhold.store.schema import (
    case_messages,
    case_targets,
    cases,
    conversation_keys,
    holds,
    legal_documents,
    members,
    messages,
    staff,
    users,
)


@dataclass(frozen=True, slots=True)
class Case:
    """A case row, its JSON columns decoded (here, and only here)."""

    id: int
    kind: str  # report | legal
    region: str
    status: str
    created_ms: int
    expires_ms: int | None
    reporter_id: int | None
    conversation_id: int | None
    created_by: int | None
    assigned_to: int | None
    approved_by: int | None
    details: dict[str, Any]
    decision: dict[str, Any]
    # The staff usernames behind the three ids, for people reading a case (None where unset).
    created_by_name: str | None
    assigned_to_name: str | None
    approved_by_name: str | None


_creator, _assignee, _approver = staff.alias("creator"), staff.alias("assignee"), staff.alias("approver")
_CASES = select(
    cases,
    _creator.c.username.label("created_by_name"),
    _assignee.c.username.label("assigned_to_name"),
    _approver.c.username.label("approved_by_name"),
).select_from(
    cases.outerjoin(_creator, _creator.c.id == cases.c.created_by)
    .outerjoin(_assignee, _assignee.c.id == cases.c.assigned_to)
    .outerjoin(_approver, _approver.c.id == cases.c.approved_by)
)


def _case(row: AnyRow) -> Case:
    fields = dict(row._mapping)
    return Case(**{**fields, "details": orjson.loads(row.details), "decision": orjson.loads(row.decision)})


def _encoded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: orjson.dumps(v).decode() if k in ("details", "decision") else v for k, v in values.items()}


async def insert_case(conn: AsyncConnection, row: dict[str, Any]) -> int:
    return int((await conn.execute(insert(cases).values(**_encoded(row)).returning(cases.c.id))).scalar_one())


async def count(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(cases))).scalar_one())


async def by_id(conn: AsyncConnection, case_id: int) -> Case | None:
    row = (await conn.execute(_CASES.where(cases.c.id == case_id))).first()
    return None if row is None else _case(row)


async def update_case(conn: AsyncConnection, case_id: int, **values: Any) -> None:
    await conn.execute(update(cases).where(cases.c.id == case_id).values(**_encoded(values)))


async def list_cases(
    conn: AsyncConnection, kind: str, region: str, after_id: int, limit: int, status: str | None = None
) -> list[Case]:
    query = _CASES.where(cases.c.kind == kind, cases.c.region == region, cases.c.id > after_id)
    if status:
        query = query.where(cases.c.status == status)
    return [_case(row) for row in await conn.execute(query.order_by(cases.c.id).limit(limit))]


async def add_messages(conn: AsyncConnection, case_id: int, message_ids: Iterable[int]) -> None:
    await conn.execute(insert(case_messages), [{"case_id": case_id, "message_id": m} for m in message_ids])


async def case_message_ids(conn: AsyncConnection, case_id: int) -> list[int]:
    result = await conn.execute(select(case_messages.c.message_id).where(case_messages.c.case_id == case_id))
    return sorted(row[0] for row in result)


async def add_targets(conn: AsyncConnection, case_id: int, user_ids: Iterable[int]) -> None:
    await conn.execute(insert(case_targets), [{"case_id": case_id, "user_id": u} for u in user_ids])


async def target_ids(conn: AsyncConnection, case_id: int) -> list[int]:
    result = await conn.execute(select(case_targets.c.user_id).where(case_targets.c.case_id == case_id))
    return sorted(row[0] for row in result)


async def target_names(conn: AsyncConnection, case_ids: Sequence[int]) -> dict[int, list[str]]:
    """The usernames each case names as targets, sorted."""
    result = await conn.execute(
        select(case_targets.c.case_id, users.c.username)
        .select_from(case_targets.join(users, users.c.id == case_targets.c.user_id))
        .where(case_targets.c.case_id.in_(list(case_ids)))
        .order_by(case_targets.c.case_id, users.c.username)
    )
    names: dict[int, list[str]] = {}
    for case_id, username in result:
        names.setdefault(case_id, []).append(username)
    return names


async def context_window(conn: AsyncConnection, conversation_id: int, around: int, k: int) -> list[int]:
    """The ids of `around` and up to k messages before and after it in its conversation."""
    before = await conn.execute(
        select(messages.c.id)
        .where(messages.c.conversation_id == conversation_id, messages.c.id < around)
        .order_by(messages.c.id.desc())
        .limit(k)
    )
    after = await conn.execute(
        select(messages.c.id)
        .where(messages.c.conversation_id == conversation_id, messages.c.id > around)
        .order_by(messages.c.id.asc())
        .limit(k)
    )
    return sorted([around, *(r[0] for r in before), *(r[0] for r in after)])


async def target_message_ids(
    conn: AsyncConnection, user_ids: Sequence[int], start_ms: int, end_ms: int, message_ids: Sequence[int]
) -> set[int]:
    """Of `message_ids`, those in a conversation a target belongs or belonged to, sent in range."""
    conversations_of_targets = select(members.c.conversation_id).where(members.c.user_id.in_(list(user_ids)))
    result = await conn.execute(
        select(messages.c.id).where(
            messages.c.id.in_(list(message_ids)),
            messages.c.conversation_id.in_(conversations_of_targets),
            messages.c.sent_ms >= start_ms,
            messages.c.sent_ms < end_ms,
        )
    )
    return {row[0] for row in result}


async def messages_for_access(conn: AsyncConnection, message_ids: Sequence[int]) -> dict[int, AnyRow]:
    """Message rows with their sender's username (`sender`)."""
    result = await conn.execute(
        select(messages, users.c.username.label("sender"))
        .select_from(messages.join(users, users.c.id == messages.c.sender_id))
        .where(messages.c.id.in_(list(message_ids)))
    )
    return {row.id: row for row in result}


async def region_wraps(
    conn: AsyncConnection, region: str, pairs: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], AnyRow]:
    wanted = list(set(pairs))
    if not wanted:
        return {}
    conditions = [
        (conversation_keys.c.conversation_id == c) & (conversation_keys.c.epoch == e) for c, e in wanted
    ]
    result = await conn.execute(
        select(conversation_keys).where(conversation_keys.c.region == region).where(or_(*conditions))
    )
    return {(row.conversation_id, row.epoch): row for row in result}


async def least_loaded_moderator(conn: AsyncConnection, region: str) -> int | None:
    open_cases = (
        select(func.count())
        .where(cases.c.assigned_to == staff.c.id, cases.c.status.in_(["open", "appealed"]))
        .scalar_subquery()
    )
    result = await conn.execute(
        select(staff.c.id)
        .where(staff.c.role == "moderator", staff.c.region == region, staff.c.disabled.is_(False))
        .order_by(open_cases, staff.c.id)
        .limit(1)
    )
    found = result.scalar_one_or_none()
    return None if found is None else int(found)


async def insert_document(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(insert(legal_documents).values(**row))


async def document(conn: AsyncConnection, case_id: int) -> AnyRow | None:
    return (await conn.execute(select(legal_documents).where(legal_documents.c.case_id == case_id))).first()


async def insert_holds(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    await conn.execute(insert(holds), list(rows))


async def holds_of_case(conn: AsyncConnection, case_id: int) -> Sequence[AnyRow]:
    return (await conn.execute(select(holds).where(holds.c.case_id == case_id))).all()


async def update_holds(conn: AsyncConnection, case_id: int, **values: Any) -> None:
    await conn.execute(update(holds).where(holds.c.case_id == case_id).values(**values))


async def held_conversations(
    conn: AsyncConnection,
    conversation_ids: Iterable[int],
    now_ms: int,
    region: str | None = None,
    user_ids: Iterable[int] | None = None,
) -> set[int]:
    """Which of these conversations have a member (current or former) under an active hold;
    only holds of `region` and on `user_ids`, when given."""
    active = (
        select(holds.c.user_id)
        .select_from(holds.join(cases, cases.c.id == holds.c.case_id))
        .where(holds.c.released_ms.is_(None), holds.c.starts_ms <= now_ms, holds.c.ends_ms > now_ms)
    )
    if region is not None:
        active = active.where(cases.c.region == region)
    if user_ids is not None:
        active = active.where(holds.c.user_id.in_(list(user_ids)))
    result = await conn.execute(
        select(members.c.conversation_id)
        .where(members.c.conversation_id.in_(list(conversation_ids)), members.c.user_id.in_(active))
        .distinct()
    )
    return {row[0] for row in result}


async def expired_holds(conn: AsyncConnection, now_ms: int) -> Sequence[AnyRow]:
    result = await conn.execute(select(holds).where(holds.c.released_ms.is_(None), holds.c.ends_ms <= now_ms))
    return result.all()


async def release_holds(conn: AsyncConnection, hold_ids: Sequence[int], at_ms: int) -> None:
    await conn.execute(update(holds).where(holds.c.id.in_(list(hold_ids))).values(released_ms=at_ms))


async def conversations_of(conn: AsyncConnection, user_ids: Iterable[int]) -> list[int]:
    result = await conn.execute(
        select(members.c.conversation_id).where(members.c.user_id.in_(list(user_ids))).distinct()
    )
    return [row[0] for row in result]
