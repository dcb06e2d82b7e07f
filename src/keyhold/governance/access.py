"""The only path by which a non-participant obtains decrypted content.

For each request it checks, in order: the staff member's role fits the case; the case is in
an open state (report: open or appealed, assigned to this moderator; legal: approved); it has
not expired; staff, case and data share one region; every item is in the case's scope
(report: the reported messages and K before/after them in that conversation; legal: the
targets' conversations within the date range, and `message_content` is a granted category);
the DEK of every item is wrapped for the case's region. Only then is the access-log entry
appended and committed, and only after that commit are the items opened, with the case
region's KEK. A refusal names its reason and writes nothing; a message id that does not exist
is refused exactly like one out of scope (ids are not probes).

What a moderator reads of a message deleted under a preservation hold is what they would read
without the hold — a tombstone — so that no one but legal staff can tell that a hold exists;
the content such a hold preserves opens only for a legal case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import iso, now_ms
from keyhold.config import Settings
from keyhold.core.errors import Problem, invalid, not_found
from keyhold.core.writer import EventSink, Writer
from keyhold.crypto.envelope import ConversationKey, wrap_context
from keyhold.crypto.keyprovider import KeyProvider, KeyProviderError, WrappedKey
from keyhold.governance.accesslog import AccessLog, LogEntry, Subject, case_ref
from keyhold.governance.staff import HANDLE_LEGAL, TAKE_REPORTS, StaffMember, has_role
from keyhold.store import cases as case_store
from keyhold.store import conversations as conversation_store
from keyhold.store.cases import Case
from keyhold.store.rows import AnyRow

MAX_ITEMS = 200


def refused(reason: str) -> Problem:
    return Problem(403, "access-refused", "Access refused", reason)


def case_is_live(case: Case, staff: StaffMember, now: int) -> None:
    """Role, state, expiry and region: the checks that hold for every item of a case."""
    if case.region != staff.region:
        raise refused(f"case {case.id} is in region {case.region}; you act for region {staff.region}")
    if case.kind == "report":
        if not has_role(staff, TAKE_REPORTS):
            raise refused("report cases are read by moderators only")
        if case.status not in ("open", "appealed"):
            raise refused(f"case {case.id} is {case.status}; content is open only while it is under review")
        if case.assigned_to != staff.id:
            raise refused(f"case {case.id} is not assigned to you")
    else:
        if not has_role(staff, HANDLE_LEGAL):
            raise refused("legal cases are read by legal staff only")
        if case.status != "approved":
            raise refused(f"case {case.id} is {case.status}; content needs an approved case (four eyes)")
    if case.expires_ms is not None and case.expires_ms <= now:
        raise refused(f"case {case.id} expired at {iso(case.expires_ms)}")


class GovernedAccess:
    def __init__(
        self,
        engine: AsyncEngine,
        writer: Writer,
        provider: KeyProvider,
        log: AccessLog,
        settings: Settings,
    ) -> None:
        self._engine = engine
        self._writer = writer
        self._provider = provider
        self._log = log
        self._settings = settings

    async def report_scope(self, conn: AsyncConnection, case: Case) -> set[int]:
        assert case.conversation_id is not None  # every report case is about one conversation
        scope: set[int] = set()
        for reported in await case_store.case_message_ids(conn, case.id):
            window = await case_store.context_window(
                conn, case.conversation_id, reported, self._settings.report_context_messages
            )
            scope.update(window)
        return scope

    async def read_report_window(self, staff: StaffMember, case_id: int, reason: str) -> list[dict[str, Any]]:
        """The whole scope of a report case: reported messages and K before/after each."""
        async with self._engine.connect() as conn:
            case = await case_store.by_id(conn, case_id)
            if case is None or case.kind != "report":
                raise not_found(f"report case {case_id} not found")
            scope = sorted(await self.report_scope(conn, case))
        return await self.read_messages(staff, case_id, scope, reason)

    async def _out_of_scope(self, conn: AsyncConnection, case: Case, ids: Sequence[int]) -> list[int]:
        if case.kind == "report":
            scope = await self.report_scope(conn, case)
            return [i for i in ids if i not in scope]
        details = case.details
        targets = await case_store.target_ids(conn, case.id)
        allowed = await case_store.target_message_ids(
            conn, targets, details["start_ms"], details["end_ms"], ids
        )
        return [i for i in ids if i not in allowed]

    async def read_messages(
        self, staff: StaffMember, case_id: int, message_ids: Sequence[int], reason: str
    ) -> list[dict[str, Any]]:
        ids = sorted(set(message_ids))
        if not ids or len(ids) > MAX_ITEMS:
            raise invalid(f"ask for 1 to {MAX_ITEMS} messages")
        if not reason.strip():
            raise invalid("give the reason for this access; it is written to the access log")

        async def check_and_log(
            conn: AsyncConnection, sink: EventSink
        ) -> tuple[Any, dict[int, Any], dict[Any, Any], set[int]]:
            case = await case_store.by_id(conn, case_id)
            if case is None:
                raise not_found(f"case {case_id} not found")
            now = now_ms()
            case_is_live(case, staff, now)
            if case.kind == "legal" and "message_content" not in case.details.get(
                "categories", []
            ):
                raise refused(f"case {case.id} does not grant message_content")
            rows = await case_store.messages_for_access(conn, ids)
            if len(rows) < len(ids) or await self._out_of_scope(conn, case, ids):
                raise refused(f"one or more of the messages are outside the scope of case {case.id}")
            if any(r.kind == "e2ee" for r in rows.values()):
                # Nothing to open and nothing to log: the service has no key for this content.
                raise refused("end-to-end encrypted: the service holds no key and cannot read it")
            opening = await self._opening(conn, case, rows.values(), now)
            live = [r for r in rows.values() if r.id in opening]
            wraps = await case_store.region_wraps(
                conn, case.region, [(r.conversation_id, r.epoch) for r in live]
            )
            unreachable = [
                r.id
                for r in live
                if (r.conversation_id, r.epoch) not in wraps
                or wraps[(r.conversation_id, r.epoch)].wrapped_dek is None
            ]
            if unreachable:
                raise refused(
                    f"{len(unreachable)} of the messages are not readable with the keys of region {case.region}"
                )
            entry = await self._entry(conn, case, staff, rows, reason)
            await self._log.append(conn, sink, [entry])
            return case, rows, wraps, opening

        case, rows, wraps, opening = await self._writer.run(check_and_log)
        # The entry is durable: only now is anything opened.
        return [
            self._open(rows[i], wraps[(rows[i].conversation_id, rows[i].epoch)], case)
            if i in opening
            else _tombstone(rows[i])
            for i in ids
        ]

    async def _opening(self, conn: AsyncConnection, case: Case, rows: Any, now: int) -> set[int]:
        """The ids among `rows` whose content opens for this case. A message deleted but kept by
        a preservation hold opens only for a legal case of the hold's region that names a
        person the hold is on; to everyone else (moderators, other cases, other regions) it is
        the tombstone it would be without the hold, so no one else learns a hold exists."""
        kept = [r for r in rows if r.body is not None and r.deleted_ms is not None]
        preserved: set[int] = set()
        if kept and case.kind == "legal":
            targets = await case_store.target_ids(conn, case.id)
            preserved = await case_store.held_conversations(
                conn, {r.conversation_id for r in kept}, now, region=case.region, user_ids=targets
            )
        return {
            r.id for r in rows if r.body is not None and (r.deleted_ms is None or r.conversation_id in preserved)
        }

    async def _entry(
        self, conn: AsyncConnection, case: Case, staff: StaffMember, rows: dict[int, Any], reason: str
    ) -> LogEntry:
        details = case.details
        visible_from = int(details.get("nondisclosure_until_ms") or 0)
        by_conversation: dict[int, list[int]] = {}
        for row in rows.values():
            by_conversation.setdefault(row.conversation_id, []).append(row.id)
        subjects: dict[int, Subject] = {}
        for conversation_id, message_ids in by_conversation.items():
            for member in await conversation_store.member_rows(conn, [conversation_id]):
                subject = subjects.setdefault(member.id, Subject(member.id, [], visible_from))
                subject.messages.extend(message_ids)
        return LogEntry(
            type="content_accessed",
            details={
                **case_ref(case.id, case.kind, case.region),
                "staff": staff.id,
                "role": staff.role,
                "reason": reason.strip()[:500],
                # A count only: which messages were read is in each member's salted block, so
                # a member shown this entry learns nothing about conversations not theirs.
                "messages": len(rows),
            },
            subjects=list(subjects.values()),
        )

    def _open(self, row: Any, wrap: Any, case: Case) -> dict[str, Any]:
        try:
            dek = self._provider.unwrap(
                case.region,
                WrappedKey(wrap.kek_version, wrap.wrapped_dek),
                wrap_context(row.conversation_id, row.epoch),
            )
        except KeyProviderError as exc:
            raise Problem(503, "key-unavailable", "Key unavailable", str(exc)) from exc
        text = ConversationKey(row.conversation_id, row.epoch, dek).open_message(
            row.id, row.sender_id, row.body
        )
        return {**_item(row), "text": text.decode(), "deleted": row.deleted_ms is not None}


def _item(row: AnyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "conversation_id": row.conversation_id,
        "sender_id": row.sender_id,
        "sender": row.sender,
        "sent_at": iso(row.sent_ms),
        "kind": row.kind,
    }


def _tombstone(row: AnyRow) -> dict[str, Any]:
    return {**_item(row), "text": None, "deleted": True}
