"""What a member does about who may message them: block and unblock, choose a DM audience, accept
or delete message requests. The rules these feed are `core.contacts` (facts and gates) and
`safety.contacts` (decisions); docs/safety.md says what each does.

Deleting a request differs by kind. A direct request is *declined*: its recipient stops seeing
it (and anything sent there since), while its sender sees no change at all: the recipient is
still listed, the request's limits still apply. A deleted request must look like one
unanswered. A group add is simply left.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import iso, now_ms
from keyhold.core.accounts import AccountService, Member, require_live_session
from keyhold.core.contacts import AUDIENCES, ContactGate
from keyhold.core.errors import invalid, not_found
from keyhold.core.writer import EventSink, PendingEvent, Writer
from keyhold.store import contacts as store
from keyhold.store import conversations as conversation_store
from keyhold.store import guardians as guardian_store

UNKNOWN_USER = "no such user"


class ContactService:
    def __init__(self, engine: AsyncEngine, writer: Writer, accounts: AccountService, gate: ContactGate) -> None:
        self._engine = engine
        self._writer = writer
        self._accounts = accounts
        self._gate = gate

    # -- blocks ----------------------------------------------------------------------------

    async def block(self, member: Member, username: str) -> None:
        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            await require_live_session(conn, member, "read")  # protecting oneself is no sending
            target = await self._blockable(conn, member, username)
            if target.id == member.id:
                raise invalid("you cannot block yourself")
            await store.add_block(conn, member.id, target.id, now_ms())
            # Unblocking restores none of this: follows either way, requests either way, and a
            # guardian link between the two.
            await store.remove_follows_between(conn, member.id, target.id)
            await guardian_store.remove(conn, member.id, target.id)
            await guardian_store.remove(conn, target.id, member.id)
            for row in await store.requests_between(conn, member.id, target.id):
                await self._drop_request(conn, sink, row.user_id, row.conversation_id, row.kind)

        await self._writer.run(run)

    async def _blockable(self, conn: AsyncConnection, member: Member, username: str) -> Any:
        """Whom a member may block: anyone they may find, anyone they share a conversation with
        (a minor who writes in a shared group), and anyone who blocks them (to block back). To
        anyone else — a hidden minor they share nothing with — the name is no account."""
        target = await self._accounts.user(conn, username)
        if target.id == member.id or await self._gate.findable(conn, member.id, target):
            return target
        if await conversation_store.co_members(conn, member.id, [target.id]):
            return target
        if (target.id, member.id) in await store.blocks_between(conn, member.id, [target.id]):
            return target
        raise not_found(UNKNOWN_USER)

    async def unblock(self, member: Member, username: str) -> None:
        async def run(conn: AsyncConnection, _sink: EventSink) -> None:
            await require_live_session(conn, member, "read")
            # One answer for a name that is no account and one not blocked: no probing for names.
            target = await self._accounts.user(conn, username)
            if not await store.remove_block(conn, member.id, target.id):
                raise not_found(UNKNOWN_USER)

        await self._writer.run(run)

    async def blocked(self, member: Member) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            rows = await store.blocked_by(conn, member.id)
        return {"items": [{"username": r.username, "since": iso(r.created_ms)} for r in rows]}

    # -- DM audience -----------------------------------------------------------------------

    async def settings(self, member: Member) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            party = (await self._gate.parties(conn, [member.id]))[member.id]
            own = (await store.audience_rows(conn, [member.id]))[member.id].dm_audience
        return {"dm_audience": party.audience, "chosen": own, "band": party.band}

    async def set_audience(self, member: Member, audience: str) -> dict[str, Any]:
        if audience not in AUDIENCES:
            raise invalid(f"dm_audience must be one of {', '.join(AUDIENCES)}")

        async def run(conn: AsyncConnection, _sink: EventSink) -> None:
            # Narrowing who may reach you is protecting yourself: a suspended member may; widening waits.
            await require_live_session(conn, member, "read" if audience == "no_one" else "act")
            party = (await self._gate.parties(conn, [member.id]))[member.id]
            problem = self._gate.rules.audience_choice(party.band, audience)
            if problem is not None:
                raise problem
            await store.set_audience(conn, member.id, audience)

        await self._writer.run(run)
        return await self.settings(member)

    # -- message requests ------------------------------------------------------------------

    async def accept(self, member: Member, conversation_id: int) -> None:
        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            await require_live_session(conn, member)
            if not await store.accept_request(conn, conversation_id, member.id):
                raise not_found("no such request")
            everyone = await conversation_store.member_rows(conn, [conversation_id])
            sink.add(
                PendingEvent(
                    user_ids=[m.id for m in everyone if m.left_ms is None],
                    type="conversation.updated",
                    conversation_id=conversation_id,
                    data={"change": "request_accepted", "member": member.username},
                )
            )

        await self._writer.run(run)

    async def decline(self, member: Member, conversation_id: int, block: bool) -> None:
        """Delete a request (its sender is not told) and, with `block`, block its sender."""

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            await require_live_session(conn, member, "read")
            row = await conversation_store.membership(conn, conversation_id, member.id)
            if row is None or row.left_ms is not None or row.declined_ms is not None or row.request_from is None:
                raise not_found("no such request")
            await self._drop_request(conn, sink, member.id, conversation_id, row.kind)
            if block:
                await store.add_block(conn, member.id, row.request_from, now_ms())
                await store.remove_follows_between(conn, member.id, row.request_from)

        await self._writer.run(run)

    async def _drop_request(
        self, conn: AsyncConnection, sink: EventSink, user_id: int, conversation_id: int, kind: str
    ) -> None:
        if kind == "direct":
            await store.decline_request(conn, conversation_id, user_id, now_ms())
        else:
            await conversation_store.set_left(conn, conversation_id, user_id, now_ms())
            await conversation_store.force_new_epoch(conn, conversation_id)
        sink.add(
            PendingEvent(
                user_ids=[user_id],
                type="conversation.updated",
                conversation_id=conversation_id,
                data={"change": "request_deleted"},
            )
        )
