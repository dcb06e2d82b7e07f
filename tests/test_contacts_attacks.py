"""Who may message whom (issue 9, items 1-3), reviewed as an attacker would: ways around the
minors' rules, message requests, blocks and guardian links, through every route. A test here
fails while the hole it describes is open; the ones that pass pin attacks that are stopped.

Run: /tmp/t -p no:xdist -q tests/test_contacts_attacks.py"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, new_member, raw, start_server, stop_server, unique
from e2ee_helpers import published
from keyhold.sdk import Client
from stream_helpers import close_all, live, next_of
from test_contacts import befriend
from test_safety_minors import born_years_ago, member_born

pytestmark = pytest.mark.postgres
SERVER_POLICY = None  # the built-in defaults: a non-friend's first message is a request
UNKNOWN = "1 of the named members are not active users"


# -- helpers -------------------------------------------------------------------------------------


async def start(
    client: Client, *others: str, kind: str | None = None, title: str = "", encryption: str = "standard"
) -> int:
    body: dict[str, object] = {"members": list(others), "encryption": encryption}
    if kind:
        body["kind"] = kind
    if title:
        body["title"] = title
    answer = await raw(client, "POST", "/conversations", json=body)
    assert answer.status_code in (200, 201), answer.text
    return int(answer.json()["id"])


async def say(client: Client, conversation_id: int, text: str, **extra: Any) -> httpx.Response:
    return await raw(
        client, "POST", f"/conversations/{conversation_id}/messages", json={"text": text, **extra}
    )


async def upload(client: Client, conversation_id: int) -> httpx.Response:
    return await raw(
        client, "POST", f"/conversations/{conversation_id}/attachments",
        content=b"hello there", headers={"Content-Type": "text/plain", "Keyhold-Filename": "x.txt"},
    )  # fmt: skip


async def ids(client: Client, path: str) -> list[int]:
    answer = await raw(client, "GET", path)
    assert answer.status_code == 200, answer.text
    return [c["id"] for c in answer.json()["items"]]


async def texts(client: Client, conversation_id: int) -> list[str]:
    answer = await raw(client, "GET", f"/conversations/{conversation_id}/messages?limit=200")
    assert answer.status_code == 200, answer.text
    return [m["text"] for m in answer.json()["items"]]


def same_answer(a: httpx.Response, b: httpx.Response) -> tuple[Any, Any]:
    """What a prober compares: the status and the body, without the per-request instance."""

    def shape(r: httpx.Response) -> Any:
        body = r.json() if r.content else None
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "instance"}
        return r.status_code, body

    return shape(a), shape(b)


def set_birthdate(server: Server, username: str, birthdate: str) -> None:
    """As if the member's birthday came: their stored birthdate moved (the band follows it)."""
    if server.backend == "sqlite":
        conn = sqlite3.connect(server.home / "keyhold.db", timeout=30)
        try:
            with conn:
                conn.execute("UPDATE users SET birthdate = ? WHERE username = ?", (birthdate, username))
        finally:
            conn.close()
        return
    import asyncpg  # type: ignore[import-untyped]

    async def update() -> None:
        conn = await asyncpg.connect(server.database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await conn.execute("UPDATE users SET birthdate = $1 WHERE username = $2", birthdate, username)
        finally:
            await conn.close()

    asyncio.run(update())


# -- message requests: the limits ---------------------------------------------------------------


async def test_a_request_made_as_a_two_person_group_keeps_the_request_limits(server: Server) -> None:
    """A stranger who starts a "group" with one victim reaches the requests inbox just as a
    direct conversation does, but none of the request's limits apply: unlimited messages,
    links and attachments land in the victim's requests inbox."""
    stranger, victim = await new_member(server), await new_member(server)
    group = await start(stranger, victim.username, kind="group", title="hi")
    assert group in await ids(victim, "/requests")
    link = await say(stranger, group, "see www.example.com")
    assert link.status_code == 403, f"a link from a non-friend's request went through: {link.status_code}"
    attachment = await upload(stranger, group)
    assert attachment.status_code == 403, (
        f"an attachment upload to a request went through: {attachment.status_code}"
    )
    statuses = [(await say(stranger, group, f"hello {n}")).status_code for n in range(5)]
    assert statuses.count(201) <= 3, f"more than 3 messages before acceptance: {statuses}"


async def test_concurrent_sends_to_a_request_stop_at_three(server: Server) -> None:
    stranger, victim = await new_member(server), await new_member(server)
    conversation = await start(stranger, victim.username)
    answers = await asyncio.gather(*(say(stranger, conversation, f"hello {n}") for n in range(12)))
    assert sorted(a.status_code for a in answers) == [201] * 3 + [403] * 9
    assert len(await texts(victim, conversation)) == 3


async def test_rest_and_websocket_sends_share_the_three_message_limit(server: Server) -> None:
    stranger, victim = await new_member(server), await new_member(server)
    conversation = await start(stranger, victim.username)
    stream = await stranger.connect(0)
    await asyncio.wait_for(stream.ready.wait(), 10)

    async def by_socket(n: int) -> int:
        try:
            await stream.send(conversation, f"socket {n}")
            return 201
        except Exception:  # the error frame: refused
            return 403

    async def by_rest(n: int) -> int:
        return (await say(stranger, conversation, f"rest {n}")).status_code

    results = await asyncio.gather(*(f(n) for n in range(4) for f in (by_socket, by_rest)))
    assert results.count(201) == 3, results
    assert len(await texts(victim, conversation)) == 3
    await close_all(stream)


async def test_idempotent_retries_neither_add_a_message_nor_open_the_limit(server: Server) -> None:
    stranger, victim = await new_member(server), await new_member(server)
    conversation = await start(stranger, victim.username)
    keys = [uuid.uuid4().hex for _ in range(3)]
    for n, key in enumerate(keys):
        assert (await say(stranger, conversation, f"hello {n}", idempotency_key=key)).status_code == 201
    retry = await say(stranger, conversation, "hello 0", idempotency_key=keys[0])
    assert retry.status_code in (200, 201) and retry.json()["text"] == "hello 0"
    fourth = await say(stranger, conversation, "hello 3", idempotency_key=uuid.uuid4().hex)
    assert fourth.status_code == 403
    assert await texts(victim, conversation) == ["hello 0", "hello 1", "hello 2"]


@pytest.mark.parametrize(
    "text",
    [
        "my page: portfolio.dev/me",  # a common top-level domain the pattern does not know
        "join evil.to/x",
        "tickets at shop.ai",
        "watch stream.tv now",
        "go to example\u3002com",  # ideographic full stop: browsers read it as a dot
        "go to example\uff0ecom",  # fullwidth full stop
        "example[.]com",
        "http\u200b://example.com",  # a zero-width space breaks the scheme, not the link
    ],
)
async def test_links_in_other_forms_are_links_too(server: Server, text: str) -> None:
    stranger, victim = await new_member(server), await new_member(server)
    conversation = await start(stranger, victim.username)
    answer = await say(stranger, conversation, text)
    assert answer.status_code == 403 and "no links" in answer.json()["detail"], (
        text,
        answer.status_code,
        answer.text,
    )


async def test_the_pending_recipient_cannot_send_upload_or_receipt_to_the_sender(server: Server) -> None:
    stranger, victim = await new_member(server), await new_member(server)
    conversation = await start(stranger, victim.username)
    assert (await say(victim, conversation, "hi")).status_code == 409
    assert (await upload(victim, conversation)).status_code == 409
    sent = await say(stranger, conversation, "hello")
    stream = await live(stranger)
    assert (await raw(victim, "POST", f"/conversations/{conversation}/receipts",
                      json={"type": "read", "message_id": sent.json()["id"]})).status_code == 200  # fmt: skip
    await say(stranger, conversation, "are you there")  # the next event the sender gets is their own
    event = await next_of(stream, "message.new")
    assert event.message is not None and event.message.text == "are you there"
    await close_all(stream)


# -- blocks -----------------------------------------------------------------------------------


async def test_a_hidden_message_shows_in_the_blockers_conversation_list(server: Server) -> None:
    """In a shared group the blocked member's messages are "never shown" to the blocker, but
    the conversation list's preview (and the unread count) are computed from the group's last
    message, whoever it is hidden from."""
    a, b, c = await new_member(server), await new_member(server), await new_member(server)
    await befriend(a, b, c)
    group = await start(a, b.username, c.username, kind="group", title="g")
    assert (await raw(a, "PUT", f"/blocks/{b.username}")).status_code == 204
    assert (await say(b, group, "you cannot hide from me")).status_code == 201
    assert await texts(a, group) == []  # the history hides it...
    listed = next(c for c in (await raw(a, "GET", "/conversations")).json()["items"] if c["id"] == group)
    preview = (listed["last_message"] or {}).get("preview")
    assert preview != "you cannot hide from me", "the blocked member's text reached the blocker as a preview"
    one = (await raw(a, "GET", f"/conversations/{group}")).json()
    assert (one["last_message"] or {}).get("preview") != "you cannot hide from me"
    assert one["unread"] == 0 and listed["unread"] == 0, "hidden messages count as unread"


async def test_blocking_someone_you_sent_a_request_to_deletes_that_request(server: Server) -> None:
    """docs/safety.md: a block deletes "any pending request between you". Only requests *to*
    the blocker are deleted: a request the blocker sent stays in the blocked member's inbox
    (with the blocker's messages), and they can still accept it."""
    asker, asked = await new_member(server), await new_member(server)
    conversation = await start(asker, asked.username)
    assert (await say(asker, conversation, "hello")).status_code == 201
    assert (await raw(asker, "PUT", f"/blocks/{asked.username}")).status_code == 204
    assert conversation not in await ids(asked, "/requests"), (
        "the blocker's request is still in the blocked's inbox"
    )
    assert (await raw(asked, "POST", f"/requests/{conversation}/accept")).status_code == 404


async def test_blocking_ends_a_group_request_either_way(server: Server) -> None:
    owner, friend, stranger = await new_member(server), await new_member(server), await new_member(server)
    await befriend(owner, friend)
    group = await start(owner, friend.username, kind="group", title="g")
    assert (
        await raw(owner, "POST", f"/conversations/{group}/members", json={"members": [stranger.username]})
    ).status_code == 200
    assert group in await ids(stranger, "/requests")
    assert (
        await raw(stranger, "PUT", f"/blocks/{owner.username}")
    ).status_code == 204  # to the blocker: deleted
    assert group not in await ids(stranger, "/requests")
    assert (
        await raw(owner, "POST", f"/conversations/{group}/members", json={"members": [stranger.username]})
    ).status_code == 404


async def test_the_asker_cannot_tell_a_declined_request_from_a_pending_one(server: Server) -> None:
    """A deleted request's sender "is not told". But once the recipient left, the send gate
    sees no partner and applies no rule: the asker's link, refused a moment ago, now goes
    through (201), and so do a 4th, 5th... message. That tells them; and the request's limits
    are gone (what they send would show if the recipient were ever back in it)."""
    asker, asked = await new_member(server), await new_member(server)
    conversation = await start(asker, asked.username)
    before = await say(asker, conversation, "see www.example.com")
    assert before.status_code == 403 and "no links" in before.json()["detail"]
    assert (await raw(asked, "DELETE", f"/requests/{conversation}")).status_code == 204
    after = await say(asker, conversation, "see www.example.com")
    assert same_answer(before, after)[0] == same_answer(before, after)[1], (
        "a declined request answers differently"
    )
    burst = [(await say(asker, conversation, f"hello {n}")).status_code for n in range(5)]
    assert burst.count(201) <= 3, f"no limit once the recipient left: {burst}"


async def test_the_asker_does_not_see_the_decliner_leave_the_member_list(server: Server) -> None:
    asker, asked = await new_member(server), await new_member(server)
    conversation = await start(asker, asked.username)
    assert asked.username in (await raw(asker, "GET", f"/conversations/{conversation}")).json()["members"]
    assert (await raw(asked, "DELETE", f"/requests/{conversation}")).status_code == 204
    members = (await raw(asker, "GET", f"/conversations/{conversation}")).json()["members"]
    assert asked.username in members, f"the asker sees the decline in the member list: {members}"


async def test_after_declining_a_request_the_decliner_can_still_write_to_the_asker(server: Server) -> None:
    """Declining makes the recipient leave the pair's one direct conversation (per model),
    which stays: from then on `POST /conversations` with the asker finds it, and answers 404
    as it is no longer the decliner's. Neither side ever has a working direct conversation
    again in that model (a block and unblock does not help)."""
    asker, asked = await new_member(server), await new_member(server)
    conversation = await start(asker, asked.username)
    assert (await raw(asked, "DELETE", f"/requests/{conversation}")).status_code == 204
    again = await raw(asked, "POST", "/conversations", json={"members": [asker.username]})
    assert again.status_code in (200, 201), (
        f"the decliner cannot start a direct conversation: {again.status_code} {again.text}"
    )
    assert (await say(asked, int(again.json()["id"]), "sorry, hi")).status_code in (201, 403)


async def test_a_blocked_member_reaches_the_blocker_by_to_device_messages(server: Server) -> None:
    """To-device messages (key exchange, verification requests) go to anyone who shares a
    conversation: a block changes nothing. The blocked member keeps an authenticated channel of
    arbitrary JSON (16 KiB each, 1000 per call) to every device of the blocker, and can pop up
    verification requests on them."""
    blocker, blocked, friend = await published(server), await published(server), await published(server)
    await befriend(blocker.client, blocked.client, friend.client)
    await start(blocker.client, blocked.client.username, friend.client.username, kind="group", title="g")
    assert (await raw(blocker.client, "PUT", f"/blocks/{blocked.client.username}")).status_code == 204
    stream = await blocker.client.connect(0)
    await asyncio.wait_for(stream.ready.wait(), 10)
    target = {blocker.user_id: {"*": {"from": "blocked", "body": "visit www.example.com"}}}
    sent = await raw(blocked.client, "PUT", f"/e2ee/sendToDevice/m.key.verification.request/{uuid.uuid4().hex}",
                     json={"messages": target})  # fmt: skip
    assert sent.status_code == 200
    marker = {blocker.user_id: {"*": {"from": "friend"}}}
    assert (await raw(friend.client, "PUT", f"/e2ee/sendToDevice/m.x/{uuid.uuid4().hex}",
                      json={"messages": marker})).status_code == 200  # fmt: skip
    while True:  # the first to-device event is the friend's unless the blocked member's got through
        event = await stream.next_event(10)
        if event.type == "e2ee.to_device":
            break
    assert event.data["event"]["content"] == {"from": "friend"}, (
        "the blocked member's to-device message reached the blocker"
    )
    await close_all(stream)


async def test_a_third_member_cannot_bring_the_blocked_into_a_group_with_the_blocker_unseen(
    server: Server,
) -> None:
    """Held: a friend adding the blocked member to a group the blocker is in (their choice);
    the blocked member's messages there stay hidden from the blocker."""
    a, b, c = await new_member(server), await new_member(server), await new_member(server)
    await befriend(a, c)
    await befriend(b, c)
    group = await start(c, a.username, kind="group", title="g")
    assert (await raw(a, "PUT", f"/blocks/{b.username}")).status_code == 204
    added = await raw(c, "POST", f"/conversations/{group}/members", json={"members": [b.username]})
    assert added.status_code == 200
    assert (await say(b, group, "found you")).status_code == 201
    assert "found you" not in await texts(a, group)
    assert (
        await raw(b, "POST", f"/conversations/{group}/members", json={"members": [unique()]})
    ).status_code in (403, 404)


@pytest.mark.parametrize("state", ["blocked", "asking"])
async def test_the_timer_is_no_channel_to_whom_you_cannot_message(server: Server, state: str) -> None:
    """Any member may set a conversation's disappearing timer, and every member gets a
    `conversation.updated` naming who did: the blocked member (in the direct conversation
    with the blocker) and a request's sender (beyond their 3 messages) keep a channel of
    unlimited notifications, and change the other's conversation."""
    actor, other = await new_member(server), await new_member(server)
    if state == "blocked":
        await befriend(actor, other)
    conversation = await start(actor, other.username)
    if state == "blocked":
        assert (await raw(other, "PUT", f"/blocks/{actor.username}")).status_code == 204
    else:
        for n in range(3):
            assert (await say(actor, conversation, f"hello {n}")).status_code == 201
    timer = await raw(actor, "PUT", f"/conversations/{conversation}/timer", json={"seconds": 3600})
    assert timer.status_code in (403, 409), (
        f"{state}: the timer changes the other's conversation: {timer.status_code}"
    )


async def test_a_removed_member_comes_back_only_as_a_request(server: Server) -> None:
    """Held: a former member (removed, or who deleted a request) re-added by a non-friend gets a
    request again; an upload to an e2ee request is refused as a file is."""
    owner, friend, stranger, victim = [await new_member(server) for _ in range(4)]
    await befriend(owner, friend)
    await befriend(owner, victim)
    await befriend(owner, stranger)
    group = await start(owner, friend.username, victim.username, stranger.username, kind="group", title="g")
    assert (
        await raw(
            owner, "PUT", f"/conversations/{group}/members/{stranger.username}/role", json={"role": "admin"}
        )
    ).status_code == 200
    assert (
        await raw(owner, "DELETE", f"/conversations/{group}/members/{victim.username}")
    ).status_code == 200
    assert (
        await raw(stranger, "POST", f"/conversations/{group}/members", json={"members": [victim.username]})
    ).status_code == 200
    assert group in await ids(victim, "/requests")
    assert (await raw(victim, "DELETE", f"/requests/{group}")).status_code == 204
    assert (
        await raw(stranger, "POST", f"/conversations/{group}/members", json={"members": [victim.username]})
    ).status_code == 200
    assert group in await ids(victim, "/requests") and group not in await ids(victim, "/conversations")
    e2ee_asker, e2ee_asked = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    secret = await start(e2ee_asker, e2ee_asked.username, encryption="e2ee")
    blob = await raw(e2ee_asker, "POST", f"/conversations/{secret}/attachments", content=b"\x00" * 64)
    assert blob.status_code == 403 and "no attachments" in blob.json()["detail"]
    await close_all(e2ee_asker, e2ee_asked)


# -- minors: found by a stranger --------------------------------------------------------------


async def test_unfollowing_tells_a_hidden_minor_from_a_name_nobody_has(server: Server) -> None:
    minor = await member_born(server, born_years_ago(16))
    stranger = await new_member(server)
    unknown = await raw(stranger, "DELETE", f"/following/{unique('nobody')}")
    hidden = await raw(stranger, "DELETE", f"/following/{minor.username}")
    assert same_answer(hidden, unknown)[0] == same_answer(hidden, unknown)[1], (
        hidden.status_code,
        unknown.status_code,
    )


async def test_adding_to_a_full_group_tells_a_hidden_minor_from_a_name_nobody_has(server: Server) -> None:
    """`GroupService.add` checks the group's size after finding the names but before asking
    who may be reached: with a full group, a hidden minor's name gets 422 ("at most 32
    members") where a name nobody has gets 404."""
    minor = await member_born(server, born_years_ago(16))
    owner = await new_member(server)
    others = [await new_member(server) for _ in range(31)]
    group = await start(owner, others[0].username, kind="group", title="full")
    for chunk in range(1, 31, 10):
        names = [o.username for o in others[chunk : chunk + 10]]
        assert (
            await raw(owner, "POST", f"/conversations/{group}/members", json={"members": names})
        ).status_code == 200
    assert len((await raw(owner, "GET", f"/conversations/{group}")).json()["members"]) == 32
    unknown = await raw(
        owner, "POST", f"/conversations/{group}/members", json={"members": [unique("nobody")]}
    )
    hidden = await raw(owner, "POST", f"/conversations/{group}/members", json={"members": [minor.username]})
    assert same_answer(hidden, unknown)[0] == same_answer(hidden, unknown)[1], (
        hidden.status_code,
        hidden.text,
    )
    await close_all(*others)


@pytest.mark.parametrize("route", ["start", "add"])
async def test_the_count_of_unknown_names_tells_a_hidden_minor_from_nobody(
    server: Server, route: str
) -> None:
    """The 404 says how many of the names are not active users. Names that are no account are
    counted first (`ConversationService.users`), hidden ones only if none is: a prober names the
    candidate with one made-up name and reads "1 of" (the candidate exists) or "2 of" (not)."""
    minor = await member_born(server, born_years_ago(16))
    stranger, friend = await new_member(server), await new_member(server)
    await befriend(stranger, friend)
    group = await start(stranger, friend.username, kind="group", title="g")

    async def probe(candidate: str) -> httpx.Response:
        names = [candidate, unique("made_up")]
        if route == "start":
            return await raw(
                stranger, "POST", "/conversations", json={"members": names, "kind": "group", "title": "t"}
            )
        return await raw(stranger, "POST", f"/conversations/{group}/members", json={"members": names})

    hidden, nobody = await probe(minor.username), await probe(unique("nobody"))
    assert same_answer(hidden, nobody)[0] == same_answer(hidden, nobody)[1], (
        hidden.json()["detail"],
        nobody.json()["detail"],
    )


@pytest.mark.parametrize("who", ["14", "16", "blocker"])
async def test_every_route_with_a_name_answers_a_stranger_as_for_nobody(server: Server, who: str) -> None:
    """Held: the routes of this feature that take a name give a stranger the same status and
    body for a hidden minor (or for whoever blocks them) as for a name that is no account."""
    stranger = await new_member(server)
    if who == "blocker":
        minor = await new_member(server)
        assert (await raw(minor, "PUT", f"/blocks/{stranger.username}")).status_code == 204
    else:
        minor = await member_born(server, born_years_ago(int(who)))
    nobody = unique("nobody")
    friend = await new_member(server)
    await befriend(stranger, friend)
    group = await start(stranger, friend.username, kind="group", title="g")
    probes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/users/{}", None),
        ("PUT", "/following/{}", None),
        ("PUT", "/blocks/{}", None),
        ("DELETE", "/blocks/{}", None),
        ("PUT", "/guardian/links/{}", None),
        ("DELETE", "/guardian/links/{}", None),
        ("GET", "/guardian/teens/{}", None),
        ("PUT", "/guardian/teens/{}/messaging", {"dm_audience": "no_one"}),
        ("POST", "/conversations", {"members": ["{}"]}),
        ("POST", "/conversations", {"members": ["{}"], "encryption": "e2ee"}),
        ("POST", "/conversations", {"members": ["{}", friend.username], "kind": "group", "title": "t"}),
        ("POST", f"/conversations/{group}/members", {"members": ["{}"]}),
        ("DELETE", f"/conversations/{group}/members/{{}}", None),
    ]
    if who == "blocker":
        # Blocking back is allowed (test_the_blocked_member_can_block_back): it tells the blocked
        # only that a name they were blocked by exists.
        probes.remove(("PUT", "/blocks/{}", None))
    for method, path, body in probes:
        answers = []
        for name in (minor.username, nobody):
            filled = (
                None
                if body is None
                else {k: [x.format(name) for x in v] if isinstance(v, list) else v for k, v in body.items()}
            )
            answers.append(await raw(stranger, method, path.format(name), json=filled))
        assert same_answer(*answers)[0] == same_answer(*answers)[1], (
            method,
            path,
            answers[0].text,
            answers[1].text,
        )
    keys = await raw(stranger, "POST", "/e2ee/keys/query", json={"device_keys": {
        f"@{minor.username}:keyhold.local": [], f"@{nobody}:keyhold.local": []}})  # fmt: skip
    assert keys.status_code == 200
    found = keys.json()["device_keys"]
    assert found.get(f"@{minor.username}:keyhold.local") == found.get(f"@{nobody}:keyhold.local")


async def test_a_stranger_brought_into_a_teens_group_gets_a_one_to_one_channel(server: Server) -> None:
    """The rules only weigh the one who adds against the one added. A teen's friend can have an
    adult stranger and the teen in one group; when the friend leaves, the stranger and the teen
    (who is hidden from them, and who accepts messages from friends only) are alone in a
    "group": messages, links and files both ways, no request, nothing the teen's setting or a
    guardian's "friends only" can stop."""
    teen = await member_born(server, born_years_ago(16))
    friend, stranger = await new_member(server), await new_member(server)
    await befriend(teen, friend)
    await befriend(friend, stranger)
    assert (await raw(teen, "PUT", "/account/messaging", json={"dm_audience": "friends"})).status_code == 200
    group = await start(friend, stranger.username, kind="group", title="hangout")
    added = await raw(friend, "POST", f"/conversations/{group}/members", json={"members": [teen.username]})
    if added.status_code == 200:
        await raw(teen, "POST", f"/requests/{group}/accept")
        assert (await raw(friend, "DELETE", f"/conversations/{group}/members/me")).status_code == 204
        await say(stranger, group, "hey, add me elsewhere: www.example.com")
    seen = await texts(teen, group) if added.status_code == 200 else []
    assert "hey, add me elsewhere: www.example.com" not in seen, "an adult non-friend messages a teen 1:1"


# -- guardian links -----------------------------------------------------------------------------


async def linked(server: Server, teen_birthdate: str) -> tuple[Client, Client, Client, int]:
    """An active guardian link, and a conversation of the teen with a friend."""
    teen = await member_born(server, teen_birthdate)
    guardian, friend = await new_member(server), await new_member(server)
    await teen.follow(guardian.username)
    await befriend(teen, friend)
    await raw(teen, "PUT", "/account/messaging", json={"dm_audience": "friends"})
    conversation = await start(friend, teen.username)
    assert (await raw(guardian, "PUT", f"/guardian/links/{teen.username}")).status_code == 200
    assert (await raw(teen, "PUT", f"/guardian/links/{guardian.username}")).status_code == 200
    assert (await raw(guardian, "GET", f"/guardian/teens/{teen.username}")).status_code == 200
    return teen, guardian, friend, conversation


async def test_a_guardian_link_ends_on_the_eighteenth_birthday(server: Server) -> None:
    """The link is "an adult and a member under 18", but nothing ends it at 18: the guardian
    goes on seeing with whom the (now adult) member talks, for as long as they do not notice
    and unlink."""
    teen, guardian, _friend, _ = await linked(server, born_years_ago(17))
    await asyncio.to_thread(set_birthdate, server, teen.username, born_years_ago(18))  # the birthday came
    assert (await raw(teen, "GET", "/account/messaging")).json()["band"] == "adult"
    view = await raw(guardian, "GET", f"/guardian/teens/{teen.username}")
    assert view.status_code == 404, f"the guardian still sees an adult's conversations: {view.text}"
    setting = await raw(
        guardian, "PUT", f"/guardian/teens/{teen.username}/messaging", json={"dm_audience": "no_one"}
    )
    assert setting.status_code == 404


@pytest.mark.parametrize("blocker", ["teen", "guardian"])
async def test_a_block_between_guardian_and_teen_ends_the_link(server: Server, blocker: str) -> None:
    """A block ends following and any request between the two, but not a guardian link: a teen
    who blocks their guardian stays watched (names of everyone they talk to) and their DM
    setting stays under the blocked adult's control; the blocked guardian even keeps sending
    them `guardian.setting` events."""
    teen, guardian, _friend, _conversation = await linked(server, born_years_ago(16))
    one, other = (teen, guardian) if blocker == "teen" else (guardian, teen)
    assert (await raw(one, "PUT", f"/blocks/{other.username}")).status_code == 204
    view = await raw(guardian, "GET", f"/guardian/teens/{teen.username}")
    assert view.status_code == 404, f"the link outlived a block: {view.text}"


async def test_a_guardian_link_needs_one_adult_and_one_minor_who_both_ask(server: Server) -> None:
    """Held: two teens cannot link, an adult cannot link to a minor who does not follow them,
    an adult's ask alone gives nothing, and the guardian's view has no content, title or
    preview."""
    teen = await member_born(server, born_years_ago(16))
    other_teen = await member_born(server, born_years_ago(17))
    adult = await new_member(server)
    bridge = await new_member(server)  # two minors cannot find each other: see the next test
    await befriend(teen, bridge)
    await befriend(other_teen, bridge)
    await raw(teen, "PUT", "/account/messaging", json={"dm_audience": "friends"})
    await raw(other_teen, "PUT", "/account/messaging", json={"dm_audience": "friends"})
    assert (await raw(teen, "PUT", f"/guardian/links/{other_teen.username}")).status_code in (404, 409)
    assert (await raw(adult, "PUT", f"/guardian/links/{teen.username}")).status_code == 404
    await teen.follow(adult.username)
    assert (await raw(adult, "PUT", f"/guardian/links/{teen.username}")).status_code == 200
    for path in (f"/guardian/teens/{teen.username}", f"/guardian/teens/{teen.username}/messaging"):
        method = "GET" if path.endswith(teen.username) else "PUT"
        answer = await raw(adult, method, path, json={"dm_audience": "no_one"} if method == "PUT" else None)
        assert answer.status_code == 404, (path, answer.status_code)
    assert (await raw(teen, "GET", "/account/messaging")).json()[
        "dm_audience"
    ] == "friends"  # the teen's own, untouched
    group = await start(bridge, teen.username, other_teen.username, kind="group", title="secret title")
    await say(teen, group, "secret words")
    assert (await raw(teen, "PUT", f"/guardian/links/{adult.username}")).status_code == 200
    view = await raw(adult, "GET", f"/guardian/teens/{teen.username}")
    assert view.status_code == 200
    assert "secret" not in view.text and bridge.username in view.text


async def test_two_teens_can_become_friends(server: Server) -> None:
    """A minor is findable only by members they follow, so a minor can follow only adults and
    minors who follow them first: between two minors neither can go first, and 16-17-year-olds
    ("DMs with friends") can never be friends, or message each other, at all."""
    a = await member_born(server, born_years_ago(16))
    b = await member_born(server, born_years_ago(17))
    first = await raw(a, "PUT", f"/following/{b.username}")
    second = await raw(b, "PUT", f"/following/{a.username}")
    assert (first.status_code, second.status_code) == (204, 204), (first.text, second.text)


async def test_a_member_can_block_a_minor_who_harasses_them_in_a_shared_group(server: Server) -> None:
    """`PUT /blocks/{name}` looks the name up as a profile would: a minor who does not follow the
    member is "no such user", even when the member sees them in a group and reads their messages.
    The member can neither block them nor have their messages hidden."""
    adult = await new_member(server)
    teen = await member_born(server, born_years_ago(17))
    friend = await new_member(server)  # the teen's friend, who brings both into one group
    await befriend(teen, friend)
    await raw(teen, "PUT", "/account/messaging", json={"dm_audience": "friends"})
    await befriend(friend, adult)
    await befriend(teen, adult)  # a minor and an adult share a group only as friends
    group = await start(friend, adult.username, teen.username, kind="group", title="g")
    await say(teen, group, "see you all at six")
    assert "see you all at six" in await texts(adult, group)
    await teen.unfollow(adult.username)  # the friendship ends; the group stays; the teen is hidden now
    assert (await raw(adult, "GET", f"/users/{teen.username}")).status_code == 404
    blocked = await raw(adult, "PUT", f"/blocks/{teen.username}")
    assert blocked.status_code == 204, (
        f"cannot block a group member who is a minor: {blocked.status_code} {blocked.text}"
    )


async def test_the_blocked_member_can_block_back(server: Server) -> None:
    """Someone who blocks you is "no such user" to you, also for `PUT /blocks`: you cannot
    block them in turn, so their unblocking later opens the way both ways again at once."""
    a, b = await new_member(server), await new_member(server)
    assert (await raw(a, "PUT", f"/blocks/{b.username}")).status_code == 204
    back = await raw(b, "PUT", f"/blocks/{a.username}")
    assert back.status_code == 204, back.text
    assert (await raw(a, "DELETE", f"/blocks/{b.username}")).status_code == 204
    assert (await raw(a, "POST", "/conversations", json={"members": [b.username]})).status_code == 404


async def test_accepting_and_declining_at_once_end_one_way(server: Server) -> None:
    for _ in range(3):
        asker, asked = await new_member(server), await new_member(server)
        conversation = await start(asker, asked.username)
        accept, decline, block = await asyncio.gather(
            raw(asked, "POST", f"/requests/{conversation}/accept"),
            raw(asked, "DELETE", f"/requests/{conversation}"),
            raw(asked, "POST", f"/requests/{conversation}/block"),
        )
        codes = [accept.status_code, decline.status_code, block.status_code]
        assert sorted(codes) == [204, 404, 404], codes
        in_list = conversation in await ids(asked, "/conversations")
        in_requests = conversation in await ids(asked, "/requests")
        assert not in_requests and in_list == (accept.status_code == 204)
        assert (b := await raw(asked, "GET", "/blocks")).status_code == 200
        assert (asker.username in str(b.json())) == (block.status_code == 204)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/blocks/a%00b", None),
        ("PUT", "/blocks/" + "x" * 65, None),
        ("PUT", "/blocks/%E2%80%AE", None),
        ("DELETE", "/blocks/%C0%80", None),
        ("PUT", "/guardian/links/..%2F..%2Fadmin", None),
        ("GET", "/guardian/teens/%00", None),
        ("PUT", "/guardian/teens/x/messaging", {"dm_audience": "friends\u0000"}),
        ("PUT", "/guardian/teens/x/messaging", [1, 2]),
        ("PUT", "/account/messaging", {"dm_audience": None}),
        ("PUT", "/account/messaging", {"dm_audience": "everyone", "x": 1}),
        ("POST", f"/requests/{2**63}/accept", None),
        ("POST", "/requests/-1/accept", None),
        ("DELETE", "/requests/9007199254740991", None),
        ("POST", "/requests/1e3/block", None),
        ("GET", "/requests?before=99999999999999999999999", None),
        ("GET", "/requests?limit=0", None),
        ("GET", "/requests?before=-5", None),
    ],
)
async def test_odd_input_on_the_new_routes_is_never_a_server_error(
    server: Server, method: str, path: str, body: Any
) -> None:
    member = await new_member(server)
    answer = await raw(member, method, path, json=body)
    assert answer.status_code < 500, (answer.status_code, answer.text)
    assert answer.status_code != 204 or method == "DELETE" or "requests" not in path


# -- the daily limit of message requests ------------------------------------------------------

REQUEST_LIMIT_POLICY = """\
[rate_limits.requests]
window_seconds = 86400
account = 2
new_account = 2
address = 1000
"""


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home") / "kh"
    srv = start_server(home, "sqlite", env={"KEYHOLD_RATE_LIMIT_SCALE": "1"}, policy=REQUEST_LIMIT_POLICY)
    yield srv
    stop_server(srv)


async def test_message_requests_count_against_the_daily_request_limit(limited_server: Server) -> None:
    """Group adds of strangers, one at a time, are requests and count (2 a day here)."""
    server = limited_server
    spammer = await new_member(server)
    victims = [await new_member(server) for _ in range(4)]
    friend = await new_member(server)
    await befriend(spammer, friend)
    group = await start(spammer, friend.username, kind="group", title="deals")  # friends: no request
    statuses = []
    for victim in victims:
        answer = await raw(
            spammer, "POST", f"/conversations/{group}/members", json={"members": [victim.username]}
        )
        statuses.append(answer.status_code)
    assert 429 in statuses, f"group adds of strangers: {statuses} with a limit of 2 requests a day"


@pytest.mark.parametrize("route", ["start", "add"])
async def test_one_call_with_many_strangers_is_as_many_requests(limited_server: Server, route: str) -> None:
    """`check_reach` charges one request token per call, whatever the number of strangers it
    makes requests to: with 2 requests a day, one group start (or add) reaches 31 strangers."""
    server = limited_server
    spammer, friend = await new_member(server), await new_member(server)
    await befriend(spammer, friend)
    victims = [await new_member(server) for _ in range(5)]
    names = [v.username for v in victims]
    if route == "start":
        answer = await raw(
            spammer, "POST", "/conversations", json={"members": names, "kind": "group", "title": "deals"}
        )
    else:
        group = await start(spammer, friend.username, kind="group", title="deals")
        answer = await raw(spammer, "POST", f"/conversations/{group}/members", json={"members": names})
    reached = [v for v in victims if await ids(v, "/requests")]
    assert answer.status_code == 429 or len(reached) <= 2, (
        f"{answer.status_code}: {len(reached)} requests for one token"
    )


async def test_a_young_teens_band_is_not_told_to_the_members_they_follow(server: Server) -> None:
    """A 13-15-year-old who follows someone is findable to them, and their answer to a start is
    "direct messaging is off at their age": that member learns the follower is 13 to 15. The
    answer for a member who accepts nothing (`no_one`) would say as much as is needed."""
    young = await member_born(server, born_years_ago(14))
    closed = await new_member(server)
    adult = await new_member(server)
    await young.follow(adult.username)
    await closed.follow(adult.username)
    await raw(closed, "PUT", "/account/messaging", json={"dm_audience": "no_one"})
    to_young = await raw(adult, "POST", "/conversations", json={"members": [young.username]})
    to_closed = await raw(adult, "POST", "/conversations", json={"members": [closed.username]})
    assert to_young.status_code == to_closed.status_code == 403
    detail = str(to_young.json()["detail"]).replace(young.username, "X")
    assert detail == str(to_closed.json()["detail"]).replace(closed.username, "X"), detail


# -- the send gate's cache, without a server --------------------------------------------------


def test_the_facts_cache_overflow_does_not_turn_known_adults_into_13_year_olds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`ContactService.gate_sends` clears its whole cache of (birthdate, region) when it passes
    100,000 entries and then loads only the ids that were missing: members of the same batch who
    were cached a moment ago are now unknown, and an unknown birthdate counts as the youngest
    band. Their sends are refused "direct messaging is off at your age" until the next batch."""
    from keyhold.core.contacts import ContactGate, SendCheck
    from keyhold.safety.contacts import ContactRules
    from keyhold.safety.policy import policy_file
    from keyhold.store import contacts as contact_store

    adult, partner, newcomer = 1, 2, 3
    born = "1990-05-17"
    monkeypatch.setattr(contact_store, "user_facts", lambda _conn, ids: {i: (born, "us") for i in ids})
    monkeypatch.setattr(contact_store, "blocks_among", lambda _conn, _ids: set())
    monkeypatch.setattr(contact_store, "follows_among", lambda _conn, _ids: set())
    monkeypatch.setattr(contact_store, "requests_in", lambda _conn, _ids: {})
    service = ContactGate()
    service.rules = ContactRules(policy_file(tmp_path / "absent.toml"))
    service._facts.update({adult: (born, "us"), partner: (born, "us")})
    service._facts.update({-n: (born, "us") for n in range(1, 100_001)})  # a long-running server
    checks = [SendCheck(adult, 10, False, "hi"), SendCheck(newcomer, 11, False, "hi")]
    answers = service.gate_sends(None, checks, {10: "direct", 11: "direct"},  # type: ignore[arg-type]
                                 {10: {adult: None, partner: None}, 11: {newcomer: None, partner: None}})  # fmt: skip
    assert all(not hasattr(a, "status") for a in answers), [getattr(a, "detail", a) for a in answers]
