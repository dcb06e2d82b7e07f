"""The enforcement ladder: how long a strike counts and what so many unexpired strikes bring.

Operators set it in the `[enforcement]` table of `<home>/safety-policy.toml`, re-read without
restart with the rest of the policy; what the file leaves out keeps its default:

    [enforcement]
    strike_days = 90          # a strike counts this long, then expires
    suspend_at = 3            # this many active strikes: suspended for suspend_hours
    suspend_hours = 24
    long_suspend_at = 4       # this many: suspended for long_suspend_hours
    long_suspend_hours = 168
    ban_at = 5                # this many: banned (appealable, like every automatic action)

A rung set to 0 is off (`ban_at = 0`: the system never bans by itself; moderators still may).
The defaults give a member two strikes of slack, a day away at the third, a week at the fourth
and a ban at the fifth within 90 days: one mistake is a warning, a pattern is not.
`governance.strikes` applies it (through a `Ladder` the wiring builds from this).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

MAX_STRIKE_DAYS = 3650
MAX_STRIKES = 100
MAX_HOURS = 24 * 365  # as a moderator's suspension


@dataclass(frozen=True)
class EnforcementPolicy:
    strike_days: int = 90
    suspend_at: int = 3
    suspend_hours: int = 24
    long_suspend_at: int = 4
    long_suspend_hours: int = 168
    ban_at: int = 5


DEFAULT_ENFORCEMENT = EnforcementPolicy()
_BOUNDS = {
    "strike_days": (1, MAX_STRIKE_DAYS, "days"),
    "suspend_hours": (1, MAX_HOURS, "hours"),
    "long_suspend_hours": (1, MAX_HOURS, "hours"),
    "suspend_at": (0, MAX_STRIKES, "strikes (0: off)"),
    "long_suspend_at": (0, MAX_STRIKES, "strikes (0: off)"),
    "ban_at": (0, MAX_STRIKES, "strikes (0: off)"),
}


def parse_enforcement(table: Any, error: type[Exception] = ValueError) -> EnforcementPolicy:
    """The `[enforcement]` table of the policy file; `error` is what a bad one raises (the
    policy's own error type, so that a running server keeps its last good policy)."""
    where = "enforcement"
    if not isinstance(table, dict):
        raise error(f"{where}: must be a table")
    known = [f.name for f in fields(EnforcementPolicy)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise error(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(known)})")
    for key, value in table.items():
        low, high, unit = _BOUNDS[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise error(f"{where}.{key}: must be a whole number of {unit} from {low} to {high}")
    policy = replace(DEFAULT_ENFORCEMENT, **table)
    rungs = [(name, getattr(policy, name)) for name in ("suspend_at", "long_suspend_at", "ban_at")]
    on = [(name, at) for name, at in rungs if at > 0]
    for (lower, lower_at), (higher, higher_at) in itertools.pairwise(on):
        if lower_at >= higher_at:
            raise error(f"{where}: need {lower} < {higher} (each rung above the one before; 0 turns one off)")
    return policy


def enforcement_toml(policy: EnforcementPolicy) -> list[str]:
    """The `[enforcement]` table with every value spelled out, as `policy show` prints it."""
    return ["[enforcement]", *(f"{key} = {value}" for key, value in asdict(policy).items())]
