"""A member's devices: listed, renamed, removed.

A device is what a sign-in names (`POST /sessions` with `device_id`, else one the server
makes up); each token belongs to one. Removing a device needs the password: it revokes the
device's tokens (its open streams close, as for any revoked token) and, once end-to-end
encryption stores keys, deletes its keys with it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.clock import iso, now_ms
from keyhold.core.accounts import AccountService, Member, require_live_session
from keyhold.core.errors import invalid, not_found
from keyhold.store import devices as store
from keyhold.store.rows import AnyRow


def _view(row: AnyRow, current: str | None) -> dict[str, Any]:
    return {
        "device_id": row.device_id,
        "display_name": row.display_name,
        "created_at": iso(row.created_ms),
        "last_seen_at": iso(row.last_seen_ms),
        "current": row.device_id == current,
    }


class DeviceService:
    def __init__(self, engine: AsyncEngine, accounts: AccountService) -> None:
        self._engine = engine
        self._accounts = accounts

    async def list(self, member: Member) -> list[dict[str, Any]]:
        async with self._engine.connect() as conn:
            rows = await store.of_user(conn, member.id)
        return [_view(row, member.device_id) for row in rows]

    async def seen(self, member: Member) -> None:
        """The member's device is in use now (a stream connected): its `last_seen_at`."""
        if member.device_id is not None:
            async with self._engine.begin() as conn:
                await store.seen(conn, member.id, member.device_id, now_ms())

    async def rename(self, member: Member, device_id: str, display_name: str) -> dict[str, Any]:
        name = display_name.strip()
        if not 1 <= len(name) <= 100:
            raise invalid("display_name must be 1-100 characters")
        async with self._engine.begin() as conn:
            await require_live_session(conn, member)
            # The row comes from the renaming transaction: a removal racing the rename cannot
            # leave nothing to answer with.
            row = await store.rename(conn, member.id, device_id, name)
        if row is None:
            raise not_found("no such device of yours")
        return _view(row, member.device_id)

    async def remove(self, member: Member, device_id: str, password: str) -> None:
        """Remove one of the member's devices (this one too, which signs it out)."""
        await self._accounts.verify_for_deletion(member, password)
        async with self._engine.begin() as conn:
            await require_live_session(conn, member)
            if not await store.remove(conn, member.id, device_id):
                raise not_found("no such device of yours")
