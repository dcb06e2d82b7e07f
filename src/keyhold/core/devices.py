"""A member's devices: listed, renamed, removed.

A device is what a sign-in names (`POST /sessions` with `device_id`, else one the server
makes up); each token belongs to one. Removing a device needs the password: it revokes the
device's tokens (its open streams close, as for any revoked token), deletes its published keys
with it, and tells the member's contacts that their device list changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import iso, now_ms
from keyhold.core.accounts import AccountService, Member, require_live_session
from keyhold.core.errors import invalid, not_found
from keyhold.core.writer import EventSink, PendingEvent, Writer
from keyhold.store import conversations as conversation_store
from keyhold.store import devices as store
from keyhold.store import e2ee_keys as e2ee_store
from keyhold.store.rows import AnyRow

# Called in the removing transaction before a member's devices, and with them their published
# keys, are deleted (all of them, and the member's other keys, when the ids are None: the
# account goes). The e2ee package fills it at wiring time: the key-transparency log.
BeforeKeysRemoved = Callable[[AsyncConnection, EventSink, int, Collection[str] | None], Awaitable[None]]


async def no_key_log(_conn: AsyncConnection, _sink: EventSink, _account: int, _devices: Collection[str] | None) -> None:
    return None


def _view(row: AnyRow, current: str | None) -> dict[str, Any]:
    return {
        "device_id": row.device_id,
        "display_name": row.display_name,
        "created_at": iso(row.created_ms),
        "last_seen_at": iso(row.last_seen_ms),
        "current": row.device_id == current,
    }


async def announce_device_change(conn: AsyncConnection, sink: EventSink, user_id: int, full_id: str) -> None:
    """Tell the member's devices, and everyone who shares a conversation with them, that the
    member's devices or keys changed (`e2ee.device_lists`): their clients fetch the keys again
    before they next encrypt to the member."""
    watchers = await conversation_store.co_members(conn, user_id) | {user_id}
    sink.add(PendingEvent(sorted(watchers), "e2ee.device_lists", data={"changed": [full_id], "left": []}))


class DeviceService:
    def __init__(self, engine: AsyncEngine, writer: Writer, accounts: AccountService) -> None:
        self._engine = engine
        self._writer = writer
        self._accounts = accounts
        self.before_keys_removed: BeforeKeysRemoved = no_key_log

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

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            await require_live_session(conn, member)
            had_keys = await e2ee_store.device_keys_of(conn, member.id, device_id) is not None
            if had_keys:
                await self.before_keys_removed(conn, sink, member.id, [device_id])
            if not await store.remove(conn, member.id, device_id):
                raise not_found("no such device of yours")
            if had_keys:  # a device that never published keys was never encrypted to
                await announce_device_change(conn, sink, member.id, self._accounts.user_id(member.username))

        await self._writer.run(run)
