"""Messages: send (batched through the writer), read, delete.

In `standard` conversations content is sealed before it reaches storage and opened only for
the conversation's current members; in `e2ee` ones it arrives encrypted by the sender's
device and is stored and returned as it came (`core.encrypted`). What the service sees in the clear while handling a message: its text in memory
for the duration of the request, never written (see `store.schema` for what is stored).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import MessageIds, iso, now_ms
from keyhold.config import Settings
from keyhold.core.accounts import session_refusal
from keyhold.core.contacts import NO_ONE, SendCheck, SendCheckGate, SendGate
from keyhold.core.encrypted import (
    check_franking,
    e2ee_attachment,
    encode_encrypted,
    franking_record,
    render_encrypted,
    render_encrypted_row,
)
from keyhold.core.erasure import Erasure
from keyhold.core.errors import Problem, conflict, forbidden, invalid, not_found, not_yours, unauthorized
from keyhold.core.keys import ConversationKeys
from keyhold.core.matrix_ids import room_id, user_id
from keyhold.core.screening import ALLOWED, PENDING_REVIEW, REFUSED, InLine, Screening, SendScreening
from keyhold.core.writer import EventSink, PendingEvent, Writer
from keyhold.crypto.envelope import ConversationKey, SealError
from keyhold.crypto.franking_keys import FrankingKeys
from keyhold.store import accounts as account_store
from keyhold.store import contacts as contact_store
from keyhold.store import conversations as conversation_store
from keyhold.store import messages as store
from keyhold.store.blobs import BlobStore
from keyhold.store.rows import AnyRow

log = logging.getLogger("keyhold.messages")
# The epoch of e2ee messages and attachments: no conversation key (epochs start at 1).
E2EE_EPOCH = 0


@dataclass(slots=True)
class EpochState:
    """A conversation's key epoch as the writer advances it within one transaction."""

    epoch: int
    count: int
    started_ms: int
    last_message_id: int | None = None
    changed: bool = False

    def row(self, conversation_id: int) -> dict[str, Any]:
        return {
            "cid": conversation_id,
            "epoch": self.epoch,
            "count": self.count,
            "started": self.started_ms,
            "last_id": self.last_message_id,
        }


@dataclass(frozen=True, slots=True)
class Sent:
    """A committed send: the message as members see it, and its JSON, serialized once for
    every recipient's event and the sender's acknowledgement."""

    message: dict[str, Any]
    json: bytes

    @classmethod
    def of(cls, message: dict[str, Any]) -> Sent:
        return cls(message, orjson.dumps(message))

    def with_fields(self, **fields: Any) -> Sent:
        """The message with more fields (for its sender only: a support notice)."""
        return Sent.of({**self.message, **fields})


@dataclass(slots=True)
class SendRequest:
    sender_id: int
    sender: str
    conversation_id: int
    text: str
    idempotency_key: str | None
    attachment_id: str | None = None
    # The digest of the token the send came with (see `accounts.Member.session`): checked in
    # the transaction that would store the message, so a revoked session stores nothing.
    session: bytes = b""
    # The stream connection the send came from (0: not a stream), which is not sent the
    # message back as `message.new`: its `ack` carries the message already.
    origin: int = 0
    # In an e2ee conversation, instead of text: `m.room.encrypted` content (`core.encrypted`),
    # and its stored form, set by `MessageService.validate`.
    encrypted: Mapping[str, Any] | None = None
    encrypted_json: bytes | None = None
    # The device the send came from, and an e2ee send's franking (`core.encrypted`) with its
    # commitment, set by `MessageService.validate`.
    device_id: str | None = None
    franking: Mapping[str, Any] | None = None
    franking_commitment: bytes | None = None
    # What the safety screen answered about a `standard` send (`core.screening`), set by
    # `MessageService.screen`; None when it was not screened (encrypted content, no screen).
    screening: Screening | None = None
    # The id of the message this send stored, set by the writer (a retry stores none).
    stored_id: int | None = None


def render_message(
    row: AnyRow, text: str | None = None, attachment: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A stored message as members see it; without text it renders as a tombstone. A message
    the safety screen held is only ever rendered for its sender, with its review `status`."""
    gone = text is None
    rendered = {
        "id": row.id,
        "conversation_id": row.conversation_id,
        "sender": row.sender,
        "kind": row.kind,
        "text": text,
        "attachment": None if gone else attachment,
        "sent_at": iso(row.sent_ms),
        "deleted": gone,
        "expires_at": None if row.expires_ms is None else iso(row.expires_ms),
    }
    review = getattr(row, "review", None)
    if review is not None:
        rendered["status"] = PENDING_REVIEW if review == "pending" else REFUSED
    return rendered


class MessageService:
    def __init__(
        self,
        engine: AsyncEngine,
        writer: Writer,
        keys: ConversationKeys,
        blobs: BlobStore,
        erasure: Erasure,
        settings: Settings,
        franking: FrankingKeys,
    ) -> None:
        self._engine = engine
        self._writer = writer
        self._franking = franking
        self._keys = keys
        self._blobs = blobs
        self._erasure = erasure
        self._settings = settings
        self._ids = MessageIds()
        # Who may send to whom (blocks, requests, the minors' rules): `core.contacts`, filled at
        # wiring time; without it every member may send.
        self.send_gate: SendGate | None = None
        self.check_send: SendCheckGate | None = None
        # The safety screen of `standard` sends and uploads (`core.screening`): its `screen`
        # and `on_screened` are filled at wiring time; unfilled, nothing is screened.
        self.screening = SendScreening(engine, writer, settings, self._commit_sends)
        writer.set_batch_handler(self._commit_sends)

    async def start(self) -> None:
        async with self._engine.connect() as conn:
            self._ids = MessageIds(floor=await store.max_message_id(conn))

    # -- sending ---------------------------------------------------------------------------

    def validate(self, request: SendRequest) -> None:
        if request.franking is not None:
            if request.encrypted is None:
                raise invalid("franking goes with encrypted content only")
            if request.device_id is None:
                raise invalid("a franked message needs a token that belongs to a device: sign in again")
            request.franking_commitment = check_franking(request.franking)
        if request.encrypted is not None:
            if request.text:
                raise invalid("send either text or encrypted content, not both")
            request.encrypted_json = encode_encrypted(request.encrypted)
            return
        if request.attachment_id is None and not request.text.strip():
            raise invalid("text must not be empty (or attach a file)")
        if len(request.text) > self._settings.max_text_chars:
            raise invalid(f"text is longer than {self._settings.max_text_chars} characters")

    def submit(self, request: SendRequest, done: Callable[[Sent | Problem], None]) -> None:
        """Queue a validated send as it is (unscreened: see `screen_and_submit`); `done(result)`
        runs after commit (a `Sent` or a Problem)."""
        self._writer.submit(request, done)

    def screen_and_submit(
        self, request: SendRequest, done: Callable[[Sent | Problem], None], after: InLine | None = None
    ) -> InLine | None:
        """The one way a validated send goes on to the writer, from REST and the stream alike:
        screened first when it must be (`core.screening.SendScreening.submit`)."""
        return self.screening.submit(request, done, after)

    async def send(self, request: SendRequest) -> dict[str, Any]:
        self.validate(request)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.screening.screen_then_submit(request, future.set_result)
        result = await future
        if isinstance(result, Problem):
            raise result
        return dict(result.message)

    def _commit_sends(self, conn: Connection, batch: list[SendRequest], sink: EventSink) -> list[Sent | Problem]:
        """Writer batch handler: one transaction for every send in `batch`, run whole on the
        writer's database thread (synchronous code: no trip back to the event loop until the
        commit)."""
        now = now_ms()
        sent_at = iso(now)  # one timestamp for the whole batch: it commits as one
        sessions = {r.session for r in batch if r.session}
        found = account_store.session_users(conn, sessions) if sessions else {}
        refusals = {s: session_refusal(found.get(s), now) for s in sessions}
        idems = {f"{r.sender_id}:{r.idempotency_key}" for r in batch if r.idempotency_key}
        earlier = store.by_idempotency(conn, idems) if idems else {}
        conv_ids = {r.conversation_id for r in batch}
        states = store.conversation_states(conn, conv_ids)
        members = store.active_members(conn, conv_ids)
        att_ids = {r.attachment_id for r in batch if r.attachment_id}
        attachments = store.attachments_by_ids(conn, att_ids) if att_ids else {}
        used = store.attachments_in_use(conn, att_ids) if att_ids else set()
        gates = (
            self.send_gate(
                conn,
                [
                    SendCheck(r.sender_id, r.conversation_id, r.attachment_id is not None,
                              None if r.encrypted_json is not None else r.text)
                    for r in batch
                ],
                {cid: s.kind for cid, s in states.items()},
                members,
            )
            if self.send_gate is not None
            else [NO_ONE] * len(batch)
        )
        hidden_rows: list[tuple[int, int]] = []
        held_ids: list[int] = []

        epochs = {
            cid: EpochState(s.current_epoch, s.epoch_messages, s.epoch_started_ms)
            for cid, s in states.items()
        }
        batch_idems: dict[str, Sent] = {}
        rows: list[tuple[Any, ...]] = []
        results: list[Sent | Problem] = []
        for req, gate in zip(batch, gates, strict=True):
            refusal = refusals.get(req.session) if req.session else None
            if refusal is not None:
                # A suspension or ban says so (403, with its end); an ended session is a 401.
                ended = unauthorized("the session ended before the message was stored; log in again")
                results.append(refusal if refusal.status == 403 else ended)
                continue
            # Membership first: a former member's retry gets the 404 any send there would.
            conv_members = members.get(req.conversation_id, {})
            if req.conversation_id not in states or req.sender_id not in conv_members:
                results.append(not_yours("conversation"))
                continue
            idem = f"{req.sender_id}:{req.idempotency_key}" if req.idempotency_key else None
            if idem is not None and (idem in earlier or idem in batch_idems):
                # A retry: the first send with this key answers it, if it went to the same place.
                stored = earlier.get(idem)
                first = Sent.of(self._render_row(conn, stored)) if stored is not None else batch_idems[idem]
                if first.message["conversation_id"] != req.conversation_id:
                    results.append(conflict("this idempotency key was already used for another conversation"))
                else:
                    results.append(first)
                continue
            if isinstance(gate, Problem):
                results.append(gate)
                continue
            attachment = None
            if req.attachment_id:
                att = attachments.get(req.attachment_id)
                if (
                    att is None
                    or att.conversation_id != req.conversation_id
                    or att.uploader_id != req.sender_id
                ):
                    results.append(not_found("attachment not found among your uploads to this conversation"))
                    continue
                if req.attachment_id in used or att.deleted_ms is not None:
                    results.append(conflict("the attachment was already sent or deleted"))
                    continue
                used.add(req.attachment_id)
                attachment = self._attachment_meta(conn, att)
            epoch = epochs[req.conversation_id]
            message_id = self._ids.next()
            timer = states[req.conversation_id].disappear_after_s
            expires = None if timer is None else now + timer * 1000
            if states[req.conversation_id].encryption == "e2ee":
                if req.encrypted_json is None:
                    results.append(invalid("this conversation is end-to-end encrypted: send encrypted content"))
                    continue
                franking = self._frank(req, message_id, now)
                franking_json = None if franking is None else orjson.dumps(franking).decode()
                # Stored as sent: the service has no key to seal or open it with.
                rows.append(
                    (message_id, req.conversation_id, req.sender_id, 0, idem, "e2ee", req.encrypted_json,
                     req.attachment_id, now, req.device_id, franking_json, expires)
                )
                message = render_encrypted(
                    message_id, req.conversation_id, req.sender, now, req.encrypted,
                    self._settings.server_name, attachment, franking, req.device_id, expires,
                )
            elif req.encrypted_json is not None:
                results.append(invalid("this conversation is not end-to-end encrypted: send text"))
                continue
            else:
                key = self._current_key(conn, req.conversation_id, epoch, conv_members, now)
                kind = "attachment" if attachment else "text"
                body = key.seal_message(message_id, req.sender_id, req.text.encode())
                # In store.messages.NEW_MESSAGE_COLUMNS order.
                rows.append(
                    (message_id, req.conversation_id, req.sender_id, key.epoch, idem, kind, body,
                     req.attachment_id, now, req.device_id, None, expires)
                )
                message = {
                    "id": message_id,
                    "conversation_id": req.conversation_id,
                    "sender": req.sender,
                    "kind": kind,
                    "text": req.text,
                    "attachment": attachment,
                    "sent_at": sent_at,
                    "deleted": False,
                    "expires_at": None if expires is None else iso(expires),
                }
                epoch.count += 1
            # Held by the safety screen (`core.screening`): shown to its sender only, and not
            # the conversation's latest message for anyone else, until a moderator releases it.
            held = req.screening is not None and req.screening.action == "hold"
            if held:
                message["status"] = PENDING_REVIEW
                held_ids.append(message_id)
            else:
                epoch.last_message_id = message_id
            epoch.changed = True
            req.stored_id = message_id
            sent = Sent.of(message)
            if idem is not None:
                batch_idems[idem] = sent
            results.append(sent)
            hidden_rows += [(uid, message_id) for uid in gate]
            sink.add(
                PendingEvent(
                    user_ids=[req.sender_id] if held else [uid for uid in conv_members if uid not in gate],
                    type="message.new",
                    conversation_id=req.conversation_id,
                    message_id=message_id,
                    data={},
                    message_json=sent.json,
                    origin=req.origin,
                )
            )
        if rows:
            store.insert_messages(conn, rows)
            contact_store.hide_messages(conn, hidden_rows)
            store.update_conversations_after_send(conn, [e.row(cid) for cid, e in epochs.items() if e.changed])
            if held_ids:
                store.mark_held(conn, held_ids)
        return results

    def _frank(self, req: SendRequest, message_id: int, now: int) -> dict[str, Any] | None:
        """The service's tag on a franked send: its commitment bound to sender, device,
        conversation, message id and time, under the current franking key."""
        if req.franking_commitment is None or req.device_id is None:
            return None
        server = self._settings.server_name
        key_id, tag = self._franking.tag(
            req.franking_commitment, user_id(req.sender, server), req.device_id, room_id(req.conversation_id, server),
            message_id, now,
        )  # fmt: skip
        return franking_record(key_id, req.franking_commitment, tag)

    def _current_key(
        self,
        conn: Connection,
        conversation_id: int,
        epoch: EpochState,
        member_regions: dict[int, str],
        now: int,
    ) -> ConversationKey:
        """The DEK for a new item, starting a new epoch when the current one is spent."""
        spent = (
            epoch.epoch == 0
            or epoch.count >= self._settings.epoch_max_messages
            or now - epoch.started_ms >= self._settings.epoch_max_seconds * 1000
        )
        if not spent:
            try:
                return self._keys.key_for(conn, conversation_id, epoch.epoch)
            except Problem as problem:
                if problem.status != 410:
                    raise
                # The current epoch's key was shredded: new messages get a fresh epoch.
        epoch.epoch, epoch.count, epoch.started_ms, epoch.changed = epoch.epoch + 1, 0, now, True
        return self._keys.new_epoch(conn, conversation_id, epoch.epoch, member_regions.values())

    # -- reading ---------------------------------------------------------------------------

    def _render_row(self, conn: Connection, row: AnyRow) -> dict[str, Any]:
        if row.kind == "e2ee":
            return render_encrypted_row(row, self._settings.server_name, self._row_attachment(conn, row))
        if row.deleted_ms is not None or row.body is None:
            return render_message(row)
        try:
            key = self._keys.key_for(conn, row.conversation_id, row.epoch)
        except Problem as problem:
            if problem.status == 410:  # its key was shredded: the content is gone for good
                return render_message(row)
            raise
        try:
            text = key.open_message(row.id, row.sender_id, row.body).decode()
        except SealError:
            # Tampered or misplaced ciphertext: never shown, and one bad row must not take down
            # the pages around it. Ids only in the log, never content.
            log.error("message %d in conversation %d failed to authenticate", row.id, row.conversation_id)
            return {**render_message(row), "unreadable": True}
        return render_message(row, text, self._row_attachment(conn, row))

    def _row_attachment(self, conn: Connection, row: AnyRow) -> dict[str, Any] | None:
        found = store.attachments_by_ids(conn, [row.attachment_id]) if row.attachment_id else {}
        return self._attachment_meta(conn, found[row.attachment_id]) if row.attachment_id in found else None

    def _render_rows(self, conn: Connection, rows: list[AnyRow]) -> list[dict[str, Any]]:
        return [self._render_row(conn, row) for row in rows]

    async def render_for_member(self, conn: AsyncConnection, rows: list[AnyRow]) -> list[dict[str, Any]]:
        """Open rows for a current member of their conversation (the caller checked membership)."""
        return await conn.run_sync(self._render_rows, rows)

    async def history(
        self,
        conn: AsyncConnection,
        conversation_id: int,
        before: int | None,
        after: int | None,
        limit: int,
        viewer_id: int,
        since_ms: int | None = None,
    ) -> list[dict[str, Any]]:
        rows = await store.page(conn, conversation_id, before, after, limit, viewer_id, since_ms)
        return await self.render_for_member(conn, rows)

    # -- deleting --------------------------------------------------------------------------

    async def delete_for_everyone(self, user_id: int, message_id: int) -> dict[str, Any]:
        async def run(conn: AsyncConnection, sink: EventSink) -> dict[str, Any]:
            found = await store.by_ids(conn, [message_id])
            row = found.get(message_id)
            members = await conn.run_sync(store.active_members, [row.conversation_id]) if row else {}
            if row is None or user_id not in members.get(row.conversation_id, {}):
                raise not_found("message not found among your conversations")
            if row.sender_id != user_id:
                raise forbidden("only the sender can delete a message for everyone")
            if row.deleted_ms is not None:
                return render_message(row)
            await self._erasure.erase(conn, sink, [row], now_ms())
            await self._erasure.announce(conn, sink, [row], members)
            return render_message(row)

        return await self._writer.run(run)

    # -- attachments -----------------------------------------------------------------------

    def _attachment_meta(self, conn: Connection, att: AnyRow) -> dict[str, Any]:
        if att.epoch == E2EE_EPOCH:
            return e2ee_attachment(att.id, att.size)
        key = self._keys.key_for(conn, att.conversation_id, att.epoch)
        try:
            meta = orjson.loads(key.open_attachment(att.id, att.uploader_id, b"meta", att.sealed_meta))
        except SealError:
            log.error("attachment %s metadata failed to authenticate", att.id)
            meta = {"filename": "(unreadable)", "content_type": "application/octet-stream"}
        return {
            "id": att.id,
            "filename": meta["filename"],
            "content_type": meta["content_type"],
            "size": att.size,
        }

    async def upload(
        self, user_id: int, conversation_id: int, filename: str | None, content_type: str, data: bytes
    ) -> dict[str, Any]:
        if len(data) > self._settings.max_attachment_bytes:
            raise Problem(
                413,
                "too-large",
                "Too large",
                f"attachments are limited to {self._settings.max_attachment_bytes} bytes",
            )
        if not data:
            raise invalid("the attachment is empty")
        attachment_id = "a_" + secrets.token_urlsafe(18)
        # Screened before anything is stored (a `standard` upload needs its filename anyway).
        screening = ALLOWED
        if filename is not None:
            screening = await self.screening.screen_upload(user_id, conversation_id, content_type, data)

        async def run(conn: AsyncConnection, _sink: EventSink) -> dict[str, Any]:
            states = await conn.run_sync(store.conversation_states, [conversation_id])
            members = await conn.run_sync(store.active_members, [conversation_id])
            if conversation_id not in states or user_id not in members.get(conversation_id, {}):
                raise not_yours("conversation")
            if self.check_send is not None:
                await self.check_send(conn, user_id, conversation_id, True)
            state = states[conversation_id]
            now = now_ms()
            if state.encryption == "e2ee":
                return await self._store_e2ee_attachment(conn, attachment_id, conversation_id, user_id, data, now)
            if filename is None:
                raise invalid("filename is required (as a query parameter)")
            epoch = EpochState(state.current_epoch, state.epoch_messages, state.epoch_started_ms)
            key = await conn.run_sync(self._current_key, conversation_id, epoch, members[conversation_id], now)
            if epoch.changed:
                await store.start_epoch(conn, conversation_id, epoch.epoch, now)
            meta = orjson.dumps({"filename": filename, "content_type": content_type})
            self._blobs.write(attachment_id, key.seal_attachment(attachment_id, user_id, b"data", data))
            await store.insert_attachment(
                conn,
                {
                    "id": attachment_id,
                    "conversation_id": conversation_id,
                    "uploader_id": user_id,
                    "epoch": key.epoch,
                    "size": len(data),
                    "sealed_meta": key.seal_attachment(attachment_id, user_id, b"meta", meta),
                    "created_ms": now,
                },
            )
            await self.screening.record_upload(conn, screening, user_id, conversation_id, attachment_id, now)
            return {
                "id": attachment_id,
                "filename": filename,
                "content_type": content_type,
                "size": len(data),
            }

        return await self._writer.run(run)

    async def _store_e2ee_attachment(
        self, conn: AsyncConnection, attachment_id: str, conversation_id: int, user_id: int, data: bytes, now: int
    ) -> dict[str, Any]:
        """The client encrypted the file (Matrix's encrypted-attachment format): its bytes are
        kept as they came, and its name and type, which the client sent in the clear only to
        be ignored, are not kept at all (they belong inside the encrypted message)."""
        self._blobs.write(attachment_id, data)
        await store.insert_attachment(
            conn,
            {
                "id": attachment_id,
                "conversation_id": conversation_id,
                "uploader_id": user_id,
                "epoch": E2EE_EPOCH,
                "size": len(data),
                "sealed_meta": b"",
                "created_ms": now,
            },
        )
        return e2ee_attachment(attachment_id, len(data))

    async def download(self, user_id: int, attachment_id: str) -> tuple[dict[str, Any], bytes]:
        async with self._engine.connect() as conn:
            return await self._download(conn, user_id, attachment_id)

    async def _download(
        self, conn: AsyncConnection, user_id: int, attachment_id: str
    ) -> tuple[dict[str, Any], bytes]:
        att = (await conn.run_sync(store.attachments_by_ids, [attachment_id])).get(attachment_id)
        membership = await conversation_store.membership(conn, att.conversation_id, user_id) if att else None
        if att is None or membership is None or membership.left_ms is not None:
            raise not_found("attachment not found among your conversations")
        since = conversation_store.asked_since(membership)
        if since is not None:  # as history: nothing sent before a request was made
            sent_ms = await store.attachment_sent_ms(conn, attachment_id)
            if sent_ms is None or sent_ms < since:
                raise not_found("attachment not found among your conversations")
        if att.deleted_ms is not None:
            raise Problem(410, "content-destroyed", "Content destroyed", "this attachment was deleted")
        if att.epoch == E2EE_EPOCH:
            try:
                return e2ee_attachment(att.id, att.size), self._blobs.read(attachment_id)
            except FileNotFoundError as exc:
                log.error("attachment %s failed to open: %s", attachment_id, type(exc).__name__)
                raise Problem(500, "integrity", "Stored content is damaged", "this attachment cannot be opened") from exc
        key = await conn.run_sync(self._keys.key_for, att.conversation_id, att.epoch)
        try:
            data = key.open_attachment(
                attachment_id, att.uploader_id, b"data", self._blobs.read(attachment_id)
            )
        except (SealError, FileNotFoundError) as exc:
            log.error("attachment %s failed to open: %s", attachment_id, type(exc).__name__)
            raise Problem(
                500, "integrity", "Stored content is damaged", "this attachment cannot be opened"
            ) from exc
        return await conn.run_sync(self._attachment_meta, att), data
