"""Groups and their roles: who may add, remove, rename, promote, and what leaving does.

The creator owns a group. The owner and admins add members, rename the group and promote
members to admin; the owner also demotes admins. Admins remove members; only the owner
removes an admin; nobody removes the owner. Anyone leaves; an owner who leaves hands the group
to the longest-standing admin, else to the longest-standing member.

Every change is a `conversation.updated` event to the members (a removed member is told too).
A member added, removed or leaving starts a new key epoch: a removed member's devices can open
nothing sent after, and an added one nothing sent before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.clock import now_ms
from keyhold.config import Settings
from keyhold.core.accounts import Member
from keyhold.core.contacts import refuse_link_in_request_title
from keyhold.core.conversations import ConversationService, announce
from keyhold.core.errors import forbidden, invalid, not_found
from keyhold.core.writer import EventSink, Writer
from keyhold.store import contacts as contact_store
from keyhold.store import conversations as store
from keyhold.store.rows import AnyRow

ROLES = ("owner", "admin", "member")
MANAGERS = ("owner", "admin")
MAX_TITLE = 100


class GroupService:
    def __init__(self, writer: Writer, conversations: ConversationService, settings: Settings) -> None:
        self._writer = writer
        self._conversations = conversations
        self._settings = settings

    async def _group(
        self, conn: AsyncConnection, member: Member, conversation_id: int
    ) -> tuple[AnyRow, list[AnyRow]]:
        """The group (as the member's row) and its current members; 404 if not the member's."""
        row = await self._conversations.require_member(conn, member, conversation_id)
        if row.kind != "group":
            raise invalid("only a group has members to manage; a direct conversation has two, for good")
        everyone = [m for m in await store.member_rows(conn, [conversation_id]) if m.left_ms is None]
        return row, everyone

    @staticmethod
    def _require(row: AnyRow, roles: tuple[str, ...], work: str) -> None:
        if row.role not in roles:
            raise forbidden(f"{work} is for the group's {' and '.join(roles)}s")

    async def add(self, member: Member, conversation_id: int, usernames: Sequence[str]) -> dict[str, Any]:
        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            row, everyone = await self._group(conn, member, conversation_id)
            self._require(row, MANAGERS, "adding members")
            people, unknown = await self._conversations.found_users(conn, sorted(set(usernames)))
            current = {m.id for m in everyone}
            former = {m.id for m in await store.member_rows(conn, [conversation_id]) if m.left_ms is not None}
            new = [p for p in people if p.id not in current]
            # Who may be added, before anything that would tell a hidden name from no account.
            requests = await self._conversations.reach(conn, member, new, "add", unknown)
            await self._conversations.check_group(conn, [p.id for p in new], sorted(current))
            refuse_link_in_request_title(str(row.title or ""), requests)
            if len(current) + len(new) > self._settings.max_group_members:
                raise invalid(f"a group has at most {self._settings.max_group_members} members")
            if not new:
                return
            now = now_ms()
            await store.rejoin(conn, conversation_id, [p.id for p in new if p.id in former], now)
            await store.insert_members(conn, conversation_id, [p.id for p in new if p.id not in former], now)
            await contact_store.mark_requests(conn, conversation_id, requests, member.id)
            await store.force_new_epoch(conn, conversation_id)
            told = sorted(current | {p.id for p in new})
            announce(
                sink,
                conversation_id,
                told,
                "members_added",
                by=member.username,
                members=[p.username for p in new],
            )

        await self._writer.run(run)
        return await self._conversations.get(member, conversation_id)

    async def remove(self, member: Member, conversation_id: int, username: str) -> dict[str, Any]:
        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            row, everyone = await self._group(conn, member, conversation_id)
            self._require(row, MANAGERS, "removing members")
            target = next((m for m in everyone if m.username == username), None)
            if target is None:
                raise not_found("no such member in this group")
            if target.id == member.id:
                raise invalid("to leave a group, leave it (DELETE …/members/me)")
            if target.role == "owner" or (target.role == "admin" and row.role != "owner"):
                raise forbidden(
                    f"the group's {target.role} can be removed by the owner only"
                    if target.role == "admin"
                    else "nobody removes a group's owner"
                )
            await store.set_left(conn, conversation_id, target.id, now_ms())
            await store.force_new_epoch(conn, conversation_id)
            told = [m.id for m in everyone]  # the removed member is told too
            announce(
                sink, conversation_id, told, "member_removed", by=member.username, member=target.username
            )

        await self._writer.run(run)
        return await self._conversations.get(member, conversation_id)

    async def rename(self, member: Member, conversation_id: int, title: str) -> dict[str, Any]:
        title = title.strip()
        if not 1 <= len(title) <= MAX_TITLE:
            raise invalid(f"a group's title is 1 to {MAX_TITLE} characters")

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            row, everyone = await self._group(conn, member, conversation_id)
            self._require(row, MANAGERS, "renaming the group")
            await self._conversations.check_rename(conn, member.id, conversation_id, title)
            await store.set_title(conn, conversation_id, title)
            announce(
                sink, conversation_id, [m.id for m in everyone], "renamed", by=member.username, title=title
            )

        await self._writer.run(run)
        return await self._conversations.get(member, conversation_id)

    async def set_role(
        self, member: Member, conversation_id: int, username: str, role: str
    ) -> dict[str, Any]:
        """Promote a member to admin (owner and admins), or an admin back to member (owner)."""
        if role not in ("admin", "member"):
            raise invalid("role must be admin or member (the owner passes on by leaving)")

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            row, everyone = await self._group(conn, member, conversation_id)
            self._require(row, MANAGERS if role == "admin" else ("owner",), f"making someone {role}")
            target = next((m for m in everyone if m.username == username), None)
            if target is None:
                raise not_found("no such member in this group")
            if target.role == "owner":
                raise invalid("the owner's role changes only when they leave")
            if target.role == role:
                return
            await store.set_role(conn, conversation_id, target.id, role)
            announce(
                sink,
                conversation_id,
                [m.id for m in everyone],
                "role_changed",
                by=member.username,
                member=target.username,
                role=role,
            )

        await self._writer.run(run)
        return await self._conversations.get(member, conversation_id)

    async def leave(self, member: Member, conversation_id: int) -> None:
        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            row, everyone = await self._group(conn, member, conversation_id)
            await store.set_left(conn, conversation_id, member.id, now_ms())
            await store.force_new_epoch(conn, conversation_id)
            announce(sink, conversation_id, [m.id for m in everyone], "member_left", member=member.username)
            remaining = [m for m in everyone if m.id != member.id]
            if row.role == "owner" and remaining:
                heir = min(remaining, key=lambda m: (m.role != "admin", m.joined_ms, m.id))
                await store.set_role(conn, conversation_id, heir.id, "owner")
                announce(
                    sink,
                    conversation_id,
                    [m.id for m in remaining],
                    "role_changed",
                    by=member.username,
                    member=heir.username,
                    role="owner",
                )

        await self._writer.run(run)
