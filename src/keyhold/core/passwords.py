"""Password hashing as the services use it: argon2id off the event loop (`crypto.passwords`),
and a full queue answered as a 503 the client may retry, before any other work is done."""

from __future__ import annotations

from keyhold.core.errors import unavailable
from keyhold.crypto.passwords import PasswordHashing, PasswordHashingBusy

BUSY = "too many sign-ins are being checked; retry in a moment"


class Passwords:
    def __init__(self, hashing: PasswordHashing) -> None:
        self._hashing = hashing

    def check_capacity(self) -> None:
        """Refuse now what would be refused once it reached hashing (a burst costs nothing)."""
        try:
            self._hashing.check_capacity()
        except PasswordHashingBusy as exc:
            raise unavailable(BUSY) from exc

    async def hash(self, password: str) -> str:
        try:
            return await self._hashing.hash(password)
        except PasswordHashingBusy as exc:
            raise unavailable(BUSY) from exc

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether `password` matches; with no hash (an unknown or deleted account), a dummy one
        is verified, so that the answer takes as long."""
        try:
            return await self._hashing.verify(stored_hash, password)
        except PasswordHashingBusy as exc:
            raise unavailable(BUSY) from exc

    def close(self) -> None:
        self._hashing.close()
