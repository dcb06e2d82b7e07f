"""Rate limits: how many messages, new conversations, message requests, reports and follows one
account, and one client address, may make per window (the figures; `safety.limiter` applies them).

Operators set them in the `[rate_limits]` table of `<home>/safety-policy.toml`, re-read without
restart with the rest of the policy; what the file leaves out keeps its default:

    [rate_limits]
    new_account_days = 7       # accounts younger than this get the `new_account` figures

    [rate_limits.messages]     # REST sends and WebSocket `send` frames, standard and e2ee alike
    window_seconds = 60
    account = 60               # per account and window, and the most sent in one burst
    new_account = 20
    address = 300              # per client address (IPv4, or IPv6 /64): people share them

Each figure is a token bucket that holds that many tokens and refills over the window: a member
may send 60 messages at once, then one a second. The address figures are several times the
account ones because a household, an office or a mobile carrier puts many people behind one
address; new accounts get about a third, since throwaway accounts are where spam comes from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Any

MAX_COUNT = 1_000_000_000
MAX_WINDOW_SECONDS = 7 * 24 * 3600
MAX_NEW_ACCOUNT_DAYS = 365


class Kind(StrEnum):
    MESSAGES = "messages"  # REST sends and WebSocket `send` frames
    CONVERSATIONS = "conversations"  # starting a conversation or a group
    REQUESTS = "requests"  # message requests to someone who is not a friend
    REPORTS = "reports"  # member reports of messages
    FOLLOWS = "follows"  # PUT /following/{name}
    TO_DEVICE = "to_device"  # PUT /e2ee/sendToDevice/...: a channel beside conversations


# What a refusal calls them: "too many new conversations: ...".
NOUNS = {
    Kind.MESSAGES: "messages",
    Kind.CONVERSATIONS: "new conversations",
    Kind.REQUESTS: "message requests",
    Kind.REPORTS: "reports",
    Kind.FOLLOWS: "follows",
    Kind.TO_DEVICE: "to-device messages",
}


@dataclass(frozen=True, slots=True)
class Limit:
    window_seconds: int
    account: int
    new_account: int
    address: int


@dataclass(frozen=True)
class RateLimits:
    messages: Limit = Limit(window_seconds=60, account=60, new_account=20, address=300)
    conversations: Limit = Limit(window_seconds=3600, account=20, new_account=7, address=100)
    requests: Limit = Limit(window_seconds=86400, account=20, new_account=7, address=100)
    reports: Limit = Limit(window_seconds=86400, account=20, new_account=7, address=100)
    follows: Limit = Limit(window_seconds=3600, account=60, new_account=20, address=300)
    # A call carries up to 1,000 messages of 16 KiB. An e2ee client makes one to share a room
    # key with a conversation's devices, and a few for a verification: far fewer than this.
    to_device: Limit = Limit(window_seconds=60, account=120, new_account=60, address=600)
    new_account_days: int = 7

    def of(self, kind: Kind) -> Limit:
        limit: Limit = getattr(self, kind.value)
        return limit


DEFAULT_RATE_LIMITS = RateLimits()
_LIMIT_KEYS = tuple(f.name for f in fields(Limit))


def _whole(value: Any, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{where}: must be a whole number from {low} to {high}")
    return value


def _limit(table: Any, where: str, base: Limit) -> Limit:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: must be a table")
    unknown = sorted(set(table) - set(_LIMIT_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(_LIMIT_KEYS)})")
    values = {
        key: _whole(value, f"{where}.{key}", 1, MAX_WINDOW_SECONDS if key == "window_seconds" else MAX_COUNT)
        for key, value in table.items()
    }
    limit = replace(base, **values)
    if limit.new_account > limit.account:
        raise ValueError(f"{where}: new_account cannot be more than account (new accounts get less)")
    return limit


def parse_rate_limits(table: Any, error: type[Exception] = ValueError) -> RateLimits:
    """The `[rate_limits]` table of the policy file; `error` is what a bad one raises (the
    policy's own error type, so that a running server keeps its last good policy)."""
    try:
        return _parse(table)
    except ValueError as exc:
        raise error(str(exc)) from None


def _parse(table: Any) -> RateLimits:
    where = "rate_limits"
    if not isinstance(table, dict):
        raise ValueError(f"{where}: must be a table")
    known = [f.name for f in fields(RateLimits)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(known)})")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "new_account_days":
            values[key] = _whole(value, f"{where}.{key}", 0, MAX_NEW_ACCOUNT_DAYS)
        else:
            values[key] = _limit(value, f"{where}.{key}", DEFAULT_RATE_LIMITS.of(Kind(key)))
    return replace(DEFAULT_RATE_LIMITS, **values)


def rate_limits_toml(limits: RateLimits) -> list[str]:
    """The `[rate_limits]` table with every value spelled out, as `policy show` prints it."""
    lines = ["[rate_limits]", f"new_account_days = {limits.new_account_days}"]
    for kind in Kind:
        lines += ["", f"[rate_limits.{kind.value}]"]
        lines += [f"{key} = {value}" for key, value in asdict(limits.of(kind)).items()]
    return lines
