"""Conversations: 1:1 and groups, membership, receipts, and the `readable_by` statement."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import iso, message_id_ms, now_ms
from keyhold.config import Settings
from keyhold.core.accounts import Member, require_live_session
from keyhold.core.contacts import Form, SendCheckGate, refuse_link_in_request_title
from keyhold.core.devices import BeforeKeysRemoved, no_key_log
from keyhold.core.disappearing import MAX_TIMER_S, MIN_TIMER_S
from keyhold.core.erasure import Erasure
from keyhold.core.errors import Problem, forbidden, invalid, not_found, not_yours
from keyhold.core.keys import ConversationKeys
from keyhold.core.messages import MessageService
from keyhold.core.writer import EventSink, PendingEvent, Writer
from keyhold.store import accounts as account_store
from keyhold.store import contacts as contact_store
from keyhold.store import conversations as store
from keyhold.store import devices as device_store
from keyhold.store import e2ee_keys as e2ee_store
from keyhold.store import keys as key_store
from keyhold.store import messages as message_store
from keyhold.store.cases import held_conversations

ENCRYPTIONS = ("standard", "e2ee")
RECEIPTS = {"delivered": "delivered_upto", "read": "read_upto"}
PREVIEW_CHARS = 80


def readable_by(encryption: str, regions: Sequence[str], devices: int = 0) -> str:
    """The plain-language statement of who can read a conversation. It must stay true:
    tests hold the code to it (members only; staff only through governance.access). `regions`
    are the current members' regions plus every region whose KEK still wraps a key of it
    (a member who left keeps their region's staff able to reach the content sent before).
    `devices`: for e2ee, how many devices of the current members have published keys."""
    if encryption == "e2ee":
        counted = "1 device" if devices == 1 else f"{devices} devices"
        return f"only the participants' devices ({counted}); Keyhold holds no key and cannot read it"
    ordered = sorted(set(regions))
    where = f"region {ordered[0]}" if len(ordered) == 1 else "regions " + ", ".join(ordered)
    return f"the participants; Keyhold staff only under an approved report or legal case in {where}"


def announce(sink: EventSink, conversation_id: int, user_ids: list[int], change: str, **data: Any) -> None:
    """A `conversation.updated` event (what changed, by whom) to these members."""
    sink.add(
        PendingEvent(
            user_ids=user_ids,
            type="conversation.updated",
            conversation_id=conversation_id,
            data={"change": change, **data},
        )
    )


# Whether a member may start a conversation with, or add, these accounts (and how many other
# names were no account): refuses, or answers who is reached only as a message request.
Reach = Callable[[AsyncConnection, Member, Sequence[Any], Form, int], Awaitable[set[int]]]
# Refuse a group whose members may not be together (joining, staying).
GroupCheck = Callable[[AsyncConnection, Sequence[int], Sequence[int]], Awaitable[None]]
# Refuse a rename the member may not make (`core.contacts.ContactGate.check_rename`).
RenameCheck = Callable[[AsyncConnection, int, int, str], Awaitable[None]]


async def reach_everyone(
    _conn: AsyncConnection, _member: Member, _targets: Sequence[Any], _form: Form, unknown: int
) -> set[int]:
    if unknown:
        raise not_found(f"{unknown} of the named members are not active users")
    return set()


async def any_group(_conn: AsyncConnection, _joining: Sequence[int], _staying: Sequence[int]) -> None:
    return None


async def any_send(_conn: AsyncConnection, _user_id: int, _conversation_id: int, _attachment: bool) -> None:
    return None


async def any_rename(_conn: AsyncConnection, _user_id: int, _conversation_id: int, _title: str) -> None:
    return None


class ConversationService:
    def __init__(
        self,
        engine: AsyncEngine,
        writer: Writer,
        messages: MessageService,
        keys: ConversationKeys,
        erasure: Erasure,
        settings: Settings,
    ) -> None:
        self._engine = engine
        self._writer = writer
        self._messages = messages
        self._keys = keys
        self._erasure = erasure
        self._settings = settings
        self.before_keys_removed: BeforeKeysRemoved = no_key_log
        # Who may reach whom (`core.contacts`, filled at wiring time).
        self.reach: Reach = reach_everyone
        self.check_group: GroupCheck = any_group
        self.check_send: SendCheckGate = any_send
        self.check_rename: RenameCheck = any_rename

    # -- views -----------------------------------------------------------------------------

    async def _views(
        self, conn: AsyncConnection, member: Member, rows: Sequence[Any], with_preview: bool = True
    ) -> list[dict[str, Any]]:
        ids = [r.id for r in rows]
        everyone = await store.member_rows(conn, ids)
        current: dict[int, list[Any]] = {}
        for m in everyone:
            if m.left_ms is None:
                current.setdefault(m.conversation_id, []).append(m)
        wrapped_for = await store.key_regions(conn, ids)
        encrypted = [r.id for r in rows if r.encryption == "e2ee"]
        devices = await e2ee_store.device_counts(conn, {m.id for r in encrypted for m in current.get(r, [])})
        last_of = {r.id: r.last_message_id for r in rows if r.last_message_id}
        hidden = await contact_store.hidden_for(conn, member.id, list(last_of.values())) if with_preview else set()
        asked = {r.id: since for r in rows if (since := store.asked_since(r)) is not None} if with_preview else {}
        for cid, mid in last_of.items():
            # Sent by someone they block, or before a request they have not accepted: the
            # newest they may see instead.
            if mid in hidden or (cid in asked and message_id_ms(mid) < asked[cid]):
                last_of[cid] = await contact_store.last_visible(conn, cid, member.id, asked.get(cid))
        last_ids = [mid for mid in last_of.values() if mid]
        last = await message_store.by_ids(conn, last_ids) if with_preview and last_ids else {}
        views = []
        for r in rows:
            people = current.get(r.id, [])
            view: dict[str, Any] = {
                "id": r.id,
                "kind": r.kind,
                "encryption": r.encryption,
                "readable_by": readable_by(
                    r.encryption,
                    [p.region for p in people] + sorted(wrapped_for.get(r.id, ())),
                    sum(devices.get(p.id, 0) for p in people),
                ),
                "title": r.title,
                "members": [p.username for p in people],
                "owner": next((p.username for p in people if p.role == "owner"), None),
                "admins": [p.username for p in people if p.role == "admin"],
                "created_at": iso(r.created_ms),
                "disappear_after_seconds": r.disappear_after_s,
                "unread": int(getattr(r, "unread", 0) or 0),
                "last_message": None,
            }
            shown = last_of.get(r.id)
            row = last.get(shown) if shown else None
            if row is not None:
                rendered = (await self._messages.render_for_member(conn, [row]))[0]
                text = rendered["text"]
                view["last_message"] = {
                    "id": row.id,
                    "sender": row.sender,
                    "sent_at": rendered["sent_at"],
                    "preview": text[:PREVIEW_CHARS] if text else None,
                    "deleted": rendered["deleted"],
                }
            views.append(view)
        return views

    async def require_member(self, conn: AsyncConnection, member: Member, conversation_id: int) -> Any:
        row = await store.membership(conn, conversation_id, member.id)
        if row is None or row.left_ms is not None or row.declined_ms is not None:
            raise not_yours("conversation")
        return row

    async def get(self, member: Member, conversation_id: int) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            row = await self.require_member(conn, member, conversation_id)
            view = (await self._views(conn, member, [row]))[0]
            view["unread"] = await store.unread_count(
                conn, conversation_id, member.id, row.read_upto, store.asked_since(row)
            )
        return view

    async def history(
        self, member: Member, conversation_id: int, before: int | None, after: int | None, limit: int
    ) -> dict[str, Any]:
        """A page of a conversation's messages (members only), with the cursors either way."""
        async with self._engine.connect() as conn:
            row = await self.require_member(conn, member, conversation_id)
            # Until a request is accepted, what was sent before it is not its member's to see
            # (a group can be filled with links and files before a stranger is added).
            since = store.asked_since(row)
            items = await self._messages.history(conn, conversation_id, before, after, limit, member.id, since)
        return {
            "items": items,
            "next_before": items[0]["id"] if items and len(items) == limit else None,
            "next_after": items[-1]["id"] if items else after,
        }

    async def list_mine(
        self, member: Member, before: int | None, limit: int, requests: bool = False
    ) -> dict[str, Any]:
        """A page of my conversations; with `requests`, of my message requests instead."""
        async with self._engine.connect() as conn:
            rows = await store.list_for_user(conn, member.id, before, limit + 1, requests)
            more = len(rows) > limit
            rows = rows[:limit]
            items = await self._views(conn, member, rows)
        next_cursor = rows[-1].activity if more and rows else None
        return {"items": items, "next_before": next_cursor}

    # -- changes ---------------------------------------------------------------------------

    async def found_users(self, conn: AsyncConnection, usernames: Sequence[str]) -> tuple[list[Any], int]:
        """The active accounts of these names, in order, and how many names are none."""
        found = await account_store.by_usernames(conn, usernames)
        active = [u for u in usernames if u in found and found[u].deleted_ms is None and not found[u].disabled]
        return [found[u] for u in active], len(usernames) - len(active)

    async def reachable_users(
        self, conn: AsyncConnection, member: Member, usernames: Sequence[str], form: Form
    ) -> tuple[list[Any], set[int]]:
        """The accounts of these names if the member may reach them all, and which only as a
        request; 404 (how many, not which: a detail never repeats what was submitted) for names
        that are no account and members hidden from them alike, counted together."""
        people, unknown = await self.found_users(conn, usernames)
        return people, await self.reach(conn, member, people, form, unknown)

    async def start(
        self, member: Member, usernames: Sequence[str], encryption: str, title: str, kind: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Start (or, for an existing 1:1, find) a conversation. Returns (view, created)."""
        if encryption not in ENCRYPTIONS:
            raise invalid("encryption must be 'standard' or 'e2ee'")
        others = sorted({u for u in usernames if u != member.username})
        if not others:
            raise invalid("name at least one other member")
        kind = kind or ("direct" if len(others) == 1 and not title else "group")
        if kind == "direct" and len(others) != 1:
            raise invalid("a direct conversation has exactly one other member")
        if len(others) + 1 > self._settings.max_group_members:
            raise invalid(f"a group has at most {self._settings.max_group_members} members")

        async def run(conn: AsyncConnection, sink: EventSink) -> tuple[int, bool]:
            people, requests = await self.reachable_users(conn, member, others, "start")
            ids = sorted([member.id, *(p.id for p in people)])
            if kind == "group":
                await self.check_group(conn, [p.id for p in people], [member.id])
            refuse_link_in_request_title(title, requests)
            # At most one direct conversation per pair and model.
            direct_key = None if kind != "direct" else f"{ids[0]}:{ids[1]}" + (":e2ee" if encryption == "e2ee" else "")
            now = now_ms()
            conversation_id = await store.insert_conversation(
                conn,
                {
                    "kind": kind,
                    "encryption": encryption,
                    "title": title,
                    "direct_key": direct_key,
                    "created_by": member.id,
                    "created_ms": now,
                },
            )
            if conversation_id is None:
                assert direct_key is not None
                existing = await store.by_direct_key(conn, direct_key)
                assert existing is not None
                # Someone who deleted the other's request, now writing to them: theirs again.
                await contact_store.reopen_declined(conn, existing, member.id)
                return existing, False
            await store.insert_members(conn, conversation_id, ids, now, owner=member.id if kind == "group" else None)
            await contact_store.mark_requests(conn, conversation_id, requests, member.id)
            members = sorted([member.username, *(p.username for p in people)])
            announce(sink, conversation_id, ids, "created", by=member.username, members=members)
            return conversation_id, True

        conversation_id, created = await self._writer.run(run)
        return await self.get(member, conversation_id), created

    async def set_timer(self, member: Member, conversation_id: int, seconds: int | None) -> dict[str, Any]:
        """Disappearing messages: every message sent from now on is deleted `seconds` after it
        was sent (None: off; messages sent before keep the expiry they had). Any member may
        set it; everyone is told (`conversation.updated`, change `timer`)."""
        if seconds is not None and not MIN_TIMER_S <= seconds <= MAX_TIMER_S:
            raise invalid(f"the timer is {MIN_TIMER_S} seconds to {MAX_TIMER_S // 86400} days, or null (off)")

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            await require_live_session(conn, member)
            await self.require_member(conn, member, conversation_id)
            # A timer change reaches the others as a message would: refused where a send is.
            await self.check_send(conn, member.id, conversation_id, False)
            await store.set_timer(conn, conversation_id, seconds)
            everyone = [m.id for m in await store.member_rows(conn, [conversation_id]) if m.left_ms is None]
            announce(sink, conversation_id, everyone, "timer", by=member.username, seconds=seconds)

        await self._writer.run(run)
        return await self.get(member, conversation_id)

    async def receipt(self, member: Member, conversation_id: int, kind: str, message_id: int) -> bool:
        column = RECEIPTS.get(kind)
        if column is None:
            raise invalid("receipt type must be 'delivered' or 'read'")

        async def run(conn: AsyncConnection, sink: EventSink) -> bool:
            await require_live_session(conn, member, "read")  # part of reading: a suspension allows it
            await self.require_member(conn, member, conversation_id)
            if not await store.message_in_conversation(conn, conversation_id, message_id):
                raise not_found("that message is not in this conversation")
            changed = await store.advance_receipt(conn, conversation_id, member.id, column, message_id)
            if kind == "read":  # reading implies delivery
                await store.advance_receipt(conn, conversation_id, member.id, "delivered_upto", message_id)
            if changed:
                self._announce_receipt(
                    sink,
                    conversation_id,
                    await self._receipt_audience(conn, member, conversation_id),
                    member.username,
                    kind,
                    message_id,
                )
            return changed

        return await self._writer.run(run)

    async def _receipt_audience(self, conn: AsyncConnection, member: Member, conversation_id: int) -> list[int]:
        """Who sees a member's receipts: the current members, except whom the member blocks;
        only the member while they have not accepted a request (its sender sees no receipts)."""
        if await contact_store.request_from(conn, conversation_id, member.id) is not None:
            return [member.id]
        everyone = [m.id for m in await store.member_rows(conn, [conversation_id]) if m.left_ms is None]
        blocked = await contact_store.blocks_between(conn, member.id, everyone)
        return [uid for uid in everyone if (member.id, uid) not in blocked]

    def _announce_receipt(
        self,
        sink: EventSink,
        conversation_id: int,
        user_ids: list[int],
        username: str,
        kind: str,
        message_id: int,
    ) -> None:
        sink.add(
            PendingEvent(
                user_ids=user_ids,
                type="receipt",
                conversation_id=conversation_id,
                message_id=message_id,
                data={"user": username, "receipt": kind, "message_id": message_id},
            )
        )

    async def shred_keys(self, conversation_id: int, epoch: int | None = None) -> int:
        """Shred a conversation's keys (all epochs, or one): its content becomes unrecoverable.
        Refused while a preservation hold covers any of its members."""

        async def run(conn: AsyncConnection, _sink: EventSink) -> int:
            everyone = await store.member_rows(conn, [conversation_id])
            if not everyone:
                raise not_found(f"conversation {conversation_id} not found")
            if await held_conversations(conn, [conversation_id], now_ms()):
                raise Problem(
                    409, "preserved", "Preserved", "a legal preservation hold covers this conversation"
                )
            return await key_store.shred(conn, conversation_id, now_ms(), epoch)

        shredded = await self._writer.run(run)
        self._keys.forget_conversation(conversation_id)
        return shredded

    async def delete_account(self, member: Member) -> None:
        """Leave every conversation, destroy everything the member sent, revoke every session."""

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            now = now_ms()
            left = await store.leave_all(conn, member.id, now)
            # A preservation hold on this member or on anyone they talk to keeps the content of
            # those conversations (hidden, sealed) until the hold ends: `Erasure` decides.
            await self._erasure.erase(conn, sink, await message_store.live_by_sender(conn, member.id), now)
            await account_store.revoke_all_sessions(conn, member.id)
            await self.before_keys_removed(conn, sink, member.id, None)
            await device_store.remove_all(conn, member.id)
            await account_store.remove_all_follows(conn, member.id)
            # The username stays reserved (no one can take over a deleted member's name);
            # what could identify or authenticate the person is cleared.
            await account_store.restrict_user(
                conn,
                member.id,
                deleted_ms=now,
                disabled=True,
                display_name="",
                password_hash="!",  # noqa: S106 - matches no password: the account cannot sign in
                birthdate="",
            )
            for conversation_id in left:
                await store.force_new_epoch(conn, conversation_id)
            everyone = await store.member_rows(conn, left)
            for conversation_id in left:
                remaining = [
                    m.id for m in everyone if m.conversation_id == conversation_id and m.left_ms is None
                ]
                announce(sink, conversation_id, remaining, "member_left", member=member.username)

        if member.id <= 0:
            raise forbidden("unknown member")
        await self._writer.run(run)
