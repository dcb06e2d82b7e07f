"""Conversations against a real server: 1:1 and groups, membership, the list with unread
counts and previews, `readable_by`, and what a non-member gets (404, never a 5xx)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from conftest import PASSWORD, TLS, Server, new_member, unique
from keyhold.sdk import Client, KeyholdError
from stream_helpers import close_all, live, next_of

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"


def auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.token}"}


async def raw(client: Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(verify=TLS, base_url=client.base_url + API, headers=auth(client)) as http:
        return await http.request(method, path, **kwargs)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem = response.json()
    assert problem["status"] == status
    assert problem["detail"]
    return dict(problem)


async def members(server: Server, count: int, region: str = "us") -> list[Client]:
    return list(await asyncio.gather(*(new_member(server, region=region) for _ in range(count))))


async def register_only(server: Server, count: int) -> list[str]:
    """Accounts that never log in (cheaper than new_member when only the username is needed)."""
    names = [unique("m") for _ in range(count)]
    # A few at a time: past its short queue, password hashing answers 503 (tests/hostile).
    few = asyncio.Semaphore(8)
    async with httpx.AsyncClient(verify=TLS, base_url=server.url + API) as http:
        body = {"password": PASSWORD, "birthdate": "1991-01-01", "region": "us"}

        async def one(name: str) -> httpx.Response:
            async with few:
                return await http.post("/accounts", json={**body, "username": name})

        responses = await asyncio.gather(*(one(n) for n in names))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    return names


def mentions(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text) is not None


# -- 1:1 ------------------------------------------------------------------------------------------


async def test_direct_conversation_is_unique_per_pair(server: Server) -> None:
    a, b = await members(server, 2)
    try:
        body = {"members": [b.username]}
        first = await raw(a, "POST", "/conversations", json=body)
        assert first.status_code == 201, first.text
        view = first.json()
        assert view["kind"] == "direct"
        assert view["encryption"] == "standard"
        assert sorted(view["members"]) == sorted([a.username, b.username])

        second = await raw(a, "POST", "/conversations", json=body)
        assert second.status_code == 200, second.text
        assert second.json()["id"] == view["id"]
        # From the other side, too: one conversation per pair.
        third = await raw(b, "POST", "/conversations", json={"members": [a.username]})
        assert third.status_code == 200
        assert third.json()["id"] == view["id"]
        # Concurrent starts agree as well.
        results = await asyncio.gather(*(a.start_conversation([b.username]) for _ in range(5)))
        assert {c.id for c in results} == {view["id"]}
        assert [c.id for c in await a.conversations()] == [view["id"]]
        assert [c.id for c in await b.conversations()] == [view["id"]]
    finally:
        await close_all(a, b)


async def test_start_refuses_bad_member_lists(server: Server) -> None:
    a, b = await members(server, 2)
    try:
        for body, status in [
            ({"members": [a.username]}, 422),  # only yourself
            ({"members": []}, 422),
            ({"members": [unique("ghost")]}, 404),
            ({"members": [b.username, unique("ghost")]}, 404),
            ({"members": [b.username, b.username], "kind": "direct"}, 200),  # duplicates collapse
            ({"members": [b.username, "x" * 65]}, 422),
            ({"members": b.username}, 422),
            ({"members": [b.username], "surprise": 1}, 422),
        ]:
            response = await raw(a, "POST", "/conversations", json=body)
            if status == 200:
                assert response.status_code in (200, 201), response.text
            else:
                assert_problem(response, status)
        # Only the one valid direct conversation exists.
        listed = await a.conversations()
        assert len(listed) == 1 and listed[0].kind == "direct"
    finally:
        await close_all(a, b)


# -- groups ---------------------------------------------------------------------------------------


async def test_group_with_title(server: Server) -> None:
    a, b, c = await members(server, 3)
    try:
        group = await a.start_conversation([b.username, c.username], title="Book club")
        assert group.kind == "group"
        assert group.title == "Book club"
        assert sorted(group.members) == sorted([a.username, b.username, c.username])
        seen = await c.conversation(group.id)
        assert seen.title == "Book club"
        assert sorted(seen.members) == sorted(group.members)
        # A titled conversation with one other member is a group, distinct from their 1:1.
        pair_group = await a.start_conversation([b.username], title="Just us")
        direct = await a.start_conversation([b.username])
        assert pair_group.kind == "group"
        assert direct.kind == "direct"
        assert len({group.id, pair_group.id, direct.id}) == 3
        # Another group with the same people is another conversation.
        again = await a.start_conversation([b.username, c.username], title="Book club")
        assert again.id != group.id
    finally:
        await close_all(a, b, c)


async def test_group_member_limit_is_32(server: Server) -> None:
    owner = await new_member(server)
    names = await register_only(server, 33)
    try:
        with pytest.raises(KeyholdError) as info:
            await owner.start_conversation(names[:32], title="too many")  # 33 with the owner
        assert info.value.status == 422
        assert "32" in info.value.problem["detail"]
        assert await owner.conversations() == []

        group = await owner.start_conversation(names[:30], title="nearly full")  # 31
        full = await owner.add_members(group.id, [names[30]])
        assert len(full.members) == 32
        with pytest.raises(KeyholdError) as info:
            await owner.add_members(group.id, [names[31], names[32]])
        assert info.value.status == 422
        assert "32" in info.value.problem["detail"]
        assert len((await owner.conversation(group.id)).members) == 32
    finally:
        await owner.close()


async def test_add_members(server: Server) -> None:
    a, b, c, d = await members(server, 4)
    try:
        group = await a.start_conversation([b.username], title="team")
        await a.send(group.id, "before c joined")
        b_stream = await live(b)
        updated = await a.add_members(group.id, [c.username])  # the owner adds (see test_groups.py)
        assert sorted(updated.members) == sorted([a.username, b.username, c.username])
        event = await next_of(b_stream, "conversation.updated", skip=None)
        assert event.data["conversation_id"] == group.id
        assert event.data["change"] == "members_added"
        assert event.data["members"] == [c.username]
        await b_stream.close()

        assert group.id in [conv.id for conv in await c.conversations()]
        sent = await c.send(group.id, "hello from c")
        assert sent.id in [m.id for m in await a.history(group.id)]
        # Adding someone already in is harmless.
        again = await a.add_members(group.id, [c.username])
        assert sorted(again.members) == sorted(updated.members)
        # Unknown users are refused and nobody is added.
        with pytest.raises(KeyholdError) as info:
            await a.add_members(group.id, [d.username, unique("ghost")])
        assert info.value.status == 404
        assert d.username not in (await a.conversation(group.id)).members
        # A direct conversation takes no extra members.
        direct = await a.start_conversation([b.username])
        with pytest.raises(KeyholdError) as info:
            await a.add_members(direct.id, [d.username])
        assert info.value.status == 422
        assert sorted((await a.conversation(direct.id)).members) == sorted([a.username, b.username])
    finally:
        await close_all(a, b, c, d)


async def test_leave(server: Server) -> None:
    a, b, c = await members(server, 3)
    try:
        group = await a.start_conversation([b.username, c.username], title="leaving soon")
        await a.send(group.id, "before c left")
        a_stream = await live(a)
        c_stream = await live(c)
        await c.leave(group.id)
        event = await next_of(a_stream, "conversation.updated", skip=None)
        assert event.data["change"] == "member_left"
        assert event.data["member"] == c.username
        await a_stream.close()
        # c hears of its own leaving, then nothing more from the group.
        event = await c_stream.next_event()
        assert (event.type, event.data["change"]) == ("conversation.updated", "member_left")
        await a.send(group.id, "c must not get this")
        direct_ac = await a.start_conversation([c.username])
        await a.send(direct_ac.id, "sentinel for c")
        event = await next_of(c_stream, "message.new", skip=None)
        assert event.message is not None and event.message.text == "sentinel for c"
        await c_stream.close()

        assert sorted((await a.conversation(group.id)).members) == sorted([a.username, b.username])
        assert group.id not in [conv.id for conv in await c.conversations()]
        # A former member is a non-member: no history, no sending, no second leave.
        for call in (
            c.history(group.id),
            c.send(group.id, "still here?"),
            c.conversation(group.id),
            c.leave(group.id),
        ):
            with pytest.raises(KeyholdError) as info:
                await call
            assert info.value.status == 404
        # The others carry on.
        after = await b.send(group.id, "after c left")
        assert [m.id for m in await a.history(group.id)][-1] == after.id
        # A direct conversation cannot be left.
        direct = await a.start_conversation([b.username])
        with pytest.raises(KeyholdError) as info:
            await a.leave(direct.id)
        assert info.value.status == 422
        assert direct.id in [conv.id for conv in await a.conversations()]
    finally:
        await close_all(a, b, c)


async def test_a_former_member_can_be_added_back(server: Server) -> None:
    a, b, c, d = await members(server, 4)
    try:
        group = await a.start_conversation([b.username, c.username], title="come back")
        await c.leave(group.id)
        # Only former members (the case that writes no new member rows)...
        back = await a.add_members(group.id, [c.username])
        assert sorted(back.members) == sorted([a.username, b.username, c.username])
        assert group.id in [conv.id for conv in await c.conversations()]
        sent = await c.send(group.id, "I'm back")
        assert sent.id in [m.id for m in await b.history(group.id)]
        # ...and former and new members together.
        await c.leave(group.id)
        both = await a.add_members(group.id, [c.username, d.username])
        assert sorted(both.members) == sorted([a.username, b.username, c.username, d.username])
    finally:
        await close_all(a, b, c, d)


# -- the list -------------------------------------------------------------------------------------


async def test_list_has_unread_counts_and_previews(server: Server) -> None:
    a, b, c = await members(server, 3)
    try:
        direct = await a.start_conversation([b.username])
        group = await a.start_conversation([b.username, c.username], title="g")
        empty = await a.start_conversation([c.username])
        long_text = "The quick brown fox jumps over the lazy dog. " * 10
        await b.send(direct.id, "one")
        await b.send(direct.id, "two")
        last = await b.send(direct.id, long_text)
        await a.send(direct.id, "my own reply does not count as unread")
        mine_last = await c.send(group.id, "group hello")

        listed = {conv.id: conv for conv in await a.conversations()}
        assert set(listed) == {direct.id, group.id, empty.id}
        # Most recent activity first.
        assert [conv.id for conv in await a.conversations()][:2] == [group.id, direct.id]

        assert listed[direct.id].unread == 3
        preview = listed[direct.id].last_message
        assert preview is not None
        assert preview["sender"] == a.username
        assert preview["preview"] == "my own reply does not count as unread"
        assert listed[group.id].unread == 1
        assert listed[group.id].last_message is not None
        assert listed[group.id].last_message["id"] == mine_last.id
        assert listed[group.id].last_message["preview"] == "group hello"
        assert listed[group.id].last_message["sender"] == c.username
        assert listed[empty.id].unread == 0
        assert listed[empty.id].last_message is None

        # b's view: a's one reply is unread, the long text is not b's to count.
        b_direct = await b.conversation(direct.id)
        assert b_direct.unread == 1
        # Reading up to the last long message leaves only a's reply... for a: zero.
        assert await a.mark(direct.id, last.id) is True
        assert (await a.conversation(direct.id)).unread == 0
        assert {conv.id: conv.unread for conv in await a.conversations()}[direct.id] == 0

        # A long last message is previewed as a prefix, not whole.
        await b.send(direct.id, long_text)
        again = {conv.id: conv for conv in await a.conversations()}[direct.id]
        assert again.unread == 1
        assert again.last_message is not None
        shown = again.last_message["preview"]
        assert shown and long_text.startswith(shown) and len(shown) < len(long_text)
    finally:
        await close_all(a, b, c)


async def test_list_cursor_pagination(server: Server) -> None:
    me = await new_member(server)
    others = await register_only(server, 9)
    try:
        created = []
        for name in others[:6]:
            created.append((await me.start_conversation([name])).id)
        # Empty conversations started at once (possibly within the same millisecond).
        created += [c.id for c in await asyncio.gather(*(me.start_conversation([n]) for n in others[6:]))]
        # Activity in a few of them, so that the order is not creation order.
        for cid in (created[2], created[0], created[4]):
            await me.send(cid, f"activity in {cid}")
        full = [c.id for c in await me.conversations(limit=200)]
        assert sorted(full) == sorted(created)
        assert full[:3] == [created[4], created[0], created[2]]

        pages: list[list[int]] = []
        before: int | None = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if before is not None:
                params["before"] = before
            response = await raw(me, "GET", "/conversations", params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            pages.append([item["id"] for item in body["items"]])
            before = body["next_before"]
            if before is None:
                break
            assert len(pages) < 20, "pagination does not end"
        walked = [cid for page in pages for cid in page]
        assert walked == full, "paging must give the same order with no gaps and no duplicates"
        assert all(len(page) == 2 for page in pages[:-1])
        assert_problem(await raw(me, "GET", "/conversations", params={"limit": 0}), 422)
        assert_problem(await raw(me, "GET", "/conversations", params={"before": -1}), 422)
        assert_problem(await raw(me, "GET", "/conversations", params={"before": "x"}), 422)
    finally:
        await me.close()


# -- readable_by and encryption -------------------------------------------------------------------


async def test_readable_by_names_the_members_regions(server: Server) -> None:
    us = await new_member(server, region="us")
    eu = await new_member(server, region="eu")
    row = await new_member(server, region="row")
    us2 = await new_member(server, region="us")
    try:
        local = await us.start_conversation([us2.username])
        assert local.encryption == "standard"
        assert "participants" in local.readable_by
        assert mentions(local.readable_by, "us")
        assert not mentions(local.readable_by, "eu") and not mentions(local.readable_by, "row")

        cross = await us.start_conversation([eu.username])
        assert "participants" in cross.readable_by
        assert mentions(cross.readable_by, "us") and mentions(cross.readable_by, "eu")
        assert not mentions(cross.readable_by, "row")
        # Both sides read the same statement.
        assert (await eu.conversation(cross.id)).readable_by == cross.readable_by

        group = await us.start_conversation([us2.username], title="growing")
        assert not mentions(group.readable_by, "row")
        grown = await us.add_members(group.id, [row.username])
        assert mentions(grown.readable_by, "us") and mentions(grown.readable_by, "row")
        listed = {c.id: c for c in await us.conversations()}
        assert listed[group.id].readable_by == grown.readable_by
    finally:
        await close_all(us, eu, row, us2)


async def test_an_unknown_encryption_is_refused_with_a_clear_4xx(server: Server) -> None:
    a, b = await members(server, 2)
    try:
        bogus = await raw(a, "POST", "/conversations", json={"members": [b.username], "encryption": "rot13"})
        assert_problem(bogus, 422)
        assert await a.conversations() == []
        assert await b.conversations() == []
    finally:
        await close_all(a, b)


# -- non-members ----------------------------------------------------------------------------------


async def test_non_member_gets_404_everywhere(server: Server) -> None:
    a, b, outsider = await members(server, 3)
    try:
        conv = await a.start_conversation([b.username])
        group = await a.start_conversation([b.username], title="private group")
        message = await a.send(conv.id, "not for outsiders")
        file_message = await a.send_file(conv.id, b"private bytes", "private.txt", "text/plain")
        assert file_message.attachment is not None
        attachment_id = file_message.attachment.id
        missing = 2**50  # no such conversation at all: the same answer

        for cid in (conv.id, group.id, missing):
            requests: list[tuple[str, str, dict[str, Any]]] = [
                ("GET", f"/conversations/{cid}", {}),
                ("GET", f"/conversations/{cid}/messages", {}),
                ("GET", f"/conversations/{cid}/messages", {"params": {"after": 0}}),
                ("POST", f"/conversations/{cid}/messages", {"json": {"text": "let me in"}}),
                ("POST", f"/conversations/{cid}/members", {"json": {"members": [outsider.username]}}),
                ("DELETE", f"/conversations/{cid}/members/me", {}),
                (
                    "POST",
                    f"/conversations/{cid}/receipts",
                    {"json": {"type": "read", "message_id": message.id}},
                ),
                (
                    "POST",
                    f"/conversations/{cid}/attachments",
                    {"headers": {"Keyhold-Filename": "x.bin"}, "content": b"sneaky"},
                ),
            ]
            for method, path, kwargs in requests:
                response = await raw(outsider, method, path, **kwargs)
                assert_problem(response, 404)
                assert "not for outsiders" not in response.text

        for method, path in [
            ("GET", f"/attachments/{attachment_id}"),
            ("DELETE", f"/messages/{message.id}"),
        ]:
            response = await raw(outsider, method, path)
            assert_problem(response, 404)
            assert b"private bytes" not in response.content

        assert await outsider.conversations() == []
        # Nothing the outsider tried changed anything.
        view = await a.conversation(conv.id)
        assert sorted(view.members) == sorted([a.username, b.username])
        assert sorted((await a.conversation(group.id)).members) == sorted([a.username, b.username])
        history = await b.history(conv.id)
        assert [m.id for m in history] == [message.id, file_message.id]
        assert history[0].text == "not for outsiders"
        assert await b.download(attachment_id) == b"private bytes"
    finally:
        await close_all(a, b, outsider)
