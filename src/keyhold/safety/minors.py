"""The minors' rules in force, from the policy file (`safety.policy`). So far: minors are not
findable by strangers. A member younger than their region's adult age is shown (profile,
follow) only to themselves, to their friends (mutual follows), and to members they follow:
following someone is how a minor starts a friendship. To anyone else they are an unknown user.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.safety.policy import Band, PolicyError, PolicyFile
from keyhold.store import accounts as store


class Minors:
    def __init__(self, policy: PolicyFile) -> None:
        self._policy = policy

    def band(self, row: Any, today: dt.date | None = None) -> Band:
        """The rules a member's row falls under today (a birthdate that cannot be read, or
        an age under the minimum, counts as the youngest band: the safe side)."""
        try:
            born = dt.date.fromisoformat(str(row.birthdate))
            return self._policy.current().for_region(str(row.region)).band(born, today or dt.date.today())
        except (ValueError, PolicyError):
            return Band.YOUNG_TEEN

    async def findable(self, conn: AsyncConnection, viewer_id: int, row: Any) -> bool:
        if viewer_id == row.id or self.band(row) is Band.ADULT:
            return True
        return await store.follows_one_way(conn, row.id, viewer_id)
