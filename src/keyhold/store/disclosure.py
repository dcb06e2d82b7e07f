"""What a disclosure package may contain, per data category (never content: that is opened
through governance.access, and e2ee content not at all: the service holds no key to it). Only
the targets' data inside the case's date range."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.clock import iso
from keyhold.store.schema import conversations, devices, e2ee_device_keys, members, messages, sessions, users


async def collect(
    conn: AsyncConnection, targets: Sequence[int], categories: Sequence[str], start_ms: int, end_ms: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "subscriber_info" in categories:
        rows = (await conn.execute(select(users).where(users.c.id.in_(list(targets))))).all()
        device_rows = (
            await conn.execute(
                select(devices, e2ee_device_keys.c.device_id.label("keys"))
                .select_from(
                    devices.outerjoin(
                        e2ee_device_keys,
                        (e2ee_device_keys.c.user_id == devices.c.user_id)
                        & (e2ee_device_keys.c.device_id == devices.c.device_id),
                    )
                )
                .where(devices.c.user_id.in_(list(targets)))
                .order_by(devices.c.created_ms)
            )
        ).all()
        out["subscriber_info"] = [
            {
                "username": r.username,
                "display_name": r.display_name,
                "region": r.region,
                "birthdate": r.birthdate,
                "created_at": iso(r.created_ms),
                "disabled": r.disabled,
                "suspended_until": iso(r.suspended_until_ms) if r.suspended_until_ms else None,
                "deleted_at": iso(r.deleted_ms) if r.deleted_ms else None,
                "devices": [
                    {
                        "device_id": d.device_id,
                        "created_at": iso(d.created_ms),
                        "last_seen_at": iso(d.last_seen_ms),
                        "e2ee_keys": d.keys is not None,
                    }
                    for d in device_rows
                    if d.user_id == r.id
                ],
            }
            for r in rows
        ]
    if "connection_logs" in categories:
        rows = (
            await conn.execute(
                select(
                    sessions.c.user_id,
                    sessions.c.device_id,
                    sessions.c.created_ms,
                    sessions.c.expires_ms,
                    sessions.c.revoked_ms,
                )
                .where(
                    sessions.c.user_id.in_(list(targets)),
                    sessions.c.created_ms >= start_ms,
                    sessions.c.created_ms < end_ms,
                )
                .order_by(sessions.c.created_ms)
            )
        ).all()
        out["connection_logs"] = [
            {
                "user_id": r.user_id,
                "device_id": r.device_id,
                "session_started": iso(r.created_ms),
                "session_expires": iso(r.expires_ms),
                "revoked": r.revoked_ms is not None,
                "session_revoked": iso(r.revoked_ms) if r.revoked_ms is not None else None,
            }
            for r in rows
        ]
    target_conversations = select(members.c.conversation_id).where(members.c.user_id.in_(list(targets)))
    in_scope = (
        select(
            messages.c.id,
            messages.c.conversation_id,
            users.c.username,
            messages.c.kind,
            messages.c.sent_ms,
            messages.c.deleted_ms,
            messages.c.sender_device,
            func.length(messages.c.body).label("size"),
        )
        .select_from(messages.join(users, users.c.id == messages.c.sender_id))
        .where(
            messages.c.conversation_id.in_(target_conversations),
            messages.c.sent_ms >= start_ms,
            messages.c.sent_ms < end_ms,
        )
        .order_by(messages.c.id)
    )
    if "conversation_metadata" in categories:
        convs = (
            await conn.execute(
                select(
                    conversations.c.id, conversations.c.kind, conversations.c.encryption, conversations.c.created_ms
                ).where(
                    conversations.c.id.in_(target_conversations)
                )
            )
        ).all()
        member_rows = (
            await conn.execute(
                select(members.c.conversation_id, users.c.username, members.c.joined_ms, members.c.left_ms)
                .select_from(members.join(users, users.c.id == members.c.user_id))
                .where(members.c.conversation_id.in_([c.id for c in convs]))
            )
        ).all()
        out["conversation_metadata"] = {
            "conversations": [
                {
                    "id": c.id,
                    "kind": c.kind,
                    "encryption": c.encryption,
                    "created_at": iso(c.created_ms),
                    "members": [
                        {
                            "username": m.username,
                            "joined_at": iso(m.joined_ms),
                            "left_at": iso(m.left_ms) if m.left_ms else None,
                        }
                        for m in member_rows
                        if m.conversation_id == c.id
                    ],
                }
                for c in convs
            ],
            "messages": [
                {
                    "id": r.id,
                    "conversation_id": r.conversation_id,
                    "sender": r.username,
                    "kind": r.kind,
                    "sent_at": iso(r.sent_ms),
                    "deleted": r.deleted_ms is not None,
                    "sender_device": r.sender_device,
                    "size": r.size,  # bytes stored: sealed text, or e2ee ciphertext as sent
                }
                for r in (await conn.execute(in_scope)).all()
            ],
        }
    if "message_content" in categories:
        # e2ee messages have no content the service can open: their metadata is all there is.
        out["_message_ids"] = [r.id for r in (await conn.execute(in_scope)).all() if r.kind != "e2ee"]
    return out
