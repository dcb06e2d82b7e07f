"""Governed access: staff, cases, the access log and its public face, notifications.

Built by the wiring (`keyhold.app`) from core's pieces; core never sees it. What the API asks of
governance beyond the services (log entries for auditors, a member's own access events, the
transparency report) is decided here, roles included.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import now_ms
from keyhold.config import Settings
from keyhold.core.accounts import Member
from keyhold.core.erasure import Erasure
from keyhold.core.errors import Problem, invalid
from keyhold.core.passwords import Passwords
from keyhold.core.retrying import run_periodically
from keyhold.core.signin import SignInGuard
from keyhold.core.writer import EventSink, PendingEvent, Writer
from keyhold.crypto.franking_keys import FrankingKeys
from keyhold.crypto.keyprovider import KeyProvider
from keyhold.crypto.signing import ServiceSigner
from keyhold.governance.access import GovernedAccess
from keyhold.governance.accesslog import AccessLog, subject_view
from keyhold.governance.legal import LegalService
from keyhold.governance.reports import ReportService
from keyhold.governance.staff import AUDIT, StaffMember, StaffService, has_role, require_role
from keyhold.governance.standing import member_standing
from keyhold.governance.strikes import Strikes
from keyhold.governance.transparency import build_report, period_bounds
from keyhold.store import accesslog as log_store
from keyhold.store import cases as case_store
from keyhold.store import merkle_log
from keyhold.store.blobs import BlobStore
from keyhold.store.merkle_log import ACCESS_LOG

log = logging.getLogger("keyhold.governance")
NOTIFY_INTERVAL_SECONDS = 5.0


@dataclass
class Governance:
    signer: ServiceSigner
    log: AccessLog
    staff: StaffService
    access: GovernedAccess
    reports: ReportService
    legal: LegalService
    engine: AsyncEngine
    writer: Writer
    strikes: Strikes
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def notify_due(self) -> int:
        """Announce entries whose non-disclosure period ended (members see them from now on)."""

        async def run(conn: AsyncConnection, sink: EventSink) -> int:
            due = await log_store.due_notifications(conn, now_ms())
            if not due:
                return 0
            await log_store.mark_notified(conn, [(r.idx, r.user_id) for r in due], now_ms())
            for row in due:
                sink.add(PendingEvent([row.user_id], "access.visible", data={"index": row.idx}))
            return len(due)

        return await self.writer.run(run)

    async def _due_work(self) -> None:
        await self.notify_due()
        await self.legal.expire_holds()

    # -- the log's public face ------------------------------------------------------------------

    async def case_count(self) -> int:
        async with self.engine.connect() as conn:
            return await case_store.count(conn)

    @property
    def committed_size(self) -> int:
        return self.log.head.size if self.log.head else 0

    async def log_entries(self, staff: StaffMember, start: int, limit: int) -> dict[str, Any]:
        """Whole entries, for auditors."""
        require_role(staff, AUDIT, "reading whole log entries")
        end = min(start + limit, self.committed_size)
        async with self.engine.connect() as conn:
            rows = await merkle_log.entries(conn, ACCESS_LOG, start, end)
        return {"items": [{"index": r.idx, "entry": r.entry.decode()} for r in rows], "next_start": end}

    async def standing(self, member: Member) -> dict[str, Any]:
        """The member's active strikes, restriction, next rung and moderation notices."""
        return await member_standing(self.engine, self.strikes.ladder, member)

    async def access_events(self, member: Member) -> dict[str, Any]:
        """Staff access to the member's data, each entry with its inclusion proof."""
        return await subject_view(self.engine, self.log, member.id)

    async def transparency_report(self, period: str, viewer: StaffMember | None) -> dict[str, Any]:
        """The report of a period, computed from the log. A running period's report would
        change with every new case (polling it would show legal requests and holds as they
        happen): it is public once the period has ended, for auditors before."""
        try:
            _start, end = period_bounds(period)
        except ValueError as exc:
            raise invalid(str(exc)) from exc
        if end > dt.datetime.now(dt.UTC).date() and (viewer is None or not has_role(viewer, AUDIT)):
            raise Problem(
                403,
                "period-not-ended",
                "Period not ended",
                f"a period's report is public once the period has ended (this one ends {end.isoformat()}); "
                "until then only auditors can read it",
            )
        try:
            return await build_report(self.engine, period, self.log.head)
        except ValueError as exc:  # the stored log does not match its signed head
            raise Problem(500, "integrity", "Access log does not verify", str(exc)) from exc

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def start_governance(
    settings: Settings,
    engine: AsyncEngine,
    writer: Writer,
    provider: KeyProvider,
    passwords: Passwords,
    signin: SignInGuard,
    erasure: Erasure,
    blobs: BlobStore,
    franking: FrankingKeys,
    background: bool = True,
) -> Governance:
    signer = ServiceSigner.load(settings.signing_key_file)
    access_log = AccessLog(engine, signer)
    await access_log.load()
    writer.on_conflict.append(access_log.load)
    access = GovernedAccess(engine, writer, provider, access_log, settings)
    strikes = Strikes(access_log)
    gov = Governance(
        signer=signer,
        log=access_log,
        staff=StaffService(engine, passwords, signin, provider, settings),
        access=access,
        reports=ReportService(engine, writer, access_log, erasure, settings, franking, strikes),
        legal=LegalService(engine, writer, access_log, access, provider, blobs, erasure, signer, settings),
        engine=engine,
        writer=writer,
        strikes=strikes,
    )
    if background:
        gov._task = asyncio.create_task(
            run_periodically(
                NOTIFY_INTERVAL_SECONDS, gov._due_work, log, "deferred notifications and hold expiry"
            ),
            name="keyhold-access-notifications",
        )
    return gov
