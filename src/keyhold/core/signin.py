"""Sign-in throttling, for members and staff alike.

Every sign-in first claims an attempt from up to three counters: the client address guessing
this account (the guesser), the address overall, and the account name (known or not, so that
an unknown name answers exactly like a real one). A claim is refused (429) once the failures of
a window, plus the sign-ins being evaluated right now, reach the limit: forty wrong passwords
for one account sent at once are evaluated at most `GUESSER.failures` times.

The guesser is throttled harder than the account, and an address from which the account was
signed in to before (a known address, for `KNOWN_DAYS`) is held only to the guesser limit: a
stranger who names someone's account, from however many addresses, can lock it only for
addresses it was never used from, never for its owner's usual ones. An address trying many
accounts meets its own, larger limit (many people may share one address); an IPv6 client
counts as its /64, which one host controls whole. A success clears the account's failures,
never an address's (a guesser with an account of their own must not reset their budget).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.clock import now_ms
from keyhold.core.errors import Problem
from keyhold.store import throttle as store


@dataclass(frozen=True, slots=True)
class Limit:
    failures: int
    window_ms: int


# One window length for every counter, so that Retry-After does not say which one refused.
WINDOW_MS = 15 * 60 * 1000
GUESSER = Limit(failures=5, window_ms=WINDOW_MS)  # one address, one account name
ADDRESS = Limit(failures=50, window_ms=WINDOW_MS)  # one address, any account
ACCOUNT = Limit(failures=10, window_ms=WINDOW_MS)  # one account name, addresses not known for it
KNOWN_DAYS = 30
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


def client_of(address: str) -> str:
    """What counts as one client: an IPv4 address, or an IPv6 /64 (one host has all of it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Attempt:
    """The outcome of one evaluated sign-in; not marked means it was never evaluated."""

    def __init__(self) -> None:
        self.failed = False
        self.succeeded = False

    def fail(self) -> None:
        self.failed = True

    def succeed(self) -> None:
        self.succeeded = True


@dataclass(frozen=True, slots=True)
class _Keys:
    guesser: bytes
    address: bytes
    account: bytes
    known: bytes


class SignInGuard:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pruned_ms = 0
        # One throttle write at a time from this process: a burst of sign-ins then holds one
        # database connection, not the whole pool that token-authenticated requests need.
        self._writing = asyncio.Lock()

    @asynccontextmanager
    async def attempt(self, address: str, kind: str, account: str) -> AsyncIterator[Attempt]:
        """Claim an attempt for `account` (of `kind`: member or staff) from `address`, or raise
        429; record how it ended."""
        client = client_of(address)
        keys = _Keys(
            guesser=_key("guesser", client, kind, account),
            address=_key("address", client),
            account=_key(kind, account),
            known=_key("known", client, kind, account),
        )
        if now_ms() - self._pruned_ms > PRUNE_EVERY_MS:
            await self.prune()
        counters = await self._claim(keys)
        attempt = Attempt()
        try:
            yield attempt
        finally:
            # Shielded: a sign-in cancelled mid-way must not leave its attempt pending.
            await asyncio.shield(self._settle(keys, counters, attempt))

    async def _claim(self, keys: _Keys) -> list[bytes]:
        """Take an attempt from every counter that applies (all or none); the keys taken."""
        now = now_ms()
        async with self._writing, self._engine.connect() as conn, conn.begin() as tx:
            known = await store.known_since(conn, keys.known, now - KNOWN_DAYS * 24 * 3600 * 1000)
            counters = [(keys.guesser, GUESSER)]
            if not known:
                counters += [(keys.address, ADDRESS), (keys.account, ACCOUNT)]
            for key, limit in counters:
                refusal = await store.claim(conn, key, limit.failures, limit.window_ms, now)
                if refusal is not None:
                    await tx.rollback()  # nothing is charged
                    # Failures ended the window's budget: wait for its end. Otherwise sign-ins
                    # in progress hold the rest of it: a moment is enough.
                    waited = refusal.window_start_ms + limit.window_ms - now
                    raise throttled(
                        max(1, math.ceil(waited / 1000)) if refusal.failures >= limit.failures else 1
                    )
        return [key for key, _ in counters]

    async def _settle(self, keys: _Keys, counters: list[bytes], attempt: Attempt) -> None:
        async with self._writing, self._engine.begin() as conn:
            for key in counters:
                await store.settle(
                    conn, key, attempt.failed, forgive=attempt.succeeded and key == keys.account
                )
            if attempt.succeeded:
                await store.remember(conn, keys.known, now_ms())

    async def prune(self) -> int:
        """Forget counters whose window ended, and known addresses not used for `KNOWN_DAYS`:
        what the tables hold about addresses and names lasts no longer than it is needed."""
        self._pruned_ms = now = now_ms()
        async with self._writing, self._engine.begin() as conn:
            return await store.prune(conn, now - WINDOW_MS, now - KNOWN_DAYS * 24 * 3600 * 1000)
