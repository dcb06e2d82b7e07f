"""The rate limiter: token buckets per account and per client address, in memory.

Each kind of action (`rate_limits.Kind`) has its own buckets. Taking a token checks the account's
bucket (the `new_account` figure while the account is younger than `new_account_days`) and the
client address's bucket (an IPv4 address or an IPv6 /64, as sign-in throttling counts clients),
and takes from both or from neither: a member refused by their own limit does not drain the
address that others share, and a refusal costs the caller nothing but the check.

The buckets live in this server process's memory: with several server processes each limits on
its own (a member spreading requests over N processes gets up to N times the figures), and a
restart forgets them. Memory stays bounded: a bucket idle for a whole window is full again, the
same as no bucket, and is dropped; past `max_keys` buckets of one kind the least recently used
goes (that key starts afresh: the cap trades a little leniency for memory an address-hopping
flood cannot grow).
"""

from __future__ import annotations

import functools
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from keyhold.clock import now_ms
from keyhold.core.accounts import Member
from keyhold.core.errors import Problem
from keyhold.core.signin import client_of
from keyhold.safety.rate_limits import NOUNS, Kind, Limit, RateLimits

DAY_MS = 24 * 3600 * 1000
MAX_KEYS = 100_000  # per kind; a bucket is ~200 bytes, so at most ~100 MB for all five kinds
Key = tuple[str, int | str]
# Parsing an address costs more than the rest of a take: the few thousand recent ones are kept.
_client = functools.lru_cache(maxsize=4096)(client_of)


class Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


@dataclass(frozen=True, slots=True)
class Charge:
    """What one `take` took, to give back with `refund`."""

    kind: Kind
    keys: tuple[Key, ...]


class _Table:
    """The buckets of one kind, least recently used first."""

    def __init__(self, max_keys: int) -> None:
        self.buckets: OrderedDict[Key, Bucket] = OrderedDict()
        self.max_keys = max_keys
        self.evicted_early = 0

    def sweep(self, now: float, window: float) -> None:
        # Ordered by last use, so the first bucket used within the window ends the sweep: every
        # one before it has had a whole window to refill and is full.
        while self.buckets:
            key, bucket = next(iter(self.buckets.items()))
            if now - bucket.stamp < window:
                break
            del self.buckets[key]

    def get(self, key: Key, count: int, window: float, now: float) -> Bucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_keys:
                self.buckets.popitem(last=False)
                self.evicted_early += 1
            bucket = self.buckets[key] = Bucket(float(count), now)
        else:
            self.buckets.move_to_end(key)
            bucket.tokens = min(float(count), bucket.tokens + (now - bucket.stamp) * count / window)
            bucket.stamp = now
        return bucket


class RateLimiter:
    """`take(kind, member, address)` before doing the work, or a 429 Problem with Retry-After."""

    def __init__(
        self,
        limits: Callable[[], RateLimits],
        scale: int = 1,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if scale < 1:
            raise ValueError("rate_limit_scale must be a whole number of at least 1")
        self._limits = limits  # the policy file's current figures (re-read when it changes)
        self._scale = scale  # tests and throughput benchmarks multiply every figure
        self._clock = clock
        self._wall_ms = wall_ms  # account age is wall-clock time; buckets run on `clock`
        self._tables = {kind: _Table(max_keys) for kind in Kind}

    def take(self, kind: Kind | str, member: Member, address: str | None) -> Charge:
        """Take one token for `member` acting from `address` (None: an in-process actor, with no
        address to count), or raise the 429 Problem that says what and how long to wait."""
        kind = Kind(kind)
        limits = self._limits()
        limit = limits.of(kind)
        window = float(limit.window_seconds)
        young = self._wall_ms() - member.created_ms < limits.new_account_days * DAY_MS
        # (key, the bucket's size, which is also what it refills by per window, and its scope)
        claims: list[tuple[Key, int, str]] = [
            (("account", member.id), (limit.new_account if young else limit.account) * self._scale, "account")
        ]
        if address is not None:
            claims.append((("address", _client(address)), limit.address * self._scale, "address"))
        table = self._tables[kind]
        now = self._clock()
        table.sweep(now, window)
        wait, refusing = 0.0, None
        buckets = []
        for key, count, scope in claims:
            bucket = table.get(key, count, window, now)
            buckets.append(bucket)
            if bucket.tokens < 1:
                needed = (1 - bucket.tokens) * window / count
                if refusing is None or needed > wait:
                    wait, refusing = needed, (count, scope)
        if refusing is not None:
            raise too_many(kind, limit, *refusing, wait)
        for bucket in buckets:
            bucket.tokens -= 1
        return Charge(kind, tuple(key for key, _, _ in claims))

    def take_many(self, kind: Kind | str, member: Member, address: str | None, n: int) -> list[Charge]:
        """`n` tokens at once, or none (the 429 of the first that is missing)."""
        taken: list[Charge] = []
        try:
            for _ in range(n):
                taken.append(self.take(kind, member, address))
        except Problem:
            for charge in taken:
                self.refund(charge)
            raise
        return taken

    def refund(self, charge: Charge) -> None:
        """Give back what `charge` took (the action turned out not to count, e.g. a 1:1 that
        already existed); a bucket dropped meanwhile was full and needs nothing."""
        table = self._tables[charge.kind]
        for key in charge.keys:
            bucket = table.buckets.get(key)
            if bucket is not None:
                bucket.tokens += 1  # never above the bucket's size: the next refill caps it

    def tracked(self) -> dict[str, int]:
        """Buckets held per kind, and how many were dropped before they were full (the cap)."""
        out: dict[str, int] = {}
        for kind, table in self._tables.items():
            out[kind.value] = len(table.buckets)
            out[f"{kind.value}_evicted_early"] = table.evicted_early
        return out


def _per(window_seconds: int) -> str:
    named = {60: "a minute", 3600: "an hour", 86400: "a day", 7 * 86400: "a week"}
    if window_seconds in named:
        return named[window_seconds]
    for size, unit in ((86400, "days"), (3600, "hours"), (60, "minutes")):
        if window_seconds % size == 0:
            return f"every {window_seconds // size} {unit}"
    return f"every {window_seconds} seconds"


def too_many(kind: Kind, limit: Limit, count: int, scope: str, wait_s: float) -> Problem:
    retry = max(1, math.ceil(wait_s - 1e-9))
    source = " from your network address" if scope == "address" else ""
    return Problem(
        429,
        "rate-limited",
        "Too many requests",
        f"too many {NOUNS[kind]}{source}: at most {count} {_per(limit.window_seconds)}; "
        f"try again in {retry} s",
        retry_after=retry,
        limit=kind.value,
        scope=scope,
    )
