"""The minors' policy: which direct-messaging rules apply at which age, per region.

Operators write it in `<home>/safety-policy.toml`; without the file, the built-in defaults
(TikTok's baseline for DMs) apply. A `[default]` table sets every region's rules, and
`[regions.<name>]` tables override them for one region:

    [default]
    min_age = 13                  # younger people cannot register
    dm_off_below = 16             # 13-15: no direct messages at all
    friends_only_below = 18       # 16-17: direct messages with friends (mutual follows) only
    teen_default_audience = "no_one"   # 16-17 start here; "friends" is the most they may choose

    [regions.eu]
    friends_only_below = 18

A member's band follows from their birthdate and today's date, so a member turning 16 or 18
moves to the next rules on that day (someone born on 29 February has their birthday on
1 March in other years). The running server re-reads the file when it changes (`PolicyFile`);
a file that does not parse leaves the last good policy in force.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from keyhold.core.ages import MIN_AGE_YEARS, age_on
from keyhold.safety.enforcement_policy import (
    DEFAULT_ENFORCEMENT,
    EnforcementPolicy,
    enforcement_toml,
    parse_enforcement,
)
from keyhold.safety.rate_limits import DEFAULT_RATE_LIMITS, RateLimits, parse_rate_limits, rate_limits_toml
from keyhold.safety.reloading import ReloadingFile, read_text, toml_tables

POLICY_FILE = "safety-policy.toml"
MAX_AGE_SETTING = 21
NON_FRIEND_MESSAGES = ("request", "allow")
TEEN_AUDIENCES = ("no_one", "friends")  # what a 16-17-year-old may choose; never "everyone"
REGION_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class PolicyError(ValueError):
    """The policy file is not a valid policy; the message says where and why."""


class Band(StrEnum):
    YOUNG_TEEN = "young_teen"  # direct messaging is off
    TEEN = "teen"  # friends only
    ADULT = "adult"


@dataclass(frozen=True)
class RegionPolicy:
    min_age: int = MIN_AGE_YEARS
    dm_off_below: int = 16
    friends_only_below: int = 18
    teen_default_audience: str = "no_one"
    # A first message from an adult non-friend: "request" (the requests inbox) or "allow" (a
    # closed deployment, where everyone knows everyone, may turn requests off).
    non_friend_messages: str = "request"

    def band(self, born: dt.date, today: dt.date) -> Band:
        """The rules a member born on `born` falls under on `today` (PolicyError if they are
        younger than `min_age`, which registration already refuses)."""
        age = age_on(born, today)
        if age < self.min_age:
            raise PolicyError(f"younger than {self.min_age}: no account")
        if age < self.dm_off_below:
            return Band.YOUNG_TEEN
        if age < self.friends_only_below:
            return Band.TEEN
        return Band.ADULT


@dataclass(frozen=True)
class Policy:
    default: RegionPolicy
    regions: Mapping[str, RegionPolicy]
    rate_limits: RateLimits = DEFAULT_RATE_LIMITS  # safety/rate_limits.py
    enforcement: EnforcementPolicy = DEFAULT_ENFORCEMENT  # safety/enforcement_policy.py

    def for_region(self, region: str) -> RegionPolicy:
        return self.regions.get(region, self.default)

    def to_toml(self) -> str:
        """The policy as a complete file (every value spelled out), as `show` prints it."""
        lines = ["[default]", *_toml_values(self.default)]
        for name in sorted(self.regions):
            lines += ["", f"[regions.{name}]", *_toml_values(self.regions[name])]
        lines += ["", *rate_limits_toml(self.rate_limits)]
        lines += ["", *enforcement_toml(self.enforcement)]
        return "\n".join(lines) + "\n"


DEFAULT_POLICY = Policy(RegionPolicy(), {})


def _toml_values(rules: RegionPolicy) -> list[str]:
    return [f"{key} = {value!r}".replace("'", '"') for key, value in asdict(rules).items()]


def _region_rules(table: Any, where: str, base: RegionPolicy) -> RegionPolicy:
    if not isinstance(table, dict):
        raise PolicyError(f"{where}: must be a table")
    known = {f.name: f.type for f in fields(RegionPolicy)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise PolicyError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "teen_default_audience":
            if value not in TEEN_AUDIENCES:
                raise PolicyError(f"{where}.{key}: must be one of {', '.join(TEEN_AUDIENCES)} (never everyone)")
        elif key == "non_friend_messages":
            if value not in NON_FRIEND_MESSAGES:
                raise PolicyError(f"{where}.{key}: must be one of {', '.join(NON_FRIEND_MESSAGES)}")
        elif not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_AGE_SETTING:
            raise PolicyError(f"{where}.{key}: must be a whole number of years from 0 to {MAX_AGE_SETTING}")
        values[key] = value
    rules = replace(base, **values)
    if rules.min_age < MIN_AGE_YEARS:  # the legal floor (COPPA and its kind): no file lowers it
        raise PolicyError(f"{where}.min_age: cannot be below {MIN_AGE_YEARS}")
    if not rules.min_age <= rules.dm_off_below <= rules.friends_only_below:
        raise PolicyError(f"{where}: need min_age <= dm_off_below <= friends_only_below")
    return rules


def parse(text: str) -> Policy:
    known = ("default", "regions", "rate_limits", "enforcement")
    data = toml_tables(text, PolicyError, known, "unknown table {name} (known: " + ", ".join(known) + ")")
    default = _region_rules(data.get("default", {}), "default", RegionPolicy())
    regions_table = data.get("regions", {})
    if not isinstance(regions_table, dict):
        raise PolicyError("regions: must be a table of regions")
    regions: dict[str, RegionPolicy] = {}
    for name, table in regions_table.items():
        if not REGION_NAME.fullmatch(name):
            raise PolicyError(f"regions.{name}: a region name is lower-case letters, digits, - and _")
        regions[name] = _region_rules(table, f"regions.{name}", default)
    rate_limits = parse_rate_limits(data.get("rate_limits", {}), PolicyError)
    enforcement = parse_enforcement(data.get("enforcement", {}), PolicyError)
    return Policy(default, regions, rate_limits=rate_limits, enforcement=enforcement)


def load(path: Path) -> Policy:
    """The policy in `path`, or the defaults if there is no such file."""
    text = read_text(path, PolicyError)
    return DEFAULT_POLICY if text is None else parse(text)


PolicyFile = ReloadingFile[Policy]


def policy_file(path: Path, clock: Callable[[], float] = time.monotonic) -> PolicyFile:
    """The policy of a running server: re-read when the file changes (checked at most once a
    second), the last good one kept while the file does not parse."""
    return ReloadingFile(path, load, DEFAULT_POLICY, errors=(PolicyError,), clock=clock)
