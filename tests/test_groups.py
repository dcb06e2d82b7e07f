"""Group roles against a real server (SQLite and PostgreSQL): the creator owns the group; the
owner and admins add, rename and promote; admins remove members, the owner removes admins too;
everyone leaves, and an owner who leaves hands the group on. Every change reaches each member
as a `conversation.updated` event, and a removed member gets nothing sent after."""

from __future__ import annotations

import pytest

from conftest import Server, new_member
from keyhold.sdk import Client, KeyholdError
from stream_helpers import close_all, live, next_of


async def group_of(server: Server, size: int) -> tuple[list[Client], int]:
    people = [await new_member(server) for _ in range(size)]
    conv = await people[0].start_conversation([p.username for p in people[1:]], title="the group")
    return people, conv.id


async def refused(call: object, status: int) -> None:
    with pytest.raises(KeyholdError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.status == status, caught.value.problem


async def test_the_creator_owns_the_group_and_members_cannot_manage_it(server: Server) -> None:
    (owner, ann, ben, cat), cid = await group_of(server, 4)
    outsider = await new_member(server)
    view = await ann.conversation(cid)
    assert view.owner == owner.username and view.admins == []

    await refused(ann.add_members(cid, [outsider.username]), 403)
    await refused(ann.rename(cid, "ann's now"), 403)
    await refused(ann.remove_member(cid, ben.username), 403)
    await refused(ann.set_role(cid, ben.username, "admin"), 403)
    unchanged = await owner.conversation(cid)
    assert unchanged.title == "the group" and sorted(unchanged.members) == sorted(
        p.username for p in (owner, ann, ben, cat)
    )
    await close_all(owner, ann, ben, cat, outsider)


async def test_owner_and_admins_manage_and_every_member_is_told(server: Server) -> None:
    (owner, ann, ben), cid = await group_of(server, 3)
    newcomer = await new_member(server)
    streams = {p.username: await live(p) for p in (owner, ann, ben)}

    promoted = await owner.set_role(cid, ann.username, "admin")
    assert promoted.admins == [ann.username]
    for name, stream in streams.items():
        event = await next_of(stream, "conversation.updated", skip=None)
        assert event.data["change"] == "role_changed" and event.data["member"] == ann.username, name

    renamed = await ann.rename(cid, "renamed by an admin")
    assert renamed.title == "renamed by an admin"
    for stream in streams.values():
        event = await next_of(stream, "conversation.updated", skip=None)
        assert event.data["change"] == "renamed" and event.data["title"] == "renamed by an admin"

    grown = await ann.add_members(cid, [newcomer.username])
    assert newcomer.username in grown.members
    for stream in streams.values():
        event = await next_of(stream, "conversation.updated", skip=None)
        assert event.data["change"] == "members_added" and event.data["members"] == [newcomer.username]

    await ann.remove_member(cid, ben.username)
    for stream in streams.values():  # ben, removed, is told too
        event = await next_of(stream, "conversation.updated", skip=None)
        assert event.data["change"] == "member_removed" and event.data["member"] == ben.username
    await close_all(*streams.values(), owner, ann, ben, newcomer)


async def test_a_removed_member_gets_nothing_sent_after(server: Server) -> None:
    (owner, ann, ben), cid = await group_of(server, 3)
    await owner.send(cid, "before the removal")
    ben_stream = await live(ben)

    await owner.remove_member(cid, ben.username)
    await next_of(ben_stream, "conversation.updated", skip=None)
    await owner.send(cid, "after the removal")

    assert "after the removal" in [m.text for m in await ann.history(cid)]
    await refused(ben.history(cid), 404)
    await refused(ben.send(cid, "still here?"), 404)
    assert cid not in [c.id for c in await ben.conversations()]
    leftovers = []
    while True:
        try:
            leftovers.append(await ben_stream.next_event(0.5))
        except TimeoutError:
            break
    assert not [e for e in leftovers if e.type == "message.new"], leftovers
    await close_all(ben_stream, owner, ann, ben)


async def test_admins_cannot_remove_admins_or_the_owner_and_nobody_removes_the_owner(server: Server) -> None:
    (owner, ann, ben), cid = await group_of(server, 3)
    await owner.set_role(cid, ann.username, "admin")
    await owner.set_role(cid, ben.username, "admin")

    await refused(ann.remove_member(cid, ben.username), 403)
    await refused(ann.remove_member(cid, owner.username), 403)
    await refused(ann.set_role(cid, ben.username, "member"), 403)  # demoting is the owner's
    await refused(owner.set_role(cid, owner.username, "member"), 422)

    demoted = await owner.set_role(cid, ben.username, "member")
    assert demoted.admins == [ann.username]
    kept = await owner.remove_member(cid, ann.username)  # the owner removes an admin
    assert ann.username not in kept.members
    await close_all(owner, ann, ben)


async def test_an_owner_who_leaves_hands_the_group_on(server: Server) -> None:
    (owner, ann, ben, cat), cid = await group_of(server, 4)
    await owner.set_role(cid, cat.username, "admin")

    await owner.leave(cid)

    view = await ann.conversation(cid)
    assert view.owner == cat.username  # an admin first, before longer-standing members
    await cat.leave(cid)
    assert (await ann.conversation(cid)).owner in (ann.username, ben.username)
    await close_all(owner, ann, ben, cat)


async def test_direct_conversations_have_no_roles_to_manage(server: Server) -> None:
    a, b = await new_member(server), await new_member(server)
    conv = await a.start_conversation([b.username])
    await refused(a.rename(conv.id, "ours"), 422)
    await refused(a.remove_member(conv.id, b.username), 422)
    await refused(a.add_members(conv.id, [(await new_member(server)).username]), 422)
    await close_all(a, b)
