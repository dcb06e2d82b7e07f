"""Key transparency: every publication and removal of a device's keys or of a member's
cross-signing keys is an entry of an append-only Merkle log with signed tree heads
(`core/signed_log`, prefix `b"keyhold-key-sth/v1"`, the service's signing key).

An entry is canonical JSON (Matrix's canonical form, as key signatures use):

    {"v": 1, "idx": N, "op": "publish" | "remove", "user_id": "@name:server",
     "key": "device:<device id>" | "master" | "self_signing" | "user_signing",
     "sha256": <unpadded base64 of SHA-256 of the key object's canonical JSON without
                `signatures` and `unsigned`>,
     "time_ms": <milliseconds>}

`keys/query` answers carry, for every key they serve, the entry that published it and its
inclusion proof against the newest signed head, so a client can check that the key it is
about to encrypt to is the one the log shows to everyone, and that the log only ever grew
(`/e2ee/transparency/consistency`). What the log does not prove: that a key published for a
member was published by that member (only the member, watching their own entries, can tell),
or that a published key was not removed since (a removal is a later entry).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import now_ms
from keyhold.core.signed_log import SignedLog, TreeHead, first_head_problem
from keyhold.core.writer import EventSink, Writer
from keyhold.crypto.merkle import KEY_STH_PREFIX
from keyhold.crypto.signed_json import signed_digest, signing_bytes
from keyhold.crypto.signing import ServiceSigner
from keyhold.e2ee.ids import user_id
from keyhold.store import e2ee_keys as store
from keyhold.store import merkle_log
from keyhold.store.db import create_engine
from keyhold.store.merkle_log import KEY_LOG

ENTRY_VERSION = 1
# Where keys/query answers carry the head and proofs (Matrix clients ignore unknown fields).
TRANSPARENCY_FIELD = "keyhold.transparency"
CROSS_SIGNING_USAGES = ("master", "self_signing", "user_signing")


def device_slot(device_id: str) -> str:
    return f"device:{device_id}"


def key_digest(key_json: str) -> str:
    """What an entry commits to: SHA-256 of the key object's signed bytes."""
    return signed_digest(json.loads(key_json))


@dataclass(frozen=True)
class KeyChange:
    op: str  # publish | remove
    account: int
    user_id: str  # @name:server
    slot: str  # device:<id> | master | self_signing | user_signing
    key_json: str


@dataclass(frozen=True)
class Proof:
    index: int
    entry: bytes
    path: list[bytes]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "entry": self.entry.decode(),
            "inclusion_proof": [h.hex() for h in self.path],
        }


class KeyLog(SignedLog):
    def __init__(self, engine: AsyncEngine, signer: ServiceSigner, writer: Writer, server_name: str) -> None:
        super().__init__(engine, signer, KEY_LOG, KEY_STH_PREFIX)
        self._writer = writer
        self._server = server_name

    async def start(self) -> None:
        """Load the log, and log the keys published before it existed (an upgraded data dir)."""
        await self.load()
        self._writer.on_conflict.append(self.load)
        await self._writer.run(self._backfill)

    async def _backfill(self, conn: AsyncConnection, sink: EventSink) -> None:
        unlogged = await store.published_keys(conn, unlogged_only=True)
        changes = [
            KeyChange("publish", row.user_id, user_id(row.username, self._server), row.slot, row.key_json)
            for row in unlogged
        ]
        if changes:
            await self.record(conn, sink, changes)

    async def record(self, conn: AsyncConnection, sink: EventSink, changes: Sequence[KeyChange]) -> None:
        """Append entries for these changes (in the caller's writer job) and point each
        published key's row at its entry."""
        now = now_ms()
        bodies = [
            signing_bytes(
                {
                    "v": ENTRY_VERSION,
                    "idx": self.size + i,
                    "op": change.op,
                    "user_id": change.user_id,
                    "key": change.slot,
                    "sha256": key_digest(change.key_json),
                    "time_ms": now,
                }
            )
            for i, change in enumerate(changes)
        ]
        indexes = await self.append_bodies(conn, sink, bodies)
        for change, index in zip(changes, indexes, strict=True):
            if change.op == "publish":
                await store.set_log_index(conn, change.account, change.slot, index)

    async def removing(
        self, conn: AsyncConnection, sink: EventSink, account: int, device_ids: Collection[str] | None
    ) -> None:
        """Log the removal of a member's devices' keys (all of them, and their cross-signing
        keys, when `device_ids` is None: the account goes); called before they are deleted.
        An account going also takes its cross-signing keys and signatures with it."""
        username = await store.username_of(conn, account)
        if username is None:
            return
        uid = user_id(username, self._server)
        rows = await store.device_keys_of_users(conn, [account])
        changes = [
            KeyChange("remove", account, uid, device_slot(row.device_id), row.key_json)
            for row in rows
            if device_ids is None or row.device_id in device_ids
        ]
        if device_ids is None:
            cross = await store.cross_signing_keys_of(conn, [account])
            changes += [KeyChange("remove", account, uid, row.usage, row.key_json) for row in cross]
            await store.forget_keys(conn, account, CROSS_SIGNING_USAGES)
            await store.forget_all_signatures(conn, account)
        if changes:
            await self.record(conn, sink, changes)

    async def proofs(
        self, conn: AsyncConnection, indexes: Collection[int | None]
    ) -> tuple[TreeHead | None, dict[int, Proof]]:
        """The newest signed head, and inclusion proofs against it of the entries it covers
        (an entry it does not cover yet gets none: its client cannot check that key, and
        asks again later)."""
        head = self.head
        if head is None:
            return None, {}
        wanted = {i for i in indexes if i is not None and i < head.size}
        entries = await merkle_log.entries_at(conn, KEY_LOG, wanted)
        return head, {i: Proof(i, entry, self.inclusion_proof(i, head.size)) for i, entry in entries.items()}

    def covers(self, indexes: Collection[int | None]) -> bool:
        """Whether the newest head covers all these entries (trivially, when there are none)."""
        size = self.head.size if self.head else 0
        return all(i is not None and i < size for i in indexes)

    async def catch_up(self) -> None:
        """Reload from storage (entries another node appended), in order with this node's
        appends so that no append is in flight meanwhile."""

        async def reload(_conn: AsyncConnection, _sink: EventSink) -> None:
            await self.load()

        await self._writer.run(reload)


@dataclass
class KeyLogAudit:
    entries: int = 0
    heads: int = 0
    keys: int = 0
    problem: str | None = None


async def audit_key_log(engine: AsyncEngine, public_key: bytes, server_name: str) -> KeyLogAudit:
    """Re-derive the key-transparency log from storage (`keyhold audit verify`): entries at
    0..n-1, each canonical and naming its own index; every signed head (see
    `first_head_problem`); and every published key pointing at the entry that published it,
    with the same member, key and hash. The first failure is named."""
    async with engine.connect() as conn:
        rows = await merkle_log.all_entries(conn, KEY_LOG)
        heads = [TreeHead(h.size, h.root, h.timestamp_ms, h.signature) for h in await merkle_log.heads(conn, KEY_LOG)]
        published = await store.published_keys(conn)
    audit = KeyLogAudit(entries=len(rows), heads=len(heads), keys=len(published))
    entries: list[dict[str, Any]] = []
    for position, row in enumerate(rows):
        if row.idx != position:
            audit.problem = f"entry {position}: missing or out of order (found index {row.idx} there)"
            return audit
        try:
            entry = json.loads(row.entry)
            canonical = signing_bytes(entry) == bytes(row.entry)
        except ValueError:
            entry, canonical = None, False
        if not isinstance(entry, dict) or not canonical or entry.get("op") not in ("publish", "remove"):
            audit.problem = f"entry {row.idx}: not a well-formed key-log entry"
            return audit
        if entry.get("idx") != row.idx:
            audit.problem = f"entry {row.idx}: records index {entry.get('idx')} (moved)"
            return audit
        entries.append(entry)
    audit.problem = first_head_problem([bytes(r.entry) for r in rows], heads, public_key, KEY_STH_PREFIX)
    if audit.problem is not None:
        return audit
    for key in published:
        uid = user_id(key.username, server_name)
        index = key.log_idx
        expected = ("publish", uid, key.slot, key_digest(key.key_json))
        if index is None or not 0 <= index < len(entries):
            audit.problem = f"{uid}'s {key.slot} key: published without a key-log entry"
            return audit
        entry = entries[index]
        if (entry.get("op"), entry.get("user_id"), entry.get("key"), entry.get("sha256")) != expected:
            audit.problem = f"{uid}'s {key.slot} key: differs from what entry {index} published"
            return audit
    return audit


async def audit_stored_key_log(database_url: str, public_key: bytes, server_name: str) -> KeyLogAudit:
    """`audit_key_log` over a data dir's database, without starting its services."""
    engine = create_engine(database_url)
    try:
        return await audit_key_log(engine, public_key, server_name)
    finally:
        await engine.dispose()
