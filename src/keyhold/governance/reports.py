"""Report cases: a participant reports messages; a moderator of the reporter's region reviews
exactly those messages and K before/after them (through `governance.access`), decides, and the
people concerned are told. The reported member may appeal once; another moderator decides.

Child-safety categories follow the mandatory-report path: a decision that finds a violation
must record the reference of the report filed with the child-safety hotline.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import iso, now_ms
from keyhold.config import Settings
from keyhold.core.accounts import BANNED, Member
from keyhold.core.erasure import Erasure
from keyhold.core.errors import conflict, forbidden, invalid, not_found, not_yours
from keyhold.core.matrix_ids import room_id, user_id
from keyhold.core.writer import EventSink, PendingEvent, Writer
from keyhold.crypto.franking import KEY_FIELD, canonical, commitment_matches
from keyhold.crypto.franking_keys import FrankingKeys
from keyhold.crypto.signed_json import decode_base64
from keyhold.governance.accesslog import AccessLog, LogEntry, case_ref
from keyhold.governance.staff import SEE_REPORTS, TAKE_REPORTS, StaffMember, require_role
from keyhold.governance.standing import case_strikes
from keyhold.governance.strikes import STRIKING_ACTIONS, Strikes, restrict
from keyhold.store import accounts as account_store
from keyhold.store import cases as store
from keyhold.store import conversations as conversation_store
from keyhold.store import messages as message_store
from keyhold.store import verdicts as verdict_store
from keyhold.store.cases import Case
from keyhold.store.rows import AnyRow

CATEGORIES = (
    "harassment",
    "hate",
    "child_sexual_content",
    "grooming",
    "sexual_extortion",
    "violent_threat",
    "self_harm",
    "scam",
    "spam",
    "other",
)
CHILD_SAFETY = ("child_sexual_content", "grooming", "sexual_extortion")
ACTIONS = ("no_violation", "remove_message", "warn", "suspend", "ban", "escalate_legal")
MAX_REPORTED = 10


@dataclass(frozen=True)
class Revealed:
    """A franked e2ee message as its reporter reveals it (docs/e2ee.md, franking)."""

    message_id: int
    content: Mapping[str, Any]
    franking_key: str
    tag: str


def decided_entry(case: Case, category: str, action: str, appeal: bool) -> LogEntry:
    """The log entry of a decision (or an appeal's): what transparency reports count."""
    details = {**case_ref(case.id, "report", case.region), "category": category}
    return LogEntry("case_decided", {**details, "action": action, "appeal": appeal})


def case_view(case: Case, message_ids: Sequence[int]) -> dict[str, Any]:
    return {
        "id": case.id,
        "kind": case.kind,
        "region": case.region,
        "status": case.status,
        "created_at": iso(case.created_ms),
        "conversation_id": case.conversation_id,
        "assigned_to": case.assigned_to,
        "assigned_to_name": case.assigned_to_name,
        "reported_messages": list(message_ids),
        "details": case.details,
        "decision": case.decision,
    }


class ReportService:
    def __init__(
        self,
        engine: AsyncEngine,
        writer: Writer,
        log: AccessLog,
        erasure: Erasure,
        settings: Settings,
        franking: FrankingKeys,
        strikes: Strikes,
    ) -> None:
        self._franking = franking
        self._strikes = strikes
        self._engine = engine
        self._writer = writer
        self._log = log
        self._erasure = erasure
        self._settings = settings

    async def report(
        self,
        member: Member,
        conversation_id: int,
        message_ids: Sequence[int],
        category: str,
        comment: str,
        revealed: Revealed | None = None,
    ) -> dict[str, Any]:
        """Open a report case. `revealed`: a franked e2ee message's content and franking key
        as the reporter's device decrypted them, with the service's tag: checked here, the case
        is marked `verified_sender` and holds what was revealed, and only that."""
        if category not in CATEGORIES:
            raise invalid(f"category must be one of {', '.join(CATEGORIES)}")
        ids = sorted(set(message_ids))
        if not 1 <= len(ids) <= MAX_REPORTED:
            raise invalid(f"report 1 to {MAX_REPORTED} messages")

        async def run(conn: AsyncConnection, sink: EventSink) -> dict[str, Any]:
            membership = await conversation_store.membership(conn, conversation_id, member.id)
            if membership is None or membership.left_ms is not None:
                raise not_yours("conversation")
            found = await message_store.by_ids(conn, ids)
            if any(i not in found or found[i].conversation_id != conversation_id for i in ids):
                raise not_found("every reported message must be in that conversation")
            now = now_ms()
            assignee = await store.least_loaded_moderator(conn, member.region)
            details: dict[str, Any] = {
                "category": category,
                "comment": comment.strip()[:1000],
                "child_safety": category in CHILD_SAFETY,
            }
            if revealed is not None:
                if revealed.message_id not in ids:
                    raise invalid("the revealed message must be one of the reported ones")
                details["verified_sender"] = True
                details["revealed"] = self._verified(found[revealed.message_id], revealed)
            case_id = await store.insert_case(
                conn,
                {
                    "kind": "report",
                    "region": member.region,
                    "status": "open",
                    "created_ms": now,
                    "reporter_id": member.id,
                    "conversation_id": conversation_id,
                    "assigned_to": assignee,
                    "details": details,
                },
            )
            await store.add_messages(conn, case_id, ids)
            await self._log.append(
                conn,
                sink,
                [
                    LogEntry(
                        "case_opened",
                        {
                            **case_ref(case_id, "report", member.region),
                            "category": category,
                            "messages": len(ids),
                        },
                    )
                ],
            )
            case = await store.by_id(conn, case_id)
            assert case is not None
            return case_view(case, ids)

        return await self._writer.run(run)

    def _verified(self, row: Any, revealed: Revealed) -> dict[str, Any]:
        """What a franked report reveals, once it checks out: the service's tag is the one it
        gave this very message (not another's, replayed), and the commitment it binds opens
        with the revealed key and content for this sender, device and conversation."""
        unverifiable = invalid("the revealed message does not verify: it cannot open a verified report")
        if row.kind != "e2ee" or row.franking is None or row.sender_device is None:
            raise invalid("that message was not franked: report it without revealing it")
        stored = json.loads(row.franking)
        try:
            commitment = decode_base64(stored["commitment"])
            tag = decode_base64(revealed.tag)
            franking_key = decode_base64(revealed.franking_key)
        except ValueError:
            raise unverifiable from None
        server = self._settings.server_name
        sender, room = user_id(row.sender, server), room_id(row.conversation_id, server)
        if not hmac.compare_digest(tag, decode_base64(stored["tag"])) or not self._franking.verify(
            stored["key_id"], tag, commitment, sender, row.sender_device, room, row.id, row.sent_ms
        ):
            raise unverifiable
        if not commitment_matches(commitment, franking_key, revealed.content, room, sender, row.sender_device):
            raise unverifiable
        content: dict[str, Any] = {k: v for k, v in revealed.content.items() if k != KEY_FIELD}
        try:
            orjson.dumps(content)
        except orjson.JSONEncodeError:
            # Verified, but holding what the case store cannot keep as is (an integer beyond
            # 64 bits): kept as the canonical JSON text the commitment covered.
            content = {"canonical_json": canonical(revealed.content).decode()}
        return {"message_id": row.id, "sender": row.sender, "sender_device": row.sender_device, "content": content}

    async def _case_for(self, conn: AsyncConnection, staff: StaffMember, case_id: int) -> Case:
        require_role(staff, SEE_REPORTS, "seeing report cases")
        case = await store.by_id(conn, case_id)
        if case is None or case.kind != "report" or case.region != staff.region:
            raise not_found(f"report case {case_id} not found in region {staff.region}")
        return case

    async def list_cases(
        self, staff: StaffMember, after: int, limit: int, status: str | None
    ) -> list[dict[str, Any]]:
        require_role(staff, SEE_REPORTS, "seeing report cases")
        async with self._engine.connect() as conn:
            rows = await store.list_cases(conn, "report", staff.region, after, limit, status)
            return [case_view(r, await store.case_message_ids(conn, r.id)) for r in rows]

    async def get(self, staff: StaffMember, case_id: int) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            case = await self._case_for(conn, staff, case_id)
            message_ids = await store.case_message_ids(conn, case_id)
            # The active strikes of the people it is about: what a decision here may escalate.
            return {**case_view(case, message_ids), "strikes": await case_strikes(conn, case, message_ids)}

    async def claim(self, staff: StaffMember, case_id: int) -> dict[str, Any]:
        require_role(staff, TAKE_REPORTS, "taking report cases")

        async def run(conn: AsyncConnection, _sink: EventSink) -> None:
            case = await self._case_for(conn, staff, case_id)
            if case.assigned_to not in (None, staff.id):
                raise conflict(f"case {case_id} is assigned to another moderator")
            if case.status == "appealed" and case.decision.get("decided_by") == staff.id:
                raise forbidden("an appeal is decided by a different moderator")
            await store.update_case(conn, case_id, assigned_to=staff.id)

        await self._writer.run(run)
        return await self.get(staff, case_id)

    async def decide(
        self,
        staff: StaffMember,
        case_id: int,
        action: str,
        note: str,
        suspend_hours: int | None,
        hotline_reference: str | None,
    ) -> dict[str, Any]:
        require_role(staff, TAKE_REPORTS, "deciding report cases")
        if action not in ACTIONS:
            raise invalid(f"action must be one of {', '.join(ACTIONS)}")
        if action == "suspend" and not (suspend_hours and 1 <= suspend_hours <= 24 * 365):
            raise invalid("a suspension needs suspend_hours between 1 and 8760")

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            case = await self._case_for(conn, staff, case_id)
            if case.status != "open" or case.assigned_to != staff.id:
                raise conflict(f"case {case_id} is {case.status} and must be open and assigned to you (claim it)")
            details = case.details
            if details.get("held") and await verdict_store.still_held(conn, case_id):
                raise conflict(f"case {case_id} holds a message for review: release or refuse it (governance.held)")
            if details.get("child_safety") and action != "no_violation" and not hotline_reference:
                raise invalid("child-safety cases need the hotline report reference (mandatory report)")
            now = now_ms()
            reported = await store.case_message_ids(conn, case_id)
            rows = await message_store.by_ids(conn, reported)
            offenders = sorted({r.sender_id for r in rows.values()})
            await self._apply(conn, sink, action, offenders, list(rows.values()), suspend_hours, now)
            decision = {
                "action": action,
                "note": note.strip()[:1000],
                "decided_by": staff.id,
                "decided_at": iso(now),
                "suspend_hours": suspend_hours,
                "hotline_reference": hotline_reference,
                "offenders": offenders,
            }
            await store.update_case(conn, case_id, status="decided", decision=decision)
            await self._log.append(
                conn, sink, [decided_entry(case, details["category"], action, appeal=False)]
            )
            self._tell(sink, case, offenders, action, note.strip()[:1000], appeal=False)
            if action in STRIKING_ACTIONS:
                for uid in offenders:
                    category = details["category"]
                    await self._strikes.strike(conn, sink, uid, category, "moderator", case_id, now)

        await self._writer.run(run)
        return await self.get(staff, case_id)

    async def _apply(
        self,
        conn: AsyncConnection,
        sink: EventSink,
        action: str,
        offenders: list[int],
        reported: list[AnyRow],
        hours: int | None,
        now: int,
    ) -> None:
        if action == "remove_message":
            live = [row for row in reported if row.deleted_ms is None]
            await self._erasure.erase(conn, sink, live, now)
            # Removed like a sender's delete for everyone: open clients drop the text now.
            members = await conn.run_sync(message_store.active_members, {row.conversation_id for row in live})
            await self._erasure.announce(conn, sink, live, members)
        elif action == "suspend" and hours:
            for uid in offenders:
                await restrict(conn, uid, now + hours * 3600 * 1000)  # never shortens a longer one, or a ban
        elif action == "ban":
            for uid in offenders:
                # Not `disabled`: a banned member can still sign in, to appeal and nothing else.
                await account_store.restrict_user(conn, uid, suspended_until_ms=BANNED)
                await account_store.revoke_all_sessions(conn, uid)

    def _tell(
        self, sink: EventSink, case: Case, offenders: list[int], action: str, note: str, appeal: bool
    ) -> None:
        """The reporter and the people acted on learn the outcome, with the moderator's note."""
        told = {"case_id": case.id, "action": action, "appeal": appeal, "note": note}
        if case.reporter_id is not None:  # None: the system's own case (an automatic action)
            sink.add(PendingEvent([case.reporter_id], "report.outcome", data=told))
        if action != "no_violation" or appeal:
            sink.add(PendingEvent(offenders, "moderation.action", data={**told, "can_appeal": not appeal}))

    async def appeal(self, member: Member, case_id: int, statement: str) -> None:
        async def run(conn: AsyncConnection, _sink: EventSink) -> None:
            case = await store.by_id(conn, case_id)
            decision = dict(case.decision) if case else {}
            if case is None or member.id not in decision.get("offenders", []):
                raise not_found("no decision about you in that case")
            if case.status != "decided" or decision.get("appeal"):
                raise conflict("a decision can be appealed once")
            if decision["action"] == "no_violation":
                raise conflict("there is nothing to appeal")
            decision["appeal"] = {"statement": statement.strip()[:2000], "at": iso(now_ms())}
            await store.update_case(
                conn, case_id, status="appealed", assigned_to=None, decision=decision
            )

        await self._writer.run(run)

    async def decide_appeal(
        self, staff: StaffMember, case_id: int, uphold: bool, note: str
    ) -> dict[str, Any]:
        require_role(staff, TAKE_REPORTS, "deciding appeals")

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            case = await self._case_for(conn, staff, case_id)
            decision = dict(case.decision)
            if case.status != "appealed":
                raise conflict(f"case {case_id} has no pending appeal")
            if decision.get("decided_by") == staff.id:
                raise forbidden("an appeal is decided by a different moderator")
            if case.assigned_to != staff.id:
                raise conflict(f"take the appeal first (claim case {case_id})")
            if not uphold:
                if not decision.get("automatic"):  # an automatic action lifts only what it imposed
                    await revert_action(conn, decision["action"], decision["offenders"])
                await self._strikes.overturned(conn, case)
            decision["appeal"].update({"upheld": uphold, "note": note.strip()[:1000], "decided_by": staff.id})
            await store.update_case(
                conn, case_id, status="appeal_decided", decision=decision
            )
            action = decision["action"] if uphold else "overturned"
            category = case.details["category"]
            await self._log.append(conn, sink, [decided_entry(case, category, action, appeal=True)])
            outcome = "upheld" if uphold else "overturned"
            self._tell(sink, case, decision["offenders"], outcome, note.strip()[:1000], appeal=True)

        await self._writer.run(run)
        return await self.get(staff, case_id)


async def revert_action(conn: AsyncConnection, action: str, offenders: list[int]) -> None:
    if action in ("suspend", "ban"):
        for uid in offenders:
            await account_store.update_user(conn, uid, suspended_until_ms=0)
    # A removed message stays removed: its content was destroyed (noted in the decision).
