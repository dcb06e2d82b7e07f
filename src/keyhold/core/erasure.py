"""Destroying content, respecting preservation holds: the one way messages and attachments go.

A sender's delete for everyone, account deletion, a moderator's removal and the end of a hold
all come here, inside their writer job. For members and moderators a deleted message is a
tombstone and a deleted attachment is gone (410), hold or no hold: nothing they can see tells
them a hold exists. Under a hold the sealed body, file name and bytes are kept, reachable only
through `governance.access` by legal staff, until the hold ends (`purge_hidden`). Otherwise they
are destroyed: rows in the transaction, blob files only once it has committed, so that a
transaction that fails leaves both rows and files as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.core.writer import EventSink, PendingEvent
from keyhold.store import contacts as contact_store
from keyhold.store import messages as message_store
from keyhold.store.blobs import BlobStore
from keyhold.store.cases import held_conversations
from keyhold.store.rows import AnyRow

log = logging.getLogger("keyhold.erasure")


class Erasure:
    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    async def erase(self, conn: AsyncConnection, sink: EventSink, rows: Sequence[AnyRow], now: int) -> None:
        """Tombstone these messages (rows with id, conversation_id, attachment_id)."""
        if not rows:
            return
        held = await held_conversations(conn, {r.conversation_id for r in rows}, now)
        kept = [r for r in rows if r.conversation_id in held]
        gone = [r for r in rows if r.conversation_id not in held]
        await message_store.tombstone(conn, [r.id for r in kept], now, keep_body=True)
        await message_store.tombstone(conn, [r.id for r in gone], now, keep_body=False)
        await message_store.hide_attachments(conn, [r.attachment_id for r in kept if r.attachment_id], now)
        await self._destroy_attachments(conn, sink, [r.attachment_id for r in gone if r.attachment_id], now)

    async def purge_hidden(
        self, conn: AsyncConnection, sink: EventSink, conversation_ids: Iterable[int], now: int
    ) -> None:
        """Destroy what holds kept behind tombstones in these conversations (no hold covers
        them any more)."""
        attachment_ids = await message_store.purge_hidden(conn, conversation_ids)
        await self._destroy_attachments(conn, sink, attachment_ids, now)

    @staticmethod
    async def announce(
        conn: AsyncConnection, sink: EventSink, rows: Sequence[AnyRow], members: Mapping[int, Collection[int]]
    ) -> None:
        """`message.deleted` to the current members of each message's conversation, but those it
        was kept from (`store.contacts.kept_from`: they block its sender, it was past a request's
        limits, or it came before they were asked): they never had it, and the news of its
        deletion would tell them it existed. Of a held message (`core.screening`), never
        delivered to the others, to its sender only."""
        kept = await contact_store.kept_from(conn, rows)
        for row in rows:
            if getattr(row, "review", None) is not None:
                told = [row.sender_id]
            else:
                told = [uid for uid in members.get(row.conversation_id, ()) if uid not in kept.get(row.id, ())]
            sink.add(
                PendingEvent(
                    user_ids=told,
                    type="message.deleted",
                    conversation_id=row.conversation_id,
                    message_id=row.id,
                    data={"message_id": row.id},
                )
            )

    async def _destroy_attachments(
        self, conn: AsyncConnection, sink: EventSink, attachment_ids: Sequence[str], now: int
    ) -> None:
        if not attachment_ids:
            return
        await message_store.mark_attachments_deleted(conn, attachment_ids, now)
        sink.on_commit.append(lambda: self._delete_blobs(attachment_ids))

    def _delete_blobs(self, attachment_ids: Sequence[str]) -> None:
        for attachment_id in attachment_ids:
            try:
                self._blobs.delete(attachment_id)
            except OSError as exc:
                # The rows already say "destroyed" and the bytes are sealed: log and go on.
                log.error("could not remove the blob of attachment %s: %s", attachment_id, type(exc).__name__)
