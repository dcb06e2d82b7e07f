"""Guardian links: an adult and a member under 18 who both accepted. The guardian sees the
teen's DM settings and with whom the teen's conversations are (names, kind, model, when) —
never content, titles, previews or attachments — and may set the teen's DM setting to `no_one`
("off") or `friends`; the stricter of the guardian's and the teen's own setting applies. Either
side ends the link at any time; the teen is always told what a guardian can see.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import iso, now_ms
from keyhold.core.accounts import AccountService, Member, require_live_session
from keyhold.core.contacts import ContactGate
from keyhold.core.errors import conflict, invalid, not_found
from keyhold.core.writer import EventSink, PendingEvent, Writer
from keyhold.safety.policy import Band
from keyhold.store import conversations as conversation_store
from keyhold.store import guardians as store
from keyhold.store.rows import AnyRow

GUARDIAN_AUDIENCES = ("no_one", "friends")
SEES = "your DM setting and with whom your conversations are (names, kind, model, when), never their content"


def _status(row: AnyRow, user_id: int, teen_band: str) -> str:
    if teen_band == Band.ADULT:
        return "ended"  # on the 18th birthday: there is no teen to guard any more
    if row.guardian_accepted_ms is not None and row.teen_accepted_ms is not None:
        return "active"
    mine = row.guardian_accepted_ms if row.guardian_id == user_id else row.teen_accepted_ms
    return "waiting_for_them" if mine is not None else "waiting_for_you"


class Guardians:
    def __init__(self, engine: AsyncEngine, writer: Writer, accounts: AccountService, contacts: ContactGate) -> None:
        self._engine = engine
        self._writer = writer
        self._accounts = accounts
        self._contacts = contacts

    async def _pair(self, conn: AsyncConnection, member: Member, username: str) -> tuple[int, int, bool]:
        """(guardian id, teen id, whether the member is the guardian) of a link with `username`."""
        other = await self._accounts.findable_user(conn, member, username)
        bands = await self._contacts.parties(conn, [member.id, other.id])
        mine, theirs = bands[member.id].band, bands[other.id].band
        if mine == Band.ADULT and theirs != Band.ADULT:
            return member.id, other.id, True
        if mine != Band.ADULT and theirs == Band.ADULT:
            return other.id, member.id, False
        raise conflict("a guardian link is between an adult (the guardian) and a member under 18")

    async def link(self, member: Member, username: str) -> dict[str, Any]:
        """Ask for a link with `username`, or accept theirs: active once both did."""

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            await require_live_session(conn, member)
            guardian, teen, as_guardian = await self._pair(conn, member, username)
            column = "guardian_accepted_ms" if as_guardian else "teen_accepted_ms"
            await store.propose(conn, guardian, teen, column, now_ms())
            other = teen if as_guardian else guardian
            sink.add(PendingEvent(user_ids=[other], type="guardian.link", data={"by": member.username}))

        await self._writer.run(run)
        return await self.links(member)

    async def unlink(self, member: Member, username: str) -> None:
        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            await require_live_session(conn, member, "read")
            other = await self._accounts.user(conn, username)
            if not (await store.remove(conn, member.id, other.id) or await store.remove(conn, other.id, member.id)):
                raise not_found("no such user")  # the same answer as for a name that is no account
            sink.add(PendingEvent(user_ids=[other.id], type="guardian.unlinked", data={"by": member.username}))

        await self._writer.run(run)

    async def links(self, member: Member) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            rows = await store.links_of(conn, member.id)
            bands = await self._contacts.parties(conn, [r.teen_id for r in rows])
        items = []
        for row in rows:
            as_guardian = row.guardian_id == member.id
            items.append(
                {
                    "username": row.teen if as_guardian else row.guardian,
                    "role": "teen" if as_guardian else "guardian",  # what the other is to me
                    "status": _status(row, member.id, bands[row.teen_id].band),
                    "dm_audience": row.dm_audience,
                    "since": iso(row.created_ms),
                }
            )
        return {"items": items, "a_guardian_sees": SEES}

    async def _active_teen(self, conn: AsyncConnection, member: Member, username: str) -> AnyRow:
        for row in await store.links_of(conn, member.id):
            if row.guardian_id == member.id and row.teen == username:
                band = (await self._contacts.parties(conn, [row.teen_id]))[row.teen_id].band
                if _status(row, member.id, band) == "active":
                    return row
        raise not_found("no active guardian link with that member")

    async def teen(self, member: Member, username: str) -> dict[str, Any]:
        """What a guardian sees of their teen: settings and conversation partners, no content."""
        async with self._engine.connect() as conn:
            link = await self._active_teen(conn, member, username)
            party = (await self._contacts.parties(conn, [link.teen_id]))[link.teen_id]
            rows = [
                *await conversation_store.list_for_user(conn, link.teen_id, None, 1000),
                *await conversation_store.list_for_user(conn, link.teen_id, None, 1000, requests=True),
            ]
            everyone = await conversation_store.member_rows(conn, [r.id for r in rows])
        names: dict[int, list[str]] = {}
        for m in everyone:
            if m.left_ms is None and m.id != link.teen_id:
                names.setdefault(m.conversation_id, []).append(m.username)
        return {
            "username": username,
            "band": party.band,
            "dm_audience": party.audience,
            "guardian_setting": link.dm_audience,
            "conversations": [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "encryption": r.encryption,
                    "with": names.get(r.id, []),
                    "started_at": iso(r.created_ms),
                }
                for r in rows
            ],
        }

    async def set_teen_audience(self, member: Member, username: str, audience: str) -> dict[str, Any]:
        if audience not in GUARDIAN_AUDIENCES:
            raise invalid("a guardian sets no_one (direct messages off) or friends")

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            await require_live_session(conn, member)
            link = await self._active_teen(conn, member, username)
            await store.set_audience(conn, member.id, link.teen_id, audience)
            sink.add(
                PendingEvent(
                    user_ids=[link.teen_id],
                    type="guardian.setting",
                    data={"by": member.username, "dm_audience": audience},
                )
            )

        await self._writer.run(run)
        return await self.teen(member, username)


