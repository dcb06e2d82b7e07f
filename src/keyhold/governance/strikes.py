"""Strikes and automatic escalation.

A strike is a finding against a member: a moderator's decision (`warn`, `remove_message`,
`suspend`, `ban`) or the system's own (an automatic scanning verdict). Each counts for
`strike_days`; when a new one brings the member's unexpired strikes to a rung of the
enforcement ladder (the `[enforcement]` table of the safety policy), the system suspends or
bans them in the same transaction. Such an automatic action is a decided report case of its
own, logged as a `case_decided` entry with `automatic: true` (never any content), and the
member appeals it like a moderator's decision. Overturning a decision on appeal deletes its
strike; overturning an automatic action also deletes the strike that triggered it.

Governance cannot read the safety policy (the layers forbid it): the wiring hands `Strikes` a
callable that returns the current `Ladder`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.clock import iso
from keyhold.core.accounts import BANNED
from keyhold.core.writer import EventSink, PendingEvent
from keyhold.governance.accesslog import AccessLog, LogEntry, case_ref
from keyhold.store import accounts as account_store
from keyhold.store import cases as case_store
from keyhold.store import strikes as store
from keyhold.store.cases import Case

SOURCES = ("moderator", "automatic")
# Decisions that find a violation by the member; `escalate_legal` hands over, it finds nothing.
STRIKING_ACTIONS = ("warn", "remove_message", "suspend", "ban")
# Never punished: a member who may hurt themselves is offered help, not a strike.
NEVER_PUNISHED = ("self_harm",)
HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class Step:
    """A rung of the ladder: what `at` active strikes bring."""

    at: int
    action: str  # suspend | ban
    hours: int | None = None  # a suspension's length; None for a ban

    def to_json(self) -> dict[str, Any]:
        return {"at_strikes": self.at, "action": self.action, "hours": self.hours}


@dataclass(frozen=True)
class Ladder:
    """How long a strike counts and what so many unexpired strikes bring (0: that rung is off).
    The defaults are those of `safety.enforcement_policy`, which fills this at wiring time."""

    strike_days: int = 90
    suspend_at: int = 3
    suspend_hours: int = 24
    long_suspend_at: int = 4
    long_suspend_hours: int = 168
    ban_at: int = 5

    def steps(self) -> list[Step]:
        rungs = [
            Step(self.suspend_at, "suspend", self.suspend_hours),
            Step(self.long_suspend_at, "suspend", self.long_suspend_hours),
            Step(self.ban_at, "ban"),
        ]
        return [s for s in rungs if s.at > 0]

    def step(self, active: int) -> Step | None:
        """The highest rung `active` strikes reach."""
        reached = [s for s in self.steps() if active >= s.at]
        return max(reached, key=lambda s: s.at) if reached else None

    def next_step(self, active: int) -> Step | None:
        ahead = [s for s in self.steps() if s.at > active]
        return min(ahead, key=lambda s: s.at) if ahead else None


@dataclass(frozen=True)
class EscalationResult:
    """What a strike did. `strike_id` is None when nothing was recorded (a category that is
    never punished); `action`, `case_id` and `until_ms` are set when it escalated."""

    strike_id: int | None
    active_strikes: int
    action: str | None = None  # suspend | ban
    case_id: int | None = None  # the automatic case recording it, which the member may appeal
    until_ms: int | None = None


async def restrict(conn: AsyncConnection, user_id: int, until_ms: int) -> bool:
    """Suspend the member until `until_ms` (`BANNED`: a ban, which also ends every session),
    unless as much is already in force: one restriction never shortens another. Whether it
    changed anything."""
    row = await account_store.by_id(conn, user_id)
    if row is None or row.suspended_until_ms >= until_ms:
        return False
    await account_store.restrict_user(conn, user_id, suspended_until_ms=until_ms)
    if until_ms >= BANNED:
        await account_store.revoke_all_sessions(conn, user_id)
    return True


def strike_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "user_id": row.user_id,
        "case_id": row.case_id,
        "category": row.category,
        "source": row.source,
        "created_at": iso(row.created_ms),
        "expires_at": iso(row.expires_ms),
    }


class Strikes:
    def __init__(self, log: AccessLog) -> None:
        self._log = log
        # The current ladder: the wiring points this at the safety policy file.
        self.ladder: Callable[[], Ladder] = Ladder

    async def strike(
        self,
        conn: AsyncConnection,
        sink: EventSink,
        user_id: int,
        category: str,
        source: str,
        case_id: int | None,
        now: int,
    ) -> EscalationResult:
        """Record a strike against `user_id` and escalate in the same transaction (the caller's
        writer job). The entry point for a moderator's decision and for the system's own
        findings (`source="automatic"`, `case_id` the system case or None)."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}")
        if category in NEVER_PUNISHED:
            return EscalationResult(None, await store.active_count(conn, user_id, now))
        ladder = self.ladder()
        expires = now + ladder.strike_days * DAY_MS
        strike_id = await store.insert_strike(
            conn,
            {
                "user_id": user_id,
                "case_id": case_id,
                "category": category,
                "source": source,
                "created_ms": now,
                "expires_ms": expires,
            },
        )
        active = await store.active_count(conn, user_id, now)
        told = {"case_id": case_id, "category": category, "source": source, "expires_at": iso(expires)}
        sink.add(PendingEvent([user_id], "moderation.strike", data={**told, "active_strikes": active}))
        step = ladder.step(active)
        if step is None:
            return EscalationResult(strike_id, active)
        escalated = await self._escalate(conn, sink, user_id, step, active, category, strike_id, now)
        if escalated is None:
            return EscalationResult(strike_id, active)
        auto_case, until = escalated
        return EscalationResult(strike_id, active, step.action, auto_case, until)

    async def _escalate(
        self,
        conn: AsyncConnection,
        sink: EventSink,
        user_id: int,
        step: Step,
        active: int,
        category: str,
        trigger: int,
        now: int,
    ) -> tuple[int, int] | None:
        """Apply `step` unless as much is already in force (a moderator's suspension decided
        with this very strike, an earlier ban): the automatic case and the end, or None."""
        row = await account_store.by_id(conn, user_id)
        until = BANNED if step.hours is None else now + step.hours * HOUR_MS
        if row is None or row.deleted_ms is not None or not await restrict(conn, user_id, until):
            return None
        length = "a ban" if step.hours is None else f"a {step.hours}-hour suspension"
        note = f"automatic: {active} active strikes reach {length} under the enforcement policy"
        case_id = await case_store.insert_case(
            conn,
            {
                "kind": "report",
                "region": row.region,
                "status": "decided",
                "created_ms": now,
                "reporter_id": None,
                "conversation_id": None,
                "assigned_to": None,
                "details": {
                    "category": category,
                    "comment": "",
                    "automatic": True,
                    "active_strikes": active,
                    "trigger_strike": trigger,
                },
                "decision": {
                    "action": step.action,
                    "note": note,
                    "decided_by": None,
                    "decided_at": iso(now),
                    "suspend_hours": step.hours,
                    "hotline_reference": None,
                    "offenders": [user_id],
                    "automatic": True,
                    "until_ms": until,
                },
            },
        )
        # As `reports.decided_entry` makes it, marked automatic: no content, no member named.
        entry = {**case_ref(case_id, "report", row.region), "category": category, "action": step.action}
        entry.update(appeal=False, automatic=True, active_strikes=active)
        await self._log.append(conn, sink, [LogEntry("case_decided", entry)])
        told = {"case_id": case_id, "action": step.action, "appeal": False, "note": note, "can_appeal": True}
        until_text = None if step.hours is None else iso(until)
        sink.add(
            PendingEvent(
                [user_id], "moderation.action", data={**told, "automatic": True, "until": until_text}
            )
        )
        return case_id, until

    async def overturned(self, conn: AsyncConnection, case: Case) -> None:
        """A decision overturned on appeal: its strikes go. An automatic action also lifts what
        it imposed (if nothing longer replaced it) and takes away the strike that triggered it."""
        await store.delete_of_case(conn, case.id)
        decision = case.decision
        if not decision.get("automatic"):
            return
        for user_id in decision.get("offenders", []):
            await store.lift_suspension(conn, user_id, int(decision["until_ms"]))
        trigger = case.details.get("trigger_strike")
        if isinstance(trigger, int):
            await store.delete_strike(conn, trigger)
