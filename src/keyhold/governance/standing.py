"""A member's standing as they and moderators see it: active strikes, the restriction in
force, the next rung of the ladder, and the moderation notices the member was sent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import iso, now_ms
from keyhold.core.accounts import BANNED, Member
from keyhold.governance.strikes import Ladder, strike_view
from keyhold.store import accounts as account_store
from keyhold.store import cases as case_store
from keyhold.store import messages as message_store
from keyhold.store import strikes as store
from keyhold.store.cases import Case

MAX_NOTICES = 50


def restriction(suspended_until_ms: int, now: int) -> tuple[str, str | None]:
    """`active`, `suspended` (with its end) or `banned`."""
    if suspended_until_ms >= BANNED:
        return "banned", None
    if suspended_until_ms > now:
        return "suspended", iso(suspended_until_ms)
    return "active", None


def appealable(case: Case | None, user_id: int) -> bool:
    """Whether `user_id` may appeal this case's decision now (as `ReportService.appeal` checks)."""
    if case is None or case.status != "decided":
        return False
    decision = case.decision
    return user_id in decision.get("offenders", []) and decision.get("action") != "no_violation"


async def case_strikes(conn: AsyncConnection, case: Case, message_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The active strikes of the members a report case is about: those its decision acted on,
    or before a decision the senders of the reported messages."""
    subjects = case.decision.get("offenders")
    if subjects is None:
        rows = await message_store.by_ids(conn, message_ids)
        subjects = sorted({row.sender_id for row in rows.values()})
    if not subjects:
        return []
    return [strike_view(row) for row in await store.active_of(conn, subjects, now_ms())]


async def member_standing(
    engine: AsyncEngine, ladder: Callable[[], Ladder], member: Member
) -> dict[str, Any]:
    now = now_ms()
    async with engine.connect() as conn:
        row = await account_store.by_id(conn, member.id)
        active = await store.active_of(conn, [member.id], now)
        notices = await store.notices(conn, member.id, MAX_NOTICES)
        told = [orjson.loads(n.data) for n in notices]
        case_ids = {d["case_id"] for d in told if isinstance(d.get("case_id"), int)}
        cases = {case_id: await case_store.by_id(conn, case_id) for case_id in sorted(case_ids)}
    status, until = restriction(row.suspended_until_ms if row is not None else 0, now)
    rules = ladder()
    upcoming = rules.next_step(len(active))
    return {
        "status": status,
        "suspended_until": until,
        "active_strikes": [strike_view(r) for r in active],
        "strike_days": rules.strike_days,
        "next_step": None if upcoming is None else upcoming.to_json(),
        "notices": [
            {
                **data,
                "type": notice.type,
                "at": iso(notice.created_ms),
                "appealable": appealable(cases.get(data.get("case_id")), member.id),
            }
            for notice, data in zip(notices, told, strict=True)
        ],
    }
