"""Cases the scanning pipeline opens, and the review of the messages it held.

The system reports like a member does (`governance.reports`), with no reporter: a `flag` or
`hold` verdict opens a report case in the sender's region, in the transaction that stored the
message (`core.screening` calls `on_screened` there), with the verdict in its details (action,
category, scores, what fired — never the content) and a `case_opened` entry in the access log
marked `source: system`. A moderator claims it and reads the message through
`governance.access` like any report, every read logged.

A held message is stored sealed but delivered to no one but its sender. Its case is decided by
releasing or refusing it, nothing else (`ReportService.decide` refuses such a case):
- release: members get it now (`message.new`), it appears in their history at its place, and
  the sender is told (`message.review`); the decision is `no_violation`;
- refuse: it is deleted (content destroyed unless a preservation hold keeps it hidden), no one
  else ever sees it, and the sender is told, with the note; the decision is `remove_message`,
  which the sender may appeal.
A `block` verdict stores nothing and opens no case: it is an automatic strike (`strikes`).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import iso, now_ms
from keyhold.core.erasure import Erasure
from keyhold.core.errors import conflict, not_found
from keyhold.core.messages import MessageService
from keyhold.core.screening import Screened
from keyhold.core.writer import EventSink, PendingEvent, Writer
from keyhold.governance.accesslog import AccessLog, LogEntry, case_ref
from keyhold.governance.reports import CATEGORIES, CHILD_SAFETY, ReportService, case_view, decided_entry
from keyhold.governance.staff import SEE_REPORTS, TAKE_REPORTS, StaffMember, require_role
from keyhold.governance.strikes import Strikes
from keyhold.store import accounts as account_store
from keyhold.store import cases as case_store
from keyhold.store import contacts as contact_store
from keyhold.store import messages as message_store
from keyhold.store import verdicts as verdict_store
from keyhold.store.cases import Case
from keyhold.store.rows import AnyRow

SYSTEM = "system"
# Hash-list categories under the name report cases use.
CATEGORY_NAMES = {"csam": "child_sexual_content"}


def case_category(category: str | None) -> str:
    name = CATEGORY_NAMES.get(category or "", category or "other")
    return name if name in CATEGORIES else "other"


def verdict_view(screened: Screened) -> dict[str, Any]:
    s = screened.screening
    return {
        "id": screened.verdict_id,
        "action": s.action,
        "category": s.category,
        "policy": s.policy,
        "scores": {k: round(float(v), 4) for k, v in s.scores.items()},
        "fired": list(s.fired),
    }


class HeldMessages:
    def __init__(
        self,
        engine: AsyncEngine,
        writer: Writer,
        log: AccessLog,
        erasure: Erasure,
        messages: MessageService,
        reports: ReportService,
        strikes: Strikes,
    ) -> None:
        self._engine = engine
        self._writer = writer
        self._log = log
        self._erasure = erasure
        self._messages = messages
        self._reports = reports
        self._strikes = strikes

    # -- the seam (`MessageService.screening.on_screened`) ------------------------------------

    async def on_screened(self, conn: AsyncConnection, sink: EventSink, screened: Screened) -> None:
        """In the transaction that recorded a verdict: a case for a stored message (flag,
        hold), an automatic strike for a blocked send (self-harm is never one)."""
        if screened.message_id is None:
            category = screened.screening.category or "other"
            await self._strikes.strike(conn, sink, screened.sender_id, category, "automatic", None, now_ms())
            return
        sender = await account_store.by_id(conn, screened.sender_id)
        assert sender is not None  # the message was just stored under their id
        category = case_category(screened.screening.category)
        held = screened.screening.action == "hold"
        case_id = await case_store.insert_case(
            conn,
            {
                "kind": "report",
                "region": sender.region,
                "status": "open",
                "created_ms": now_ms(),
                "reporter_id": None,
                "conversation_id": screened.conversation_id,
                "assigned_to": await case_store.least_loaded_moderator(conn, sender.region),
                "details": {
                    "category": category,
                    "comment": "",
                    "child_safety": category in CHILD_SAFETY,
                    "source": SYSTEM,
                    "held": held,
                    "verdict": verdict_view(screened),
                },
            },
        )
        await case_store.add_messages(conn, case_id, [screened.message_id])
        opened = {**case_ref(case_id, "report", sender.region), "category": category, "messages": 1}
        await self._log.append(
            conn, sink, [LogEntry("case_opened", {**opened, "source": SYSTEM, "held": held})]
        )

    # -- moderators ---------------------------------------------------------------------------

    async def list_held(self, staff: StaffMember, after: int, limit: int) -> dict[str, Any]:
        """Open cases of held messages in the moderator's region (no content), oldest first."""
        require_role(staff, SEE_REPORTS, "seeing held messages")
        items: list[dict[str, Any]] = []
        async with self._engine.connect() as conn:
            cases = await case_store.list_cases(conn, "report", staff.region, after, limit, "open")
            for case in cases:
                if case.details.get("held"):
                    items.append(await self._view(conn, case))
        return {"items": items, "next_after": cases[-1].id if len(cases) == limit else None}

    async def release(self, staff: StaffMember, case_id: int, note: str) -> dict[str, Any]:
        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            case, row = await self._held(conn, staff, case_id)
            now = now_ms()
            await verdict_store.set_review(conn, row.id, None)
            released = (await message_store.by_ids(conn, [row.id]))[row.id]
            message = (await self._messages.render_for_member(conn, [released]))[0]
            members = await conn.run_sync(message_store.active_members, [row.conversation_id])
            # Those it is kept from (they block its sender; asked to join since, not accepted).
            hidden = (await contact_store.kept_from(conn, [released])).get(row.id, set())
            others = [
                uid
                for uid in members.get(row.conversation_id, {})
                if uid != row.sender_id and uid not in hidden
            ]
            sink.add(
                PendingEvent(
                    others, "message.new", row.conversation_id, row.id, message_json=orjson.dumps(message)
                )
            )
            await verdict_store.show_in_preview(conn, row.conversation_id, row.id)
            await self._decide(conn, sink, staff, case, row, "released", note, now)

        await self._writer.run(run)
        return await self.get(staff, case_id)

    async def refuse(self, staff: StaffMember, case_id: int, note: str) -> dict[str, Any]:
        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            case, row = await self._held(conn, staff, case_id)
            now = now_ms()
            await self._erasure.erase(conn, sink, [row], now)
            await verdict_store.set_review(conn, row.id, "refused")
            await self._decide(conn, sink, staff, case, row, "refused", note, now)
            category = case.details["category"]
            await self._strikes.strike(conn, sink, row.sender_id, category, "moderator", case.id, now)

        await self._writer.run(run)
        return await self.get(staff, case_id)

    async def get(self, staff: StaffMember, case_id: int) -> dict[str, Any]:
        case = await self._reports.get(staff, case_id)
        async with self._engine.connect() as conn:
            reviews = await verdict_store.review_of(conn, case["reported_messages"])
        return {**case, "held_message": _review_state(case, reviews)}

    async def _view(self, conn: AsyncConnection, case: Case) -> dict[str, Any]:
        message_ids = await case_store.case_message_ids(conn, case.id)
        view = case_view(case, message_ids)
        return {**view, "held_message": _review_state(view, await verdict_store.review_of(conn, message_ids))}

    async def _held(self, conn: AsyncConnection, staff: StaffMember, case_id: int) -> tuple[Case, AnyRow]:
        """The case (the moderator's region, open, theirs) and its message, still held."""
        require_role(staff, TAKE_REPORTS, "reviewing held messages")
        case = await case_store.by_id(conn, case_id)
        if (
            case is None
            or case.kind != "report"
            or case.region != staff.region
            or not case.details.get("held")
        ):
            raise not_found(f"no held message under case {case_id} in region {staff.region}")
        if case.status != "open" or case.assigned_to != staff.id:
            raise conflict(f"case {case_id} is {case.status} and must be open and assigned to you (claim it)")
        message_ids = await case_store.case_message_ids(conn, case_id)
        rows = await message_store.by_ids(conn, message_ids)
        row = next(iter(rows.values()), None)
        if row is None or row.review != "pending" or row.deleted_ms is not None:
            raise conflict(f"the message of case {case_id} is no longer held (deleted by its sender)")
        return case, row

    async def _decide(
        self,
        conn: AsyncConnection,
        sink: EventSink,
        staff: StaffMember,
        case: Case,
        row: AnyRow,
        outcome: str,
        note: str,
        now: int,
    ) -> None:
        """The review is the case's decision: logged and told like any other."""
        action = "no_violation" if outcome == "released" else "remove_message"
        note = note.strip()[:1000]
        decision = {
            "action": action,
            "review": outcome,
            "note": note,
            "decided_by": staff.id,
            "decided_at": iso(now),
            "suspend_hours": None,
            "hotline_reference": None,
            "offenders": [row.sender_id],
        }
        await case_store.update_case(conn, case.id, status="decided", decision=decision)
        await self._log.append(
            conn, sink, [decided_entry(case, case.details["category"], action, appeal=False)]
        )
        told = {
            "message_id": row.id,
            "outcome": outcome,
            "case_id": case.id,
            "note": note,
            "can_appeal": outcome == "refused",
        }
        sink.add(PendingEvent([row.sender_id], "message.review", row.conversation_id, row.id, data=told))


def _review_state(case: dict[str, Any], reviews: dict[int, tuple[str | None, bool]]) -> dict[str, Any] | None:
    """Where a held case's message stands (None: not a hold case): pending_review, released,
    refused, or deleted (by its sender, before a moderator decided)."""
    if not case["details"].get("held") or not case["reported_messages"]:
        return None
    message_id = case["reported_messages"][0]
    review, deleted = reviews.get(message_id, (None, True))
    if review == "refused":
        state = "refused"
    elif deleted:
        state = "deleted"
    else:
        state = "pending_review" if review == "pending" else "released"
    return {"message_id": message_id, "state": state}
