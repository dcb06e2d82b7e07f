"""The key directory of end-to-end encryption: devices publish public keys; members who may
encrypt to them (those who share a conversation with their owner, or are friends) fetch them.

Bodies and answers are the Matrix client-server specification's for the same-named endpoints
(`keys/upload`, `keys/query`, `keys/claim`, `keys/device_signing/upload`,
`keys/signatures/upload`). The service checks what it relies on and keeps each object as the
device signed it; it never holds a private key. A user the asker may not see gets the answer
an unknown user gets.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import now_ms
from keyhold.core.accounts import AccountService, Member, require_live_session
from keyhold.core.devices import announce_device_change
from keyhold.core.errors import Problem, conflict, forbidden, invalid
from keyhold.core.writer import EventSink, PendingEvent, Writer
from keyhold.crypto.signed_json import signing_bytes, verify_signed_json, with_signature
from keyhold.e2ee import shapes
from keyhold.e2ee.ids import split_user_id, user_id
from keyhold.e2ee.key_log import TRANSPARENCY_FIELD, KeyChange, KeyLog, device_slot, key_digest
from keyhold.e2ee.people import reachable
from keyhold.store import e2ee_keys as store

MAX_DEVICES = 1000


def _device_of(member: Member) -> str:
    if member.device_id is None:
        raise forbidden("this token belongs to no device: sign in again to get one")
    return member.device_id


class KeyDirectory:
    def __init__(
        self, engine: AsyncEngine, writer: Writer, accounts: AccountService, key_log: KeyLog, server_name: str
    ) -> None:
        self._engine = engine
        self._writer = writer
        self._accounts = accounts
        self.key_log = key_log
        self._server = server_name

    def _me(self, member: Member) -> str:
        return user_id(member.username, self._server)

    # keys/upload

    async def upload(
        self, member: Member, device_keys: Any, one_time_keys: Any, fallback_keys: Any
    ) -> dict[str, Any]:
        me, device = self._me(member), _device_of(member)
        new_keys = None if device_keys is None else shapes.device_keys(device_keys, me, device)

        async def run(conn: AsyncConnection, sink: EventSink) -> dict[str, Any]:
            await require_live_session(conn, member)
            published = await store.device_keys_of(conn, member.id, device)
            if new_keys is not None:
                if published is not None and (published.ed25519, published.curve25519) != (
                    new_keys.ed25519,
                    new_keys.curve25519,
                ):
                    raise shapes.bad_keys(
                        "this device published other identity keys: a device's keys never change "
                        "(sign in as a new device instead)"
                    )
                await store.put_device_keys(
                    conn, member.id, device, new_keys.ed25519, new_keys.curve25519, new_keys.json, now_ms()
                )
                if published is None or key_digest(published.key_json) != key_digest(new_keys.json):
                    # A new key object, not the same one with other `unsigned` or signatures:
                    # re-uploads must not grow the permanent log.
                    change = KeyChange("publish", member.id, me, device_slot(device), new_keys.json)
                    await self.key_log.record(conn, sink, [change])
                    await announce_device_change(conn, sink, member.id, me)
            ed25519 = new_keys.ed25519 if new_keys else (published.ed25519 if published else None)
            if (one_time_keys or fallback_keys) and ed25519 is None:
                raise shapes.bad_keys("publish device_keys before one-time or fallback keys")
            if one_time_keys and ed25519 is not None:
                keys = shapes.signed_keys(one_time_keys, "one_time_keys", me, device, ed25519, fallback=False)
                await store.add_one_time_keys(conn, member.id, device, keys)
            if fallback_keys and ed25519 is not None:
                for algorithm, key_id, key_json in shapes.signed_keys(
                    fallback_keys, "fallback_keys", me, device, ed25519, fallback=True
                ):
                    await store.put_fallback_key(conn, member.id, device, algorithm, key_id, key_json)
            counts = await store.one_time_key_counts(conn, member.id, device)
            if any(count > shapes.MAX_ONE_TIME_KEYS for count in counts.values()):
                raise shapes.bad_keys(
                    f"a device holds at most {shapes.MAX_ONE_TIME_KEYS} unclaimed one-time keys per algorithm"
                )
            return {"one_time_key_counts": {"signed_curve25519": 0, **counts}}

        return await self._writer.run(run)

    async def greeting(self, member: Member, seq: int) -> bytes | None:
        """The `e2ee.key_counts` frame a device's stream gets right after `ready`, if the
        device has published keys."""
        if member.device_id is None:
            return None
        async with self._engine.connect() as conn:
            if await store.device_keys_of(conn, member.id, member.device_id) is None:
                return None
            counts = await _key_counts(conn, member.id, member.device_id)
        return orjson.dumps({"type": "e2ee.key_counts", "seq": seq, **counts})

    # keys/query

    async def query(self, member: Member, wanted: Mapping[str, list[str]]) -> dict[str, Any]:
        """Matrix's answer, plus `keyhold.transparency`: the newest signed head of the key log
        and, per served key, the entry that published it with its inclusion proof."""
        if sum(len(devices) for devices in wanted.values()) > MAX_DEVICES:
            raise invalid(f"at most {MAX_DEVICES} devices per request")
        async with self._engine.connect() as conn:
            answer, logged = await self._query(conn, member, wanted)
            covered = self.key_log.covers(logged.values())
            if covered:
                head, by_index = await self.key_log.proofs(conn, logged.values())
        if not covered:
            # Keys published a moment ago, or by another node: the head catches up first.
            await self.key_log.catch_up()
            async with self._engine.connect() as conn:
                answer, logged = await self._query(conn, member, wanted)
                head, by_index = await self.key_log.proofs(conn, logged.values())
        proofs: dict[str, dict[str, Any]] = {}
        for (uid, slot), index in logged.items():
            if index is not None and index in by_index:
                proofs.setdefault(uid, {})[slot] = by_index[index].to_json()
        tree_head = head.to_json(self.key_log.public_key) if head is not None else None
        answer[TRANSPARENCY_FIELD] = {"tree_head": tree_head, "proofs": proofs}
        return answer

    async def _query(
        self, conn: AsyncConnection, member: Member, wanted: Mapping[str, list[str]]
    ) -> tuple[dict[str, Any], dict[tuple[str, str], int | None]]:
        """The Matrix answer, and the key-log index of every key in it by (user, slot)."""
        me = self._me(member)
        seen, failures = await reachable(conn, member, list(wanted), self._server)
        account_ids = set(seen.values())
        device_rows = await store.device_keys_of_users(conn, account_ids)
        cross_rows = await store.cross_signing_keys_of(conn, account_ids)
        signature_rows = await store.signatures_on(conn, account_ids)
        by_account = {account: uid for uid, account in seen.items()}
        extra = _added_signatures(signature_rows, by_account, member.id, me)
        logged: dict[tuple[str, str], int | None] = {}
        device_keys: dict[str, dict[str, Any]] = {uid: {} for uid in wanted}
        for row in device_rows:
            uid = by_account[row.user_id]
            if wanted[uid] and row.device_id not in wanted[uid]:
                continue
            keys = _with_signatures(json.loads(row.key_json), extra.get((row.user_id, row.device_id)))
            if uid == me:
                keys["unsigned"] = {**keys.get("unsigned", {}), "device_display_name": row.display_name}
            device_keys[uid][row.device_id] = keys
            logged[uid, device_slot(row.device_id)] = row.log_idx
        answer: dict[str, Any] = {"failures": failures, "device_keys": device_keys}
        for usage in shapes.CROSS_SIGNING_USAGES:
            answer[f"{usage}_keys"] = {}
        for row in cross_rows:
            uid = by_account[row.user_id]
            if row.usage == "user_signing" and uid != me:
                continue  # a member's user-signing key is theirs alone to see
            key = _with_signatures(json.loads(row.key_json), extra.get((row.user_id, row.public_key)))
            answer[f"{row.usage}_keys"][uid] = key
            logged[uid, row.usage] = row.log_idx
        return answer, logged

    # keys/claim

    async def claim(self, member: Member, wanted: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
        if sum(len(devices) for devices in wanted.values()) > MAX_DEVICES:
            raise invalid(f"at most {MAX_DEVICES} devices per request")

        async def run(conn: AsyncConnection, sink: EventSink) -> dict[str, Any]:
            await require_live_session(conn, member)
            seen, failures = await reachable(conn, member, list(wanted), self._server)
            taken: dict[str, dict[str, Any]] = {}
            for uid, account in seen.items():
                for device, algorithm in wanted[uid].items():
                    row = await store.take_one_time_key(conn, account, device, algorithm)
                    if row is None:
                        row = await store.use_fallback_key(conn, account, device, algorithm)
                    if row is None:
                        continue
                    taken.setdefault(uid, {})[device] = {f"{algorithm}:{row.key_id}": json.loads(row.key_json)}
                    # The device learns what is left, to upload more before it runs out.
                    counts = await _key_counts(conn, account, device)
                    sink.add(PendingEvent([account], "e2ee.key_counts", data=counts, device_id=device))
            return {"failures": failures, "one_time_keys": taken}

        return await self._writer.run(run)

    # keys/device_signing/upload

    async def upload_cross_signing(self, member: Member, keys: Mapping[str, Any], password: str | None) -> None:
        me = self._me(member)
        new = {
            usage: shapes.cross_signing_key(keys[f"{usage}_key"], me, usage)
            for usage in shapes.CROSS_SIGNING_USAGES
            if keys.get(f"{usage}_key") is not None
        }
        if not new:
            raise shapes.bad_keys("upload at least one of master_key, self_signing_key, user_signing_key")
        async with self._engine.connect() as conn:
            current = {row.usage: row for row in await store.cross_signing_keys_of(conn, [member.id])}
        old_master = current.get("master")
        replacing = "master" in new and old_master is not None and old_master.public_key != new["master"].public_key
        if replacing or (old_master is not None and _changes_subkeys(new, current)):
            # Whoever holds a stolen token must not swap the keys contacts verify against.
            if password is None:
                # Matrix's user-interactive authentication answer: clients then ask for the
                # password and send it in `auth` (no state is kept: `session` is a formality).
                raise Problem(
                    401,
                    "password-required",
                    "Password required",
                    "replacing cross-signing keys needs your password in auth.password",
                    flows=[{"stages": ["m.login.password"]}],
                    params={},
                    session=secrets.token_urlsafe(12),
                )
            await self._accounts.verify_for_deletion(member, password)
        master = new["master"].public_key if "master" in new else (old_master.public_key if old_master else None)
        if master is None:
            raise shapes.bad_keys("upload master_key first: the other keys are signed by it")
        for usage in ("self_signing", "user_signing"):
            if usage in new and not verify_signed_json(new[usage].body, me, f"ed25519:{master}", master):
                raise shapes.bad_signature(f"{usage}_key is not signed by the master key")

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            await require_live_session(conn, member)
            again = {row.usage: row for row in await store.cross_signing_keys_of(conn, [member.id])}
            if {u: r.public_key for u, r in again.items()} != {u: r.public_key for u, r in current.items()}:
                raise conflict("your cross-signing keys changed meanwhile; fetch them and retry")
            # Signatures made with a replaced key no longer stand; nor, once the master key is
            # replaced, the keys it signed that were not uploaded again, or signatures on it.
            changed = [row for usage, row in current.items() if usage in new and row.public_key != new[usage].public_key]
            if replacing and old_master is not None:
                stale = [row for usage, row in current.items() if usage not in new]
                await store.forget_keys(conn, member.id, [row.usage for row in stale])
                await store.forget_signatures(conn, member.id, [old_master.public_key])
                changed += stale
            await store.forget_signatures_by(conn, member.id, [f"ed25519:{row.public_key}" for row in changed])
            now = now_ms()
            for key in new.values():
                await store.put_cross_signing_key(conn, member.id, key.usage, key.public_key, key.json, now)
            published = [
                KeyChange("publish", member.id, me, usage, key.json)
                for usage, key in new.items()
                if usage not in current or key_digest(current[usage].key_json) != key_digest(key.json)
            ]
            gone = [KeyChange("remove", member.id, me, row.usage, row.key_json) for row in changed if row.usage not in new]
            if published or gone:
                await self.key_log.record(conn, sink, gone + published)
                await announce_device_change(conn, sink, member.id, me)

        await self._writer.run(run)

    # keys/signatures/upload

    async def upload_signatures(self, member: Member, signed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        me = self._me(member)
        if sum(len(objects) for objects in signed.values()) > MAX_DEVICES:
            raise invalid(f"at most {MAX_DEVICES} signed objects per request")

        async def run(conn: AsyncConnection, sink: EventSink) -> dict[str, Any]:
            failures: dict[str, dict[str, Any]] = defaultdict(dict)
            changed: set[int] = set()
            await require_live_session(conn, member)
            seen, _ = await reachable(conn, member, [uid for uid in signed if split_user_id(uid)], self._server)
            mine = {row.usage: row for row in await store.cross_signing_keys_of(conn, [member.id])}
            for uid, objects in signed.items():
                account = seen.get(uid)
                for key_id, obj in objects.items():
                    try:
                        if account is None:
                            raise _failure("M_NOT_FOUND", "no such user")
                        if not isinstance(obj, Mapping):
                            raise _failure("M_INVALID_PARAM", "a signed object is a JSON object")
                        await self._add_signatures(conn, member, me, mine, uid, account, key_id, obj)
                        if account not in changed:
                            await announce_device_change(conn, sink, account, uid)
                            changed.add(account)
                    except _Failure as failure:
                        failures[uid][key_id] = failure.body
            return {"failures": dict(failures)}

        return await self._writer.run(run)

    async def _add_signatures(
        self,
        conn: AsyncConnection,
        member: Member,
        me: str,
        mine: dict[str, Any],
        uid: str,
        account: int,
        key_id: str,
        obj: Mapping[str, Any],
    ) -> None:
        """Keep the signatures on `obj` that the service can check and that it shows: on one of
        my devices by my self-signing key; on my master key by one of my devices; on another
        member's master key by my user-signing key."""
        target = await _published(conn, account, key_id)
        if target is None:
            raise _failure("M_NOT_FOUND", "no such published key")
        stored, is_master = target
        try:
            same = signing_bytes(obj) == signing_bytes(stored)
        except ValueError:
            same = False  # no canonical form (an unpaired surrogate...): not the published object
        if not same:
            raise _failure("M_INVALID_PARAM", "the object differs from the published one")
        signers: list[tuple[str, str]] = []  # (signing key id, its public key)
        if uid == me and not is_master and "self_signing" in mine:
            signers = [(f"ed25519:{mine['self_signing'].public_key}", mine["self_signing"].public_key)]
        elif uid == me and is_master:
            signers = [(f"ed25519:{row.device_id}", row.ed25519) for row in await store.devices_with_keys(conn, member.id)]
        elif uid != me and is_master and "user_signing" in mine:
            signers = [(f"ed25519:{mine['user_signing'].public_key}", mine["user_signing"].public_key)]
        offered = obj.get("signatures", {}).get(me, {}) if isinstance(obj.get("signatures"), Mapping) else {}
        kept = 0
        for signing_key_id, public_key in signers:
            if signing_key_id in offered:
                if not isinstance(offered[signing_key_id], str) or not shapes.SIGNATURE.fullmatch(offered[signing_key_id]):
                    raise _failure("M_INVALID_PARAM", "a signature is 64 bytes in unpadded base64")
                if not verify_signed_json(obj, me, signing_key_id, public_key):
                    raise _failure("M_INVALID_SIGNATURE", f"the signature by {signing_key_id} does not verify")
                await store.add_signature(conn, account, key_id, member.id, signing_key_id, offered[signing_key_id])
                kept += 1
        if not kept:
            raise _failure("M_INVALID_SIGNATURE", "no signature the service can check and keep")


class _Failure(Exception):
    def __init__(self, errcode: str, error: str) -> None:
        super().__init__(error)
        self.body = {"errcode": errcode, "error": error}


def _failure(errcode: str, error: str) -> _Failure:
    return _Failure(errcode, error)


async def _published(conn: AsyncConnection, account: int, key_id: str) -> tuple[dict[str, Any], bool] | None:
    """The published object `key_id` names (a device id, or a master key's public key)."""
    device = await store.device_keys_of(conn, account, key_id)
    if device is not None:
        return json.loads(device.key_json), False
    for row in await store.cross_signing_keys_of(conn, [account]):
        if row.usage == "master" and row.public_key == key_id:
            return json.loads(row.key_json), True
    return None


def _changes_subkeys(new: Mapping[str, shapes.CrossSigningKey], current: Mapping[str, Any]) -> bool:
    return any(usage in current and current[usage].public_key != key.public_key for usage, key in new.items())


def _added_signatures(
    rows: list[Any], by_account: Mapping[int, str], viewer: int, viewer_id: str
) -> dict[tuple[int, str], dict[str, dict[str, str]]]:
    """Signatures added after publication, by target: a member's own signatures on their keys
    are shown to all; a signature on another member's master key only to its signer."""
    extra: dict[tuple[int, str], dict[str, dict[str, str]]] = {}
    for row in rows:
        if row.signer_user_id != row.target_user_id and row.signer_user_id != viewer:
            continue
        signer = viewer_id if row.signer_user_id == viewer else by_account[row.signer_user_id]
        extra.setdefault((row.target_user_id, row.target_key), {}).setdefault(signer, {})[
            row.signing_key_id
        ] = row.signature
    return extra


def _with_signatures(obj: dict[str, Any], extra: Mapping[str, Mapping[str, str]] | None) -> dict[str, Any]:
    for user, keys in (extra or {}).items():
        for key_id, signature in keys.items():
            obj = with_signature(obj, user, key_id, signature)
    return obj



async def _key_counts(conn: AsyncConnection, account: int, device: str) -> dict[str, Any]:
    counts = await store.one_time_key_counts(conn, account, device)
    return {
        "one_time_key_counts": {"signed_curve25519": 0, **counts},
        "unused_fallback_key_types": await store.unused_fallback_key_types(conn, account, device),
    }
