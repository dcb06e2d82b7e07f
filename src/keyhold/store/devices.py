"""Queries on members' devices and the sessions that belong to them."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store import e2ee_keys
from keyhold.store.absent import insert_if_absent
from keyhold.store.accounts import revoke_where
from keyhold.store.rows import AnyRow
from keyhold.store.schema import devices, sessions


async def sign_in_on(conn: AsyncConnection, user_id: int, device_id: str, name: str | None, now: int) -> bool:
    """Record a sign-in on this device: a new device row, or the known one seen again (and
    renamed, if a name is given). True if the device is new."""
    made = {"user_id": user_id, "device_id": device_id, "display_name": name or device_id}
    if (await insert_if_absent(conn, devices, {**made, "created_ms": now, "last_seen_ms": now})).rowcount:
        return True
    values: dict[str, object] = {"last_seen_ms": now}
    if name:
        values["display_name"] = name
    await conn.execute(
        update(devices).where(devices.c.user_id == user_id, devices.c.device_id == device_id).values(**values)
    )
    return False


async def of_user(conn: AsyncConnection, user_id: int) -> list[AnyRow]:
    result = await conn.execute(
        select(devices)
        .where(devices.c.user_id == user_id)
        .order_by(devices.c.created_ms, devices.c.device_id)
    )
    return list(result)


# A device's "last seen" moves in steps of this much: reconnecting clients do not each write.
SEEN_RESOLUTION_MS = 60_000


async def seen(conn: AsyncConnection, user_id: int, device_id: str, now: int) -> None:
    await conn.execute(
        update(devices)
        .where(
            devices.c.user_id == user_id,
            devices.c.device_id == device_id,
            devices.c.last_seen_ms < now - SEEN_RESOLUTION_MS,
        )
        .values(last_seen_ms=now)
    )


async def rename(conn: AsyncConnection, user_id: int, device_id: str, name: str) -> AnyRow | None:
    """Rename the device; its row as renamed, or None if there is no such device."""
    where = (devices.c.user_id == user_id, devices.c.device_id == device_id)
    await conn.execute(update(devices).where(*where).values(display_name=name))
    return (await conn.execute(select(devices).where(*where))).first()


async def remove(conn: AsyncConnection, user_id: int, device_id: str) -> bool:
    """Delete the device and revoke every token it holds; False if there was no such device."""
    result = await conn.execute(
        delete(devices).where(devices.c.user_id == user_id, devices.c.device_id == device_id)
    )
    if not result.rowcount:
        return False
    # Its published keys went with the row (ON DELETE CASCADE); signatures made on it too.
    await e2ee_keys.forget_signatures(conn, user_id, [device_id])
    await revoke_where(conn, sessions.c.user_id == user_id, sessions.c.device_id == device_id)
    return True


async def remove_all(conn: AsyncConnection, user_id: int) -> None:
    """Forget every device of a deleted account, and every key it published (its sessions
    are revoked by the caller)."""
    await conn.execute(delete(devices).where(devices.c.user_id == user_id))
    await e2ee_keys.forget_user(conn, user_id)


async def revoke_sessions(conn: AsyncConnection, user_id: int, device_id: str) -> int:
    """Revoke the device's live tokens (a new sign-in on the device replaces them)."""
    return await revoke_where(conn, sessions.c.user_id == user_id, sessions.c.device_id == device_id)
