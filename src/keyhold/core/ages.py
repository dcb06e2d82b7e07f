"""Ages from birthdates: one rule for sign-up (core.accounts) and the minors' bands (safety)."""

from __future__ import annotations

import datetime as dt

# Below this no service may hold a child's account (COPPA and its kind): no policy lowers it.
MIN_AGE_YEARS = 13


def age_on(born: dt.date, today: dt.date) -> int:
    """Whole years from `born` to `today` (a 29 February birthday falls on 1 March in other years)."""
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))
