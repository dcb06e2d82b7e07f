"""Queries on what devices publish for end-to-end encryption: device keys, one-time and
fallback keys, cross-signing keys and added signatures. Rows hold public keys only."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.store.absent import insert_if_absent, put
from keyhold.store.conversations import co_members
from keyhold.store.rows import AnyRow
from keyhold.store.schema import (
    devices,
    e2ee_cross_signing_keys,
    e2ee_device_keys,
    e2ee_fallback_keys,
    e2ee_one_time_keys,
    e2ee_signatures,
    e2ee_to_device_txns,
    follows,
    users,
)

TXN_MEMORY_MS = 7 * 24 * 3600 * 1000


async def device_keys_of(conn: AsyncConnection, user_id: int, device_id: str) -> AnyRow | None:
    result = await conn.execute(
        select(e2ee_device_keys).where(
            e2ee_device_keys.c.user_id == user_id, e2ee_device_keys.c.device_id == device_id
        )
    )
    return result.first()


async def put_device_keys(
    conn: AsyncConnection, user_id: int, device_id: str, ed25519: str, curve25519: str, key_json: str, now: int
) -> None:
    """Publish the device's keys, or replace their JSON (same identity keys: the caller checked)."""
    values = {"ed25519": ed25519, "curve25519": curve25519, "key_json": key_json, "updated_ms": now}
    await put(conn, e2ee_device_keys, {"user_id": user_id, "device_id": device_id}, values)


async def device_keys_of_users(conn: AsyncConnection, user_ids: Collection[int]) -> list[AnyRow]:
    """The published keys of these users' devices, with each device's name."""
    result = await conn.execute(
        select(
            e2ee_device_keys.c.user_id,
            e2ee_device_keys.c.device_id,
            e2ee_device_keys.c.key_json,
            e2ee_device_keys.c.log_idx,
            devices.c.display_name,
        )
        .select_from(
            e2ee_device_keys.join(
                devices,
                and_(devices.c.user_id == e2ee_device_keys.c.user_id, devices.c.device_id == e2ee_device_keys.c.device_id),
            )
        )
        .where(e2ee_device_keys.c.user_id.in_(list(user_ids)))
        .order_by(e2ee_device_keys.c.user_id, e2ee_device_keys.c.device_id)
    )
    return list(result)


async def devices_with_keys(conn: AsyncConnection, user_id: int) -> list[AnyRow]:
    result = await conn.execute(
        select(e2ee_device_keys.c.device_id, e2ee_device_keys.c.ed25519).where(e2ee_device_keys.c.user_id == user_id)
    )
    return list(result)


async def add_one_time_keys(
    conn: AsyncConnection, user_id: int, device_id: str, keys: Sequence[tuple[str, str, str]]
) -> None:
    """Add (algorithm, key id, JSON) keys; a key id already there keeps its first upload (a
    client retrying an upload sends the same keys again)."""
    for algorithm, key_id, key_json in keys:
        await insert_if_absent(
            conn,
            e2ee_one_time_keys,
            {"user_id": user_id, "device_id": device_id, "algorithm": algorithm, "key_id": key_id, "key_json": key_json},
        )


async def one_time_key_counts(conn: AsyncConnection, user_id: int, device_id: str) -> dict[str, int]:
    result = await conn.execute(
        select(e2ee_one_time_keys.c.algorithm, func.count())
        .where(e2ee_one_time_keys.c.user_id == user_id, e2ee_one_time_keys.c.device_id == device_id)
        .group_by(e2ee_one_time_keys.c.algorithm)
    )
    return {str(algorithm): int(count) for algorithm, count in result}


async def take_one_time_key(conn: AsyncConnection, user_id: int, device_id: str, algorithm: str) -> AnyRow | None:
    """Delete and return one of the device's one-time keys of `algorithm` (oldest first), or
    None when none is left. One statement: two claims can never both get the same key (on
    PostgreSQL a claim skips a key another claim has locked; on SQLite the statement holds
    the write lock)."""
    oldest = (
        select(e2ee_one_time_keys.c.id)
        .where(
            e2ee_one_time_keys.c.user_id == user_id,
            e2ee_one_time_keys.c.device_id == device_id,
            e2ee_one_time_keys.c.algorithm == algorithm,
        )
        .order_by(e2ee_one_time_keys.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = await conn.execute(
        delete(e2ee_one_time_keys)
        .where(e2ee_one_time_keys.c.id == oldest)
        .returning(e2ee_one_time_keys.c.key_id, e2ee_one_time_keys.c.key_json)
    )
    return result.first()


async def put_fallback_key(
    conn: AsyncConnection, user_id: int, device_id: str, algorithm: str, key_id: str, key_json: str
) -> None:
    """The device's new fallback key of `algorithm`, unused; the same key again changes nothing."""
    await put(
        conn,
        e2ee_fallback_keys,
        {"user_id": user_id, "device_id": device_id, "algorithm": algorithm},
        {"key_id": key_id, "key_json": key_json, "used": False},
        only_if=or_(e2ee_fallback_keys.c.key_id != key_id, e2ee_fallback_keys.c.key_json != key_json),
    )


async def use_fallback_key(conn: AsyncConnection, user_id: int, device_id: str, algorithm: str) -> AnyRow | None:
    """The device's fallback key of `algorithm`, marked used (it stays: it is handed out again
    until the device replaces it)."""
    where = and_(
        e2ee_fallback_keys.c.user_id == user_id,
        e2ee_fallback_keys.c.device_id == device_id,
        e2ee_fallback_keys.c.algorithm == algorithm,
    )
    await conn.execute(update(e2ee_fallback_keys).where(where, e2ee_fallback_keys.c.used.is_(False)).values(used=True))
    result = await conn.execute(select(e2ee_fallback_keys.c.key_id, e2ee_fallback_keys.c.key_json).where(where))
    return result.first()


async def unused_fallback_key_types(conn: AsyncConnection, user_id: int, device_id: str) -> list[str]:
    result = await conn.execute(
        select(e2ee_fallback_keys.c.algorithm)
        .where(
            e2ee_fallback_keys.c.user_id == user_id,
            e2ee_fallback_keys.c.device_id == device_id,
            e2ee_fallback_keys.c.used.is_(False),
        )
        .order_by(e2ee_fallback_keys.c.algorithm)
    )
    return [str(row[0]) for row in result]


async def cross_signing_keys_of(conn: AsyncConnection, user_ids: Collection[int]) -> list[AnyRow]:
    result = await conn.execute(
        select(e2ee_cross_signing_keys).where(e2ee_cross_signing_keys.c.user_id.in_(list(user_ids)))
    )
    return list(result)


async def put_cross_signing_key(
    conn: AsyncConnection, user_id: int, usage: str, public_key: str, key_json: str, now: int
) -> None:
    values = {"public_key": public_key, "key_json": key_json, "updated_ms": now}
    await put(conn, e2ee_cross_signing_keys, {"user_id": user_id, "usage": usage}, values)


async def forget_keys(conn: AsyncConnection, user_id: int, usages: Collection[str]) -> None:
    await conn.execute(
        delete(e2ee_cross_signing_keys).where(
            e2ee_cross_signing_keys.c.user_id == user_id, e2ee_cross_signing_keys.c.usage.in_(list(usages))
        )
    )


async def add_signature(
    conn: AsyncConnection, target_user_id: int, target_key: str, signer_user_id: int, signing_key_id: str, signature: str
) -> None:
    row = {
        "target_user_id": target_user_id,
        "target_key": target_key,
        "signer_user_id": signer_user_id,
        "signing_key_id": signing_key_id,
    }
    await put(conn, e2ee_signatures, row, {"signature": signature})


async def signatures_on(conn: AsyncConnection, target_user_ids: Collection[int]) -> list[AnyRow]:
    result = await conn.execute(
        select(e2ee_signatures).where(e2ee_signatures.c.target_user_id.in_(list(target_user_ids)))
    )
    return list(result)


async def forget_signatures(conn: AsyncConnection, target_user_id: int, target_keys: Collection[str]) -> None:
    """Signatures on keys that are gone (a removed device, a replaced master key)."""
    await conn.execute(
        delete(e2ee_signatures).where(
            e2ee_signatures.c.target_user_id == target_user_id, e2ee_signatures.c.target_key.in_(list(target_keys))
        )
    )


async def forget_signatures_by(conn: AsyncConnection, signer_user_id: int, signing_key_ids: Collection[str]) -> None:
    """Signatures made with keys that were replaced."""
    await conn.execute(
        delete(e2ee_signatures).where(
            e2ee_signatures.c.signer_user_id == signer_user_id,
            e2ee_signatures.c.signing_key_id.in_(list(signing_key_ids)),
        )
    )


async def forget_user(conn: AsyncConnection, user_id: int) -> None:
    """Everything a deleted account published (its devices' rows go with the devices)."""
    await conn.execute(delete(e2ee_cross_signing_keys).where(e2ee_cross_signing_keys.c.user_id == user_id))
    await conn.execute(
        delete(e2ee_signatures).where(
            or_(e2ee_signatures.c.target_user_id == user_id, e2ee_signatures.c.signer_user_id == user_id)
        )
    )


async def users_by_name(conn: AsyncConnection, usernames: Collection[str]) -> dict[str, int]:
    """Live accounts' ids by username (deleted accounts are absent, as unknown ones)."""
    result = await conn.execute(
        select(users.c.username, users.c.id).where(users.c.username.in_(list(usernames)), users.c.deleted_ms.is_(None))
    )
    return {str(name): int(uid) for name, uid in result}


async def visible_to(
    conn: AsyncConnection, viewer_id: int, user_ids: Collection[int], with_declined: bool = True
) -> set[int]:
    """Which of `user_ids` the viewer may see the keys of (or, without `with_declined`, send
    to-device messages to): themself, members of a conversation both are in now, and friends
    (each follows the other)."""
    candidates = list(user_ids)
    back = follows.alias("back")
    friends = await conn.execute(
        select(follows.c.followee_id)
        .select_from(
            follows.join(
                back, and_(back.c.follower_id == follows.c.followee_id, back.c.followee_id == follows.c.follower_id)
            )
        )
        .where(follows.c.follower_id == viewer_id, follows.c.followee_id.in_(candidates))
    )
    visible = await co_members(conn, viewer_id, candidates, with_declined) | {int(row[0]) for row in friends}
    return visible | ({viewer_id} & set(candidates))


async def first_to_device_txn(conn: AsyncConnection, user_id: int, device_id: str, txn_id: str, now: int) -> bool:
    """Record the sending device's transaction id; False if it was seen (a retry). Ids older
    than a week are forgotten first: a client retries within minutes, not days."""
    await conn.execute(
        delete(e2ee_to_device_txns).where(
            e2ee_to_device_txns.c.user_id == user_id,
            e2ee_to_device_txns.c.device_id == device_id,
            e2ee_to_device_txns.c.created_ms < now - TXN_MEMORY_MS,
        )
    )
    made = await insert_if_absent(
        conn, e2ee_to_device_txns, {"user_id": user_id, "device_id": device_id, "txn_id": txn_id, "created_ms": now}
    )
    return bool(made.rowcount)


async def device_ids_of(conn: AsyncConnection, user_id: int) -> list[str]:
    result = await conn.execute(select(devices.c.device_id).where(devices.c.user_id == user_id))
    return [str(row[0]) for row in result]


async def device_counts(conn: AsyncConnection, user_ids: Collection[int]) -> dict[int, int]:
    """How many devices with published keys each of these users has."""
    if not user_ids:
        return {}
    result = await conn.execute(
        select(e2ee_device_keys.c.user_id, func.count())
        .where(e2ee_device_keys.c.user_id.in_(list(user_ids)))
        .group_by(e2ee_device_keys.c.user_id)
    )
    return {int(uid): int(count) for uid, count in result}


async def forget_all_signatures(conn: AsyncConnection, user_id: int) -> None:
    """Every signature on or by a member's keys (the account goes)."""
    await conn.execute(
        delete(e2ee_signatures).where(
            or_(e2ee_signatures.c.target_user_id == user_id, e2ee_signatures.c.signer_user_id == user_id)
        )
    )


async def username_of(conn: AsyncConnection, user_id: int) -> str | None:
    return (await conn.execute(select(users.c.username).where(users.c.id == user_id))).scalar()


@dataclass(frozen=True)
class PublishedKey:
    user_id: int
    username: str
    slot: str  # device:<id> | master | self_signing | user_signing (as the key log names keys)
    key_json: str
    log_idx: int | None


async def published_keys(conn: AsyncConnection, unlogged_only: bool = False) -> list[PublishedKey]:
    """Every published device and cross-signing key with its key-log index; or only those
    without an entry (published before the log existed)."""
    d, x = e2ee_device_keys, e2ee_cross_signing_keys
    device_query = (
        select(d.c.user_id, users.c.username, d.c.device_id, d.c.key_json, d.c.log_idx)
        .select_from(d.join(users, users.c.id == d.c.user_id))
        .order_by(d.c.user_id, d.c.device_id)
    )
    cross_query = (
        select(x.c.user_id, users.c.username, x.c.usage, x.c.key_json, x.c.log_idx)
        .select_from(x.join(users, users.c.id == x.c.user_id))
        .order_by(x.c.user_id, x.c.usage)
    )
    if unlogged_only:
        device_query = device_query.where(d.c.log_idx.is_(None))
        cross_query = cross_query.where(x.c.log_idx.is_(None))
    found = [
        PublishedKey(r.user_id, r.username, f"device:{r.device_id}", r.key_json, r.log_idx)
        for r in await conn.execute(device_query)
    ]
    found += [PublishedKey(r.user_id, r.username, r.usage, r.key_json, r.log_idx) for r in await conn.execute(cross_query)]
    return found


async def set_log_index(conn: AsyncConnection, user_id: int, slot: str, index: int) -> None:
    """Point a published key at its key-log entry (`slot` as `unlogged_keys` names it)."""
    if slot.startswith("device:"):
        table, where = e2ee_device_keys, e2ee_device_keys.c.device_id == slot.removeprefix("device:")
    else:
        table, where = e2ee_cross_signing_keys, e2ee_cross_signing_keys.c.usage == slot
    await conn.execute(update(table).where(table.c.user_id == user_id, where).values(log_idx=index))
