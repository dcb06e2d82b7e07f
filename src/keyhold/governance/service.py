"""Governed access wired to the running service: staff, cases, the access log, notifications."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.clock import now_ms
from keyhold.core.retrying import run_periodically
from keyhold.core.service import Keyhold
from keyhold.core.writer import EventSink, PendingEvent
from keyhold.crypto.signing import ServiceSigner
from keyhold.governance.access import GovernedAccess
from keyhold.governance.accesslog import AccessLog
from keyhold.governance.legal import LegalService
from keyhold.governance.reports import ReportService
from keyhold.governance.staff import StaffService
from keyhold.store import accesslog as log_store

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
    svc: Keyhold
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

        return await self.svc.writer.run(run)

    async def _due_work(self) -> None:
        await self.notify_due()
        await self.legal.expire_holds()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def start_governance(svc: Keyhold, background: bool = True) -> Governance:
    settings = svc.settings
    signer = ServiceSigner.load(settings.signing_key_file)
    access_log = AccessLog(svc.engine, signer)
    await access_log.load()
    svc.writer.on_conflict.append(access_log.load)
    access = GovernedAccess(svc.engine, svc.writer, svc.provider, access_log, settings)
    gov = Governance(
        signer=signer,
        log=access_log,
        staff=StaffService(svc.engine, svc.passwords, svc.signin, svc.provider, settings),
        access=access,
        reports=ReportService(svc.engine, svc.writer, access_log, svc.erasure, settings),
        legal=LegalService(
            svc.engine, svc.writer, access_log, access, svc.provider, svc.blobs, svc.erasure, signer, settings
        ),
        svc=svc,
    )
    if background:
        gov._task = asyncio.create_task(
            run_periodically(NOTIFY_INTERVAL_SECONDS, gov._due_work, log, "deferred notifications and hold expiry"),
            name="keyhold-access-notifications",
        )
    return gov
