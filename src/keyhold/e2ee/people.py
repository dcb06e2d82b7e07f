"""Whom a member may reach through end-to-end encryption's endpoints: themself, members who
share a conversation with them now, and friends. Anyone else is answered as if unknown."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.core.accounts import Member
from keyhold.core.errors import invalid
from keyhold.e2ee.ids import split_user_id
from keyhold.store import e2ee_keys as store

MAX_USERS = 500


async def reachable(
    conn: AsyncConnection, member: Member, user_ids: Collection[str], server_name: str, with_declined: bool = True
) -> tuple[dict[str, int], dict[str, dict[str, object]]]:
    """The asked-for ids the member may reach, with their account ids; and Matrix's
    `failures` for ids on other servers (Keyhold does not federate)."""
    if len(user_ids) > MAX_USERS:
        raise invalid(f"at most {MAX_USERS} users per request")
    names: dict[str, str] = {}
    failures: dict[str, dict[str, object]] = {}
    for uid in user_ids:
        parts = split_user_id(uid)
        if parts is None:
            raise invalid("user ids are written @<username>:<server name>")
        if parts[1] == server_name:
            names[uid] = parts[0]
        else:
            failures[parts[1]] = {"status": 404, "message": "this server does not federate"}
    ids = await store.users_by_name(conn, set(names.values()))
    found = {uid: ids[name] for uid, name in names.items() if name in ids}
    visible = await store.visible_to(conn, member.id, set(found.values()), with_declined)
    return {uid: account for uid, account in found.items() if account in visible}, failures
