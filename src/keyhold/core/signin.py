"""Sign-in throttling, for members and staff alike.

Every sign-in first claims an attempt from three counters: the client address guessing this
account, the address overall, and the account name (known or not, so that an unknown name
answers exactly like a real one). A claim is refused once the failures of a window, plus the
sign-ins being evaluated right now, reach the limit: forty wrong passwords for one account
sent at once are evaluated at most `GUESSER.failures` times.

The guesser — an address trying one account — is throttled harder than the account (fewer
failures, a longer window): a stranger who names someone's account runs out of attempts long
before the account does, so they cannot keep its owner locked out. Many addresses together can
lock an account, for one short window at a time. An address trying many accounts meets its own,
larger limit; it is larger because many people may share one address. A success clears the
account's failures, never an address's (a guesser with an account of their own must not reset
their budget by signing in to it).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.clock import now_ms
from keyhold.core.errors import Problem, unavailable
from keyhold.store import throttle as store


@dataclass(frozen=True, slots=True)
class Limit:
    failures: int
    window_ms: int


GUESSER = Limit(failures=5, window_ms=15 * 60 * 1000)  # one address, one account name
ADDRESS = Limit(failures=50, window_ms=15 * 60 * 1000)  # one address, any account
ACCOUNT = Limit(failures=10, window_ms=5 * 60 * 1000)  # one account name, any address
# A sign-in that finds the budget taken only by sign-ins in progress waits for them this long.
PENDING_WAIT_SECONDS = 5.0
# Counters whose window has passed are deleted by a sign-in, at most this often.
PRUNE_EVERY_MS = 60_000


def throttled(retry_after_s: int) -> Problem:
    # The same words whatever was throttled: no detail tells an address from an account, or
    # a real account from an unknown name.
    return Problem(
        429,
        "throttled",
        "Too many sign-in attempts",
        "too many failed sign-ins; try again later (see Retry-After)",
        retry_after=retry_after_s,
    )


def _key(*parts: str) -> bytes:
    return hashlib.sha256("|".join(("keyhold/signin/v1", *parts)).encode()).digest()


class Attempt:
    """The outcome of one evaluated sign-in; not marked means it was never evaluated."""

    def __init__(self) -> None:
        self.failed = False
        self.succeeded = False

    def fail(self) -> None:
        self.failed = True

    def succeed(self) -> None:
        self.succeeded = True


class SignInGuard:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._settled = asyncio.Event()
        self._pruned_ms = 0
        # One throttle write at a time from this process: a burst of sign-ins then holds one
        # database connection, not the whole pool that token-authenticated requests need.
        self._writing = asyncio.Lock()

    @asynccontextmanager
    async def attempt(self, address: str, kind: str, account: str) -> AsyncIterator[Attempt]:
        """Claim an attempt for `account` (of `kind`: member or staff) from `address`, or raise
        429; record how it ended."""
        guesser, everyone, named = (
            _key("guesser", address, kind, account),
            _key("address", address),
            _key(kind, account),
        )
        keys = ((guesser, GUESSER), (everyone, ADDRESS), (named, ACCOUNT))
        if now_ms() - self._pruned_ms > PRUNE_EVERY_MS:
            await self.prune()
        await self._claim(keys)
        attempt = Attempt()
        try:
            yield attempt
        finally:
            # Shielded: a sign-in cancelled mid-way must not leave its attempt pending.
            await asyncio.shield(self._settle(guesser, everyone, named, attempt))

    async def _settle(self, guesser: bytes, everyone: bytes, named: bytes, attempt: Attempt) -> None:
        async with self._writing, self._engine.begin() as conn:
            await store.settle(conn, guesser, attempt.failed)
            await store.settle(conn, everyone, attempt.failed)
            await store.settle(conn, named, attempt.failed, forgive=attempt.succeeded)
        self._settled.set()
        self._settled = asyncio.Event()

    async def _claim(self, keys: tuple[tuple[bytes, Limit], ...]) -> None:
        deadline = time.monotonic() + PENDING_WAIT_SECONDS
        while True:
            now = now_ms()
            async with self._writing, self._engine.connect() as conn, conn.begin() as tx:
                refusal = None
                for key, limit in keys:
                    counter = await store.claim(conn, key, limit.failures, limit.window_ms, now)
                    if counter is not None:
                        refusal = (counter, limit)
                        await tx.rollback()  # neither counter is charged
                        break
            if refusal is None:
                return
            counter, limit = refusal
            if counter.failures >= limit.failures:
                raise throttled(max(1, math.ceil((counter.window_start_ms + limit.window_ms - now) / 1000)))
            # Only sign-ins in progress stand in the way: wait for one to end here (or, on
            # another server, for a short while), then claim again.
            if time.monotonic() >= deadline:
                raise unavailable("too many sign-ins in progress; retry shortly", retry_after=1)
            settled = self._settled
            try:
                await asyncio.wait_for(settled.wait(), 0.2)
            except TimeoutError:
                pass

    async def prune(self) -> int:
        """Forget counters whose window ended: what the table holds about addresses and names
        lasts no longer than it is needed."""
        self._pruned_ms = now = now_ms()
        async with self._writing, self._engine.begin() as conn:
            return await store.prune(
                conn, now - max(limit.window_ms for limit in (GUESSER, ADDRESS, ACCOUNT))
            )
