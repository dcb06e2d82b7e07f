"""Who may message whom (issue 9, items 2 and 3), through the API on both databases, with the
built-in policy (message requests on): the requests inbox and its limits, DM audiences, and
blocks both ways, in direct conversations and groups, in both models."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Server, new_member, raw, start_server, stop_server, unique
from keyhold.sdk import Client
from keyhold.sdk.errors import KeyholdError
from stream_helpers import close_all, live, next_of

pytestmark = pytest.mark.postgres
SERVER_POLICY = None  # the built-in defaults: a non-friend's first message is a request


async def befriend(*clients: Client) -> None:
    for a in clients:
        for b in clients:
            if a is not b:
                await a.follow(b.username)


async def start(client: Client, *others: str, encryption: str = "standard", kind: str | None = None) -> int:
    body: dict[str, object] = {"members": list(others), "encryption": encryption}
    if kind:
        body["kind"] = kind
    answer = await raw(client, "POST", "/conversations", json=body)
    assert answer.status_code in (200, 201), answer.text
    return int(answer.json()["id"])


async def send(client: Client, conversation_id: int, text: str) -> int:
    answer = await raw(client, "POST", f"/conversations/{conversation_id}/messages", json={"text": text})
    return answer.status_code


async def listed(client: Client, path: str) -> list[int]:
    return [c["id"] for c in (await raw(client, "GET", path)).json()["items"]]


async def test_a_first_message_from_a_non_friend_is_a_request_with_limits(server: Server) -> None:
    a, b = await new_member(server), await new_member(server)
    conversation = await start(a, b.username)
    assert conversation in await listed(b, "/requests")
    assert conversation not in await listed(b, "/conversations")
    assert conversation in await listed(a, "/conversations")  # the sender sees it as usual

    link = await raw(a, "POST", f"/conversations/{conversation}/messages", json={"text": "see www.example.com"})
    assert link.status_code == 403 and "no links" in link.json()["detail"]
    upload = await raw(
        a, "POST", f"/conversations/{conversation}/attachments",
        content=b"hello", headers={"Content-Type": "text/plain", "Keyhold-Filename": "x.txt"},
    )  # fmt: skip
    assert upload.status_code == 403 and "no attachments" in upload.json()["detail"]
    assert [await send(a, conversation, f"hello {n}") for n in range(3)] == [201, 201, 201]
    fourth = await raw(a, "POST", f"/conversations/{conversation}/messages", json={"text": "hello?"})
    assert fourth.status_code == 403 and "at most 3 messages" in fourth.json()["detail"]

    # The recipient reads the request, but cannot answer before accepting, and the sender sees no receipt.
    history = (await raw(b, "GET", f"/conversations/{conversation}/messages")).json()["items"]
    assert [m["text"] for m in history] == ["hello 0", "hello 1", "hello 2"]
    reply = await raw(b, "POST", f"/conversations/{conversation}/messages", json={"text": "hi"})
    assert reply.status_code == 409 and "accept" in reply.json()["detail"]
    stream = await live(a)
    assert await b.mark(conversation, history[-1]["id"], "read")
    assert (await raw(b, "POST", f"/requests/{conversation}/accept")).status_code == 204
    assert await send(b, conversation, "hi, who is this?") == 201
    event = await next_of(stream, "message.new")  # no receipt of the pending read came first
    assert event.message is not None and event.message.text == "hi, who is this?"

    assert conversation in await listed(b, "/conversations")
    assert conversation not in await listed(b, "/requests")
    assert await send(a, conversation, "the shop is www.example.com") == 201  # accepted: no limits
    assert (await raw(b, "POST", f"/requests/{conversation}/accept")).status_code == 404  # nothing pending
    await close_all(stream, a, b)


async def test_friends_start_without_a_request_and_a_deleted_request_is_gone(server: Server) -> None:
    a, b, c = await new_member(server), await new_member(server), await new_member(server)
    await befriend(a, b)
    direct = await start(a, b.username)
    assert direct in await listed(b, "/conversations") and direct not in await listed(b, "/requests")

    request = await start(c, b.username)
    assert [r.id for r in await b.requests()] == [request]  # through the SDK too
    await b.decline_request(request)
    assert await b.requests() == []
    assert request not in await listed(b, "/conversations")
    assert (await raw(b, "GET", f"/conversations/{request}/messages")).status_code == 404
    assert (await raw(a, "DELETE", f"/requests/{direct}")).status_code == 404  # not a request: nothing to delete


async def test_declining_with_a_block_hides_the_blocker(server: Server) -> None:
    a, b = await new_member(server), await new_member(server)
    request = await start(a, b.username)
    assert (await raw(b, "POST", f"/requests/{request}/block")).status_code == 204
    unknown = await raw(a, "GET", f"/users/{unique('nobody')}")
    hidden = await raw(a, "GET", f"/users/{b.username}")
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["detail"] == unknown.json()["detail"]
    again = await raw(a, "POST", "/conversations", json={"members": [b.username], "kind": "group", "title": "x"})
    assert again.status_code == 404
    assert again.json()["detail"] == "1 of the named members are not active users"
    assert [item["username"] for item in (await raw(b, "GET", "/blocks")).json()["items"]] == [a.username]


@pytest.mark.parametrize("encryption", ["standard", "e2ee"])
async def test_a_block_stops_direct_messages_both_ways_and_unblocking_restores_nothing(
    server: Server, encryption: str
) -> None:
    e2ee = encryption == "e2ee"
    a, b = await new_member(server, e2ee=e2ee), await new_member(server, e2ee=e2ee)
    await befriend(a, b)
    conversation = await start(a, b.username, encryption=encryption)
    await a.send(conversation, "before")
    assert (await raw(a, "PUT", f"/blocks/{b.username}")).status_code == 204
    for sender, detail in ((a, "you block"), (b, "cannot send")):
        with pytest.raises(KeyholdError) as refused:
            await sender.send(conversation, "during")
        assert refused.value.status == 403 and detail in str(refused.value)
    assert b.username not in await a.friends()  # following ended both ways
    group = await raw(a, "POST", "/conversations", json={"members": [b.username], "kind": "group", "title": "g"})
    assert group.status_code == 409 and "unblock" in group.json()["detail"]
    assert (await raw(b, "POST", "/conversations", json={"members": [a.username]})).status_code == 404

    assert (await raw(a, "DELETE", f"/blocks/{b.username}")).status_code == 204
    assert (await raw(a, "DELETE", f"/blocks/{b.username}")).status_code == 404
    assert b.username not in await a.friends()  # nothing restored
    await a.send(conversation, "after")  # the conversation was accepted: it goes on
    texts = [m.text for m in await b.history(conversation)]
    assert texts == ["before", "after"]
    await close_all(a, b)


async def test_in_a_group_the_blocked_members_messages_are_hidden_for_the_blocker_for_good(server: Server) -> None:
    a, b, c = await new_member(server), await new_member(server), await new_member(server)
    await befriend(a, b, c)
    group = await start(a, b.username, c.username, kind="group")
    assert (await raw(a, "PUT", f"/blocks/{b.username}")).status_code == 204
    stream = await live(a)
    assert await send(b, group, "from b while blocked") == 201
    assert await send(c, group, "from c") == 201
    event = await next_of(stream, "message.new")
    assert event.message is not None and event.message.text == "from c"  # b's never reached a
    assert (await raw(a, "DELETE", f"/blocks/{b.username}")).status_code == 204
    assert [m.text for m in await a.history(group)] == ["from c"]
    assert [m.text for m in await c.history(group)] == ["from b while blocked", "from c"]
    assert (await raw(a, "PUT", f"/blocks/{b.username}")).status_code == 204
    other = await start(b, c.username, kind="group")
    add = await raw(b, "POST", f"/conversations/{other}/members", json={"members": [a.username]})
    assert add.status_code == 404  # the blocker is no account to the blocked
    assert a.username in (await raw(c, "GET", f"/conversations/{group}")).json()["members"]  # groups stay
    await close_all(stream, a, b, c)


async def test_dm_audience_friends_and_no_one(server: Server) -> None:
    a, b, friend = await new_member(server), await new_member(server), await new_member(server)
    await befriend(b, friend)
    assert (await raw(b, "GET", "/account/messaging")).json()["dm_audience"] == "everyone"
    put = await raw(b, "PUT", "/account/messaging", json={"dm_audience": "friends"})
    assert put.status_code == 200 and put.json()["dm_audience"] == "friends"
    refused = await raw(a, "POST", "/conversations", json={"members": [b.username]})
    assert refused.status_code == 403 and "friends only" in refused.json()["detail"]
    await start(friend, b.username)

    await raw(b, "PUT", "/account/messaging", json={"dm_audience": "no_one"})
    for who in (a, friend):
        group = await raw(who, "POST", "/conversations", json={"members": [b.username], "kind": "group", "title": "t"})
        assert group.status_code == 403 and "does not accept" in group.json()["detail"]
    bad = await raw(b, "PUT", "/account/messaging", json={"dm_audience": "anyone\u0000"})
    assert bad.status_code == 422
    assert (await raw(b, "GET", "/account/messaging")).json()["dm_audience"] == "no_one"


async def test_being_added_to_a_group_by_a_non_friend_is_a_request(server: Server) -> None:
    owner, friend, stranger = await new_member(server), await new_member(server), await new_member(server)
    await befriend(owner, friend)
    group = await start(owner, friend.username, kind="group")
    added = await raw(owner, "POST", f"/conversations/{group}/members", json={"members": [stranger.username]})
    assert added.status_code == 200
    assert group in await listed(stranger, "/requests")
    assert group in await listed(friend, "/conversations")
    refused = await raw(stranger, "POST", f"/conversations/{group}/messages", json={"text": "hi all"})
    assert refused.status_code == 409
    assert (await raw(stranger, "POST", f"/requests/{group}/accept")).status_code == 204
    assert await send(stranger, group, "hi all") == 201


async def test_outsiders_cannot_touch_someone_elses_request(server: Server) -> None:
    a, b, outsider = await new_member(server), await new_member(server), await new_member(server)
    request = await start(a, b.username)
    for method, path in (("POST", f"/requests/{request}/accept"), ("DELETE", f"/requests/{request}"),
                         ("POST", f"/requests/{request}/block")):  # fmt: skip
        for who in (outsider, a):  # the sender cannot accept its own request either
            answer = await raw(who, method, path)
            assert answer.status_code == 404, (method, path)
    assert request in await listed(b, "/requests")
    assert (await raw(a, "PUT", f"/blocks/{a.username}")).status_code == 422
    assert (await raw(a, "PUT", "/blocks/nobody%07")).status_code == 422


async def test_an_e2ee_request_has_the_same_limits(server: Server) -> None:
    a, b = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    conversation = await start(a, b.username, encryption="e2ee")
    assert conversation in await listed(b, "/requests")
    for n in range(3):
        await a.send(conversation, f"encrypted hello {n}")
    with pytest.raises(KeyholdError) as fourth:
        await a.send(conversation, "one more")
    assert fourth.value.status == 403 and "at most 3 messages" in str(fourth.value)
    with pytest.raises(KeyholdError) as early:
        await b.send(conversation, "hi")
    assert early.value.status == 409
    assert [m.text for m in await b.history(conversation)] == [f"encrypted hello {n}" for n in range(3)]
    assert (await raw(b, "POST", f"/requests/{conversation}/accept")).status_code == 204
    await b.send(conversation, "hi")
    await a.send(conversation, "one more")
    await close_all(a, b)


async def test_new_message_requests_are_rate_limited_per_account(tmp_path: Path) -> None:
    policy = "[rate_limits.requests]\naccount = 2\nnew_account = 2\naddress = 100\n"
    srv = start_server(tmp_path / "kh", "sqlite", env={"KEYHOLD_RATE_LIMIT_SCALE": "1"}, policy=policy)
    try:
        sender = await new_member(srv)
        others = [await new_member(srv) for _ in range(4)]
        friend = others[3]
        await befriend(sender, friend)
        for other in others[:2]:
            await start(sender, other.username)
        third = await raw(sender, "POST", "/conversations", json={"members": [others[2].username]})
        assert third.status_code == 429 and "Retry-After" in third.headers
        assert "request" in third.json()["detail"]
        assert await others[2].requests() == []  # nothing was made
        await start(sender, friend.username)  # a friend is no request: not counted
        await close_all(sender, *others)
    finally:
        stop_server(srv)
