"""Revocation reaches open streams: a stream whose session ends is closed within a second.

A token is checked when a stream opens; after that, what ends its session happens elsewhere —
another request (logout, a password change), a moderator (suspension, ban), an operator's CLI
command in another process (`keyhold user disable`), another server of the same deployment, or
just time (expiry). So the watch asks storage, every `INTERVAL` seconds, which sessions were
revoked and which accounts restricted lately (two indexed queries, whatever the number of open
streams), re-checks only the open streams concerned with `accounts.session_refusal`, and
closes those refused: 4401 when the session ended, 4403 when the account may no longer act.

Sends do not wait for the watch: the message writer checks the sender's session in the same
transaction that would store the message, so nothing sent after a revocation is ever stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.clock import now_ms
from keyhold.core.accounts import Member, session_refusal
from keyhold.core.retrying import run_periodically
from keyhold.store import accounts as store

log = logging.getLogger("keyhold.revocation")
INTERVAL = 0.25
# Changes are looked for a little before the previous sweep too: a transaction that took its
# timestamp before that sweep may have committed only after it.
LOOKBACK_MS = 10_000
MAX_REASON_BYTES = 120  # a WebSocket close reason is at most 123 bytes


class Revocable(Protocol):
    """An open stream, as the watch sees it."""

    member: Member

    def revoke(self, code: int, reason: str) -> None: ...


def close_reason(detail: str) -> str:
    return detail.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


class RevocationWatch:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._by_session: dict[bytes, set[Revocable]] = {}
        self._by_user: dict[int, set[bytes]] = {}
        self._expiries: list[tuple[int, bytes]] = []  # a heap of (expires_ms, session)
        self._open: dict[int, set[Revocable]] = {}  # open streams per member, sessions or not
        self._checked_ms: int | None = None  # database time of the last successful sweep
        self._task: asyncio.Task[None] | None = None

    def open_streams(self, user_id: int) -> int:
        """How many streams of this member are open here, revoked ones too until their
        connection ends: the watch sees every one, so the stream route asks it for its cap."""
        return len(self._open.get(user_id, ()))

    def watch(self, stream: Revocable) -> None:
        self._open.setdefault(stream.member.id, set()).add(stream)
        session = stream.member.session
        if not session:
            return
        if session not in self._by_session:
            self._by_session[session] = set()
            heapq.heappush(self._expiries, (stream.member.session_expires_ms, session))
        self._by_session[session].add(stream)
        self._by_user.setdefault(stream.member.id, set()).add(session)
        if self._task is None:
            self._task = asyncio.create_task(
                run_periodically(INTERVAL, self.sweep, log, "checking open streams for revoked sessions"),
                name="keyhold-revocation-watch",
            )

    def unwatch(self, stream: Revocable) -> None:
        """A stream whose connection ended: its place is free (`open_streams`)."""
        streams = self._open.get(stream.member.id)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._open[stream.member.id]
        self._forget(stream)

    def _forget(self, stream: Revocable) -> None:
        """No more revocations to look for on this stream. A stream a sweep closed keeps its
        place until its connection ends: a client that takes nothing holds the connection (and
        the kernel's buffers for it) until the stall rule drops it."""
        session = stream.member.session
        streams = self._by_session.get(session)
        if streams is None:
            return
        streams.discard(stream)
        if not streams:
            del self._by_session[session]
            sessions = self._by_user.get(stream.member.id, set())
            sessions.discard(session)
            if not sessions:
                self._by_user.pop(stream.member.id, None)
            if len(self._expiries) > 2 * len(self._by_session) + 1024:
                # Sessions that closed all their streams leave entries behind: drop them.
                self._expiries = [e for e in self._expiries if e[1] in self._by_session]
                heapq.heapify(self._expiries)

    async def sweep(self) -> int:
        """Close the open streams whose session or account changed; how many were closed.

        Changes are found by the database's clock, which stamped them (`store.db.DB_NOW_MS`),
        so servers and CLI hosts whose clocks disagree miss nothing; and the checkpoint moves
        only when a sweep succeeds, so a sweep that fails (storage away) forgets nothing."""
        if not self._by_session:
            self._checked_ms = None
            return 0
        now = now_ms()
        expired: list[tuple[int, bytes]] = []
        while self._expiries and self._expiries[0][0] <= now:
            expired.append(heapq.heappop(self._expiries))
        try:
            async with self._engine.connect() as conn:
                checked = await store.db_now(conn)
                since = (self._checked_ms if self._checked_ms is not None else checked) - LOOKBACK_MS
                suspects = {session for _, session in expired} | await store.revoked_since(conn, since)
                for user_id in await store.restricted_since(conn, since):
                    suspects |= self._by_user.get(user_id, set())
                suspects &= self._by_session.keys()
                rows = await conn.run_sync(store.session_users, suspects) if suspects else {}
        except BaseException:
            for entry in expired:
                heapq.heappush(self._expiries, entry)
            raise
        self._checked_ms = checked
        closed = 0
        for session in suspects:
            # A suspended member keeps reading: their streams stay open (sends are refused by
            # the writer); a ban, a disable or a deletion closes them.
            refusal = session_refusal(rows.get(session), now, "read")
            if refusal is None:
                continue
            code = 4401 if refusal.status == 401 else 4403
            for stream in list(self._by_session.get(session, ())):
                stream.revoke(code, close_reason(refusal.detail))
                self._forget(stream)
                closed += 1
        return closed


    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
