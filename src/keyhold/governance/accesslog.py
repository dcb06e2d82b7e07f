"""The access log: every governed act (case opened, approved, refused, content accessed,
disclosure produced, notification, preservation) as a leaf of an RFC 9162 Merkle tree.

An entry is canonical JSON. Facts about individual members are not in the entry itself but in
per-member *blocks* (canonical JSON with a random salt); the entry carries only the SHA-256 of
each block. A member is shown the entry, their own block and an inclusion proof: they can
check that their block is committed to by the entry and the entry by a signed tree head,
while other members' blocks stay hidden behind salted hashes.

Signed tree heads as `core/signed_log` makes them, with the prefix `b"keyhold-sth/v1"`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import iso, now_ms
from keyhold.core.signed_log import SignedLog
from keyhold.core.writer import EventSink, PendingEvent
from keyhold.crypto.merkle import STH_PREFIX, block_hash
from keyhold.crypto.signing import ServiceSigner
from keyhold.store import accesslog as store
from keyhold.store.merkle_log import ACCESS_LOG

ENTRY_VERSION = 1
ENTRY_TYPES = (
    "case_opened",
    "case_approved",
    "case_refused",
    "case_decided",
    "content_accessed",
    "disclosure_produced",
    "notification_sent",
    "notification_deferred",
    "preservation_set",
    "preservation_released",
)


def case_ref(case_id: int, kind: str, region: str) -> dict[str, Any]:
    """How entries name their case: transparency reports group by these fields."""
    return {"case": {"id": case_id, "kind": kind}, "region": region}


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@dataclass
class Subject:
    """What one member may later see of an entry: which of their data it concerns."""

    user_id: int
    messages: list[int] = field(default_factory=list)
    visible_from_ms: int = 0


@dataclass
class LogEntry:
    type: str
    details: dict[str, Any]
    subjects: list[Subject] = field(default_factory=list)


def _with_notifications(entries: Sequence[LogEntry], now: int) -> list[LogEntry]:
    out: list[LogEntry] = []
    for entry in entries:
        out.append(entry)
        if not entry.subjects:
            continue
        deferred = [s.visible_from_ms for s in entry.subjects if s.visible_from_ms > now]
        about = {"about": entry.details.get("case"), "members": len(entry.subjects)}
        if deferred:
            out.append(LogEntry("notification_deferred", {**about, "until": iso(max(deferred))}))
        else:
            out.append(LogEntry("notification_sent", about))
    return out


class AccessLog(SignedLog):
    def __init__(self, engine: AsyncEngine, signer: ServiceSigner) -> None:
        super().__init__(engine, signer, ACCESS_LOG, STH_PREFIX)

    async def append(self, conn: AsyncConnection, sink: EventSink, entries: Sequence[LogEntry]) -> list[int]:
        """Append within the caller's writer job (same transaction) and sign the new head.

        Each entry that concerns members is followed by a notification entry (sent now, or
        deferred under a non-disclosure order); members who may see it now get an
        `access.visible` event on their stream once the transaction commits."""
        now = now_ms()
        bodies: list[bytes] = []
        blocks: list[dict[str, Any]] = []
        for entry in _with_notifications(entries, now):
            if entry.type not in ENTRY_TYPES:
                raise ValueError(f"unknown access-log entry type {entry.type!r}")
            idx = self.size + len(bodies)
            sealed_blocks = []
            for subject in entry.subjects:
                block = canonical(
                    {
                        "idx": idx,
                        "user": subject.user_id,
                        "messages": sorted(subject.messages),
                        "visible_from_ms": subject.visible_from_ms,
                        "salt": os.urandom(16).hex(),
                    }
                )
                sealed_blocks.append(block_hash(block))
                blocks.append(
                    {
                        "idx": idx,
                        "user_id": subject.user_id,
                        "block": block,
                        "visible_from_ms": subject.visible_from_ms,
                        "notified_ms": now if subject.visible_from_ms <= now else None,
                    }
                )
            bodies.append(
                canonical(
                    {
                        "v": ENTRY_VERSION,
                        "idx": idx,
                        "type": entry.type,
                        "time": iso(now),
                        "time_ms": now,
                        "details": entry.details,
                        "subjects": sorted(sealed_blocks),
                    }
                )
            )
            visible_now = [s.user_id for s in entry.subjects if s.visible_from_ms <= now]
            if visible_now:
                sink.add(PendingEvent(user_ids=visible_now, type="access.visible", data={"index": idx}))
        indexes = await self.append_bodies(conn, sink, bodies)
        await store.append_blocks(conn, blocks)
        return indexes


async def subject_view(engine: AsyncEngine, log: AccessLog, user_id: int) -> dict[str, Any]:
    """A member's visible entries, each with their own block and an inclusion proof."""
    head = log.head
    if head is None:
        return {"tree_head": None, "items": []}
    async with engine.connect() as conn:
        rows = await store.visible_blocks(conn, user_id, now_ms())
    items = []
    for row in rows:
        if row.idx >= head.size:
            continue  # appended after the head we return; shown next time
        entry = orjson.loads(row.entry)
        block = orjson.loads(row.block)
        items.append(
            {
                "index": row.idx,
                "entry": row.entry.decode(),
                "block": row.block.decode(),
                "type": entry["type"],
                "time": entry["time"],
                "case": entry["details"].get("case"),
                "messages": block["messages"],
                "inclusion_proof": [h.hex() for h in log.inclusion_proof(row.idx, head.size)],
            }
        )
    return {"tree_head": head.to_json(log.public_key), "items": items}
