"""Who may message whom, in groups and beside conversations (issue 9, items 1-3): ways around
the minors' rules and message requests that an attacker's review found (2026-12-04). A direct
conversation checks both sides on every send; a group checks each member against each
newcomer when they join, and these are what a send or a change there must still check.

Run: /tmp/t -p no:xdist -q tests/test_contacts_in_groups.py"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from conftest import Server, new_member, raw, start_server, stop_server
from keyhold.sdk import Client
from staff_helpers import add_all_staff, login_all
from stream_helpers import WAIT, close_all, live, next_of
from test_contacts import befriend
from test_contacts_attacks import ids, say, set_birthdate, start, texts, upload
from test_safety_minors import born_years_ago, member_born
from test_safety_verdicts import HOLD_WORD, RULES, held_case, staff_call

pytestmark = pytest.mark.postgres
SERVER_POLICY = None  # the built-in defaults: a non-friend's first message is a request
LINK = "visit www.example.com now"


async def send_file(client: Client, conversation_id: int) -> tuple[int, int]:
    """An upload, then the send that carries it: both statuses (0: no send after a refused upload)."""
    up = await upload(client, conversation_id)
    if up.status_code != 201:
        return up.status_code, 0
    sent = await say(client, conversation_id, "a file", attachment_id=up.json()["id"])
    return up.status_code, sent.status_code


# -- a group that is a request: its limits hold for every member who is no friend --------------


async def test_a_group_requests_other_members_reach_it_only_within_its_limits(server: Server) -> None:
    """The adder's friend (or second account), no friend of the one asked, is held to the
    request's limits as the adder is: three texts, no links, no files, until it is accepted.
    The group's other members get everything."""
    spammer, puppet, victim = [await new_member(server) for _ in range(3)]
    await befriend(spammer, puppet)
    group = await start(spammer, victim.username, puppet.username, kind="group", title="deals")
    assert group in await ids(victim, "/requests")
    plain = [(await say(puppet, group, f"plain {n}")).status_code for n in range(5)]
    linked = (await say(puppet, group, LINK)).status_code
    upload_status, file_status = await send_file(puppet, group)
    # Stored (the adder reads them all): refusing would tell the puppet who has not accepted.
    assert plain == [201] * 5 and linked == 201 and (upload_status, file_status) == (201, 201)
    seen = await texts(victim, group)
    assert [t for t in seen if t.startswith("plain")] == ["plain 0", "plain 1", "plain 2"], seen
    assert LINK not in seen and "a file" not in seen
    assert len(await texts(spammer, group)) == 7
    assert (await raw(victim, "POST", f"/requests/{group}/accept")).status_code == 204
    assert (await say(puppet, group, LINK)).status_code == 201
    assert LINK in await texts(victim, group)  # accepted: no limits


async def test_a_friend_in_a_group_request_reaches_the_one_asked_whole(server: Server) -> None:
    """The limits are on strangers: a friend of the one asked, in the same group, is not held."""
    spammer, friend, victim = [await new_member(server) for _ in range(3)]
    await befriend(spammer, friend)
    await befriend(friend, victim)
    group = await start(spammer, victim.username, friend.username, kind="group", title="party")
    assert group in await ids(victim, "/requests")
    for n in range(4):
        assert (await say(friend, group, f"{LINK} {n}")).status_code == 201
    assert [t for t in await texts(victim, group) if LINK in t] == [f"{LINK} {n}" for n in range(4)]


async def test_a_group_request_cannot_be_renamed_by_a_stranger_to_the_one_asked(server: Server) -> None:
    """A title reaches the requests inbox as a text does: while the request waits, no member who
    is no friend of the one asked may change it, and a request's first title may carry no link."""
    stranger, puppet, victim = [await new_member(server) for _ in range(3)]
    await befriend(stranger, puppet)
    linked = await raw(
        stranger,
        "POST",
        "/conversations",
        json={"members": [victim.username], "kind": "group", "title": LINK},
    )
    assert linked.status_code == 403 and "link" in linked.json()["detail"], linked.text
    assert not await ids(victim, "/requests")  # nothing was made
    group = await start(stranger, victim.username, puppet.username, kind="group", title="hello")
    promoted = await raw(
        stranger, "PUT", f"/conversations/{group}/members/{puppet.username}/role", json={"role": "admin"}
    )
    assert promoted.status_code == 200, promoted.text
    for renamer in (stranger, puppet):
        renamed = await raw(renamer, "PATCH", f"/conversations/{group}", json={"title": "a new name"})
        assert renamed.status_code == 403 and "accept" in renamed.json()["detail"], renamed.text
    requests = (await raw(victim, "GET", "/requests")).json()["items"]
    assert [c["title"] for c in requests if c["id"] == group] == ["hello"]
    assert (await raw(victim, "POST", f"/requests/{group}/accept")).status_code == 204
    renamed = await raw(stranger, "PATCH", f"/conversations/{group}", json={"title": "a new name"})
    assert renamed.status_code == 200, renamed.text


# -- minors in groups: what the joining check cannot see ---------------------------------------


async def _open_to_friends(*teens: Client) -> None:
    """Teens start at "no one"; "friends" lets a friend add them to a group."""
    for teen in teens:
        answer = await raw(teen, "PUT", "/account/messaging", json={"dm_audience": "friends"})
        assert answer.status_code == 200, answer.text


async def _teens_in_a_group(server: Server, stays: bool) -> tuple[Client, Client, Client, int]:
    """Two teens who are not friends, put in a group by a friend of both (who stays or leaves)."""
    t1 = await member_born(server, born_years_ago(16))
    t2 = await member_born(server, born_years_ago(17))
    friend = await new_member(server)
    await befriend(t1, friend)
    await befriend(t2, friend)
    await _open_to_friends(t1, t2)
    group = await start(friend, t1.username, t2.username, kind="group", title="hangout")
    if not stays:
        assert (await raw(friend, "DELETE", f"/conversations/{group}/members/me")).status_code == 204
    return t1, t2, friend, group


async def test_a_teen_gets_no_links_or_files_from_a_teen_who_is_no_friend_in_a_group(server: Server) -> None:
    t1, t2, friend, group = await _teens_in_a_group(server, stays=True)
    assert (await say(t2, group, "hi all")).status_code == 201
    assert (await say(t2, group, LINK)).status_code == 201
    assert await send_file(t2, group) == (201, 201)
    assert await texts(t1, group) == ["hi all"]
    assert await texts(friend, group) == ["hi all", LINK, "a file"]


async def test_two_teens_alone_in_a_group_cannot_send_each_other_links_or_files(server: Server) -> None:
    """With no one else left to reach, a send the other may not get is refused, not hidden."""
    t1, t2, _friend, group = await _teens_in_a_group(server, stays=False)
    assert (await say(t2, group, "hi")).status_code == 201
    refused = await say(t2, group, LINK)
    assert refused.status_code == 403 and "link" in refused.json()["detail"], refused.text
    assert (await upload(t2, group)).status_code == 403
    assert await texts(t1, group) == ["hi"]


async def test_a_member_turning_18_no_longer_reaches_a_minor_who_is_no_friend_in_a_group(
    server: Server,
) -> None:
    """Put in a group as two teens; on the 18th birthday one is an adult stranger to the other,
    who is hidden from them everywhere else: their messages no longer reach the minor. (The
    birthday comes before the group's first send: the server keeps birthdates, which never
    change, once a send has read them.)"""
    minor = await member_born(server, born_years_ago(16))
    turning = await member_born(server, born_years_ago(18, days_later=1))  # 17, 18 tomorrow
    friend = await member_born(server, born_years_ago(17))  # a teen friend of both
    await befriend(minor, friend)
    await befriend(turning, friend)
    await _open_to_friends(minor, turning)
    group = await start(friend, minor.username, turning.username, kind="group", title="class")
    await asyncio.to_thread(set_birthdate, server, turning.username, born_years_ago(18))
    assert (await raw(turning, "GET", "/account/messaging")).json()["band"] == "adult"
    assert (await say(turning, group, "after")).status_code == 201  # the friend still reads it
    assert (await say(friend, group, "hello")).status_code == 201
    assert await texts(minor, group) == ["hello"]
    assert await texts(friend, group) == ["after", "hello"]
    assert (await raw(friend, "DELETE", f"/conversations/{group}/members/me")).status_code == 204
    alone = await say(turning, group, "just us")
    assert alone.status_code == 403 and "do not reach" in alone.json()["detail"], alone.text
    assert await texts(minor, group) == ["hello"]


# -- to-device messages: a channel beside conversations ---------------------------------------


async def _to_device(sender: Client, to: Client, body: str) -> int:
    content = {"messages": {to.user_id: {"*": {"body": body}}}}
    path = f"/e2ee/sendToDevice/m.room.message/{uuid.uuid4().hex}"
    return (await raw(sender, "PUT", path, json=content)).status_code


async def test_members_under_the_messaging_age_send_and_get_no_to_device_messages(server: Server) -> None:
    y1 = await member_born(server, born_years_ago(14))
    y2 = await member_born(server, born_years_ago(13))
    adult = await new_member(server)
    await befriend(y1, y2)
    await befriend(y1, adult)
    assert await _to_device(y1, y2, "hi") == 403
    assert await _to_device(adult, y1, "from an adult friend") == 200  # dropped, as for a blocker
    stream = await y1.connect(0)  # everything kept for the device, from the start
    try:
        await asyncio.wait_for(stream.ready.wait(), WAIT)
        kept = [await stream.next_event(WAIT) for _ in range(stream.last_seq)]
    finally:
        await close_all(stream)
    assert "e2ee.to_device" not in [event.type for event in kept]


async def test_whoever_deletes_a_request_gets_no_to_device_messages_from_its_sender(server: Server) -> None:
    stranger, victim, friend = [await new_member(server) for _ in range(3)]
    await befriend(victim, friend)
    conversation = await start(stranger, victim.username)
    assert (await raw(victim, "DELETE", f"/requests/{conversation}")).status_code == 204
    stream = await live(victim)
    try:
        assert await _to_device(stranger, victim, "still here") == 200  # dropped without a word
        assert await _to_device(friend, victim, "from a friend") == 200
        event = await next_of(stream, "e2ee.to_device", skip=None)
        assert event.data["event"]["content"]["body"] == "from a friend"
    finally:
        await close_all(stream)


# -- message requests from one address ---------------------------------------------------------

# Requests: three a day per account, four per address. To-device: two calls per account.
LIMITS_POLICY = """\
[rate_limits.requests]
window_seconds = 86400
account = 3
new_account = 3
address = 4

[rate_limits.to_device]
window_seconds = 3600
account = 2
new_account = 2
address = 100
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home") / "kh"
    srv = start_server(home, "sqlite", env={"KEYHOLD_RATE_LIMIT_SCALE": "1"}, policy=LIMITS_POLICY)
    yield srv
    stop_server(srv)


async def test_message_requests_from_one_address_count_together(limited: Server) -> None:
    """Three a day per account, four per address: two accounts on one address make four."""
    spammers = [await new_member(limited) for _ in range(2)]
    victims = [await new_member(limited) for _ in range(6)]
    statuses = []
    for n, victim in enumerate(victims):
        answer = await raw(spammers[n // 3], "POST", "/conversations", json={"members": [victim.username]})
        statuses.append(answer.status_code)
    assert statuses[:4] == [201] * 4 and statuses[4:] == [429, 429], statuses
    assert [bool(await ids(v, "/requests")) for v in victims] == [True] * 4 + [False] * 2


# -- what a hidden message's deletion tells ----------------------------------------------------


async def test_deleting_a_hidden_message_tells_no_one_it_was_hidden_from(server: Server) -> None:
    """A message hidden from a member (they block its sender) is never theirs: nor is the news
    that it was deleted."""
    blocker, blocked, friend = [await new_member(server) for _ in range(3)]
    await befriend(blocker, blocked, friend)
    group = await start(friend, blocker.username, blocked.username, kind="group", title="g")
    assert (await raw(blocker, "PUT", f"/blocks/{blocked.username}")).status_code == 204
    hidden = await say(blocked, group, "not for the blocker")
    assert hidden.status_code == 201
    stream = await live(blocker)
    try:
        gone = await raw(blocked, "DELETE", f"/messages/{hidden.json()['id']}")
        assert gone.status_code == 200, gone.text
        assert (await say(friend, group, "after")).status_code == 201
        seen = [await stream.next_event(WAIT)]
        while seen[-1].type != "message.new":
            seen.append(await stream.next_event(WAIT))
        assert [event.type for event in seen] == ["message.new"]
        assert seen[-1].data["message"]["text"] == "after"
    finally:
        await close_all(stream)


async def test_to_device_messages_are_rate_limited(limited: Server) -> None:
    """Up to 1,000 messages of 16 KiB a call to a friend's devices: calls are counted too."""
    sender, friend, other = [await new_member(limited) for _ in range(3)]
    await befriend(sender, friend)
    assert [await _to_device(sender, friend, f"m{n}") for n in range(2)] == [200, 200]
    content = {"messages": {friend.user_id: {"*": {"body": "one too many"}}}}
    refused = await raw(sender, "PUT", f"/e2ee/sendToDevice/m.room.message/{uuid.uuid4().hex}", json=content)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0, refused.text
    assert refused.json()["limit"] == "to_device"
    await befriend(other, friend)
    assert await _to_device(other, friend, "another sender") == 200  # its own budget


# -- a second review (2026-12-04): what the first fixes left open -----------------------------


async def test_a_direct_request_has_no_link_in_its_title(server: Server) -> None:
    stranger, victim = await new_member(server), await new_member(server)
    body = {"members": [victim.username], "kind": "direct", "title": LINK}
    refused = await raw(stranger, "POST", "/conversations", json=body)
    assert refused.status_code == 403 and "link" in refused.json()["detail"], refused.text
    assert not await ids(victim, "/requests")


async def test_a_deleted_request_looks_unanswered_to_its_sender_in_the_key_directory(server: Server) -> None:
    """Its sender sees no change: the recipient's device keys stay listed to them (only their
    to-device messages are dropped, see above)."""
    sender, recipient = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    try:
        conversation = await start(sender, recipient.username, encryption="e2ee")
        query = {"device_keys": {recipient.user_id: []}}
        before = (await raw(sender, "POST", "/e2ee/keys/query", json=query)).json()["device_keys"]
        assert before.get(recipient.user_id)
        assert (await raw(recipient, "DELETE", f"/requests/{conversation}")).status_code == 204
        after = (await raw(sender, "POST", "/e2ee/keys/query", json=query)).json()["device_keys"]
        assert after == before
    finally:
        await close_all(sender, recipient)


async def test_an_e2ee_group_request_gets_its_three_messages_from_a_stranger(server: Server) -> None:
    """The service cannot see links in e2ee content: as in a direct e2ee request, the limit of
    three messages holds, and they reach the one asked."""
    adder, friend, victim = [await new_member(server, e2ee=True) for _ in range(3)]
    try:
        await befriend(adder, friend)
        group = await start(
            adder, victim.username, friend.username, kind="group", title="g", encryption="e2ee"
        )
        assert group in await ids(victim, "/requests")
        for n in range(4):
            await adder.send(group, f"hello {n}")
        assert [m.text for m in await victim.history(group)] == ["hello 0", "hello 1", "hello 2"]
        assert len(await friend.history(group)) == 4
    finally:
        await close_all(adder, friend, victim)


async def test_a_link_in_a_group_name_needs_a_friend_of_everyone_in_it(server: Server) -> None:
    """A title reaches every member: a link in one would reach a teen from a non-friend. The
    rule is asked of every member alike, so the refusal tells no one's age."""
    t1, t2, friend, teens = await _teens_in_a_group(server, stays=True)
    promoted = await raw(
        friend, "PUT", f"/conversations/{teens}/members/{t2.username}/role", json={"role": "admin"}
    )
    assert promoted.status_code == 200, promoted.text
    linked = await raw(t2, "PATCH", f"/conversations/{teens}", json={"title": LINK})
    assert linked.status_code == 403, linked.text
    assert (await raw(t2, "PATCH", f"/conversations/{teens}", json={"title": "plans"})).status_code == 200
    assert (await raw(t1, "GET", f"/conversations/{teens}")).json()["title"] == "plans"
    assert (await raw(friend, "PATCH", f"/conversations/{teens}", json={"title": LINK})).status_code == 200
    # Adults only, the renamer no friend of one of them: the same answer, word for word.
    owner, pal, acquaintance = [await new_member(server) for _ in range(3)]
    await befriend(owner, pal)
    await befriend(pal, acquaintance)
    await befriend(owner, acquaintance)
    adults = await start(owner, pal.username, acquaintance.username, kind="group", title="club")
    assert (await raw(owner, "DELETE", f"/following/{acquaintance.username}")).status_code == 204
    same = await raw(owner, "PATCH", f"/conversations/{adults}", json={"title": LINK})
    assert same.status_code == 403 and same.json()["detail"] == linked.json()["detail"], same.text


async def test_a_refusal_in_a_group_does_not_tell_an_adult_someone_is_under_18(server: Server) -> None:
    minor = await member_born(server, born_years_ago(16))
    turning = await member_born(server, born_years_ago(18, days_later=1))
    friend = await member_born(server, born_years_ago(17))
    await befriend(minor, friend)
    await befriend(turning, friend)
    await _open_to_friends(minor, turning)
    group = await start(friend, minor.username, turning.username, kind="group", title="class")
    await asyncio.to_thread(set_birthdate, server, turning.username, born_years_ago(18))
    assert (await raw(friend, "DELETE", f"/conversations/{group}/members/me")).status_code == 204
    refused = await say(turning, group, "hi")
    assert refused.status_code == 403, refused.text
    detail = refused.json()["detail"]
    assert not {"18", "under", "minor", "age"} & set(detail.replace("(", " ").replace(")", " ").split()), (
        detail
    )


async def test_whoever_is_asked_to_join_sees_nothing_sent_before(server: Server) -> None:
    """Links and files posted before a stranger is added would reach them with the request:
    until they accept, the one asked sees what is sent from the moment they were asked."""
    spammer, puppet, victim = [await new_member(server) for _ in range(3)]
    await befriend(spammer, puppet)
    group = await start(spammer, puppet.username, kind="group", title="deals")
    assert (await say(spammer, group, LINK)).status_code == 201
    up = await upload(spammer, group)
    assert up.status_code == 201
    assert (await say(spammer, group, "a file", attachment_id=up.json()["id"])).status_code == 201
    added = await raw(spammer, "POST", f"/conversations/{group}/members", json={"members": [victim.username]})
    assert added.status_code == 200, added.text
    stream = await live(victim)
    try:
        # Deleting what they never had tells them nothing; the next event is the welcome.
        first = (await texts(spammer, group))[0]
        assert first == LINK
        earlier = (await raw(spammer, "GET", f"/conversations/{group}/messages")).json()["items"][0]["id"]
        assert (await raw(spammer, "DELETE", f"/messages/{earlier}")).status_code == 200
        assert (await say(spammer, group, "welcome")).status_code == 201
        events = [await stream.next_event(WAIT)]
        while events[-1].type != "message.new":
            events.append(await stream.next_event(WAIT))
        assert [e.type for e in events] == ["message.new"]
    finally:
        await close_all(stream)
    assert await texts(victim, group) == ["welcome"]
    requests = (await raw(victim, "GET", "/requests")).json()["items"]
    assert [(c["last_message"]["preview"], c["unread"]) for c in requests if c["id"] == group] == [
        ("welcome", 1)
    ]
    assert (await raw(victim, "GET", f"/conversations/{group}")).json()["unread"] == 1
    assert (await raw(victim, "GET", f"/attachments/{up.json()['id']}")).status_code == 404
    assert (await raw(victim, "POST", f"/requests/{group}/accept")).status_code == 204
    assert await texts(victim, group) == [None, "a file", "welcome"]  # accepted: a member like any


async def test_a_file_sent_after_the_one_asked_was_asked_is_theirs_whenever_it_was_uploaded(
    server: Server,
) -> None:
    spammer, puppet, victim = [await new_member(server) for _ in range(3)]
    await befriend(spammer, puppet)
    await befriend(puppet, victim)
    group = await start(spammer, puppet.username, kind="group", title="deals")
    up = await upload(puppet, group)
    assert up.status_code == 201
    added = await raw(spammer, "POST", f"/conversations/{group}/members", json={"members": [victim.username]})
    assert added.status_code == 200, added.text
    assert (await say(puppet, group, "the file", attachment_id=up.json()["id"])).status_code == 201
    assert await texts(victim, group) == ["the file"]
    assert (await raw(victim, "GET", f"/attachments/{up.json()['id']}")).status_code == 200


# -- a held message released after someone was asked ------------------------------------------


@pytest.fixture(scope="module")
def holding(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose rules hold `HOLD_WORD` for review, with requests on."""
    home = tmp_path_factory.mktemp("home") / "kh"
    home.mkdir()
    (home / "safety-rules.toml").write_text(RULES)
    srv = start_server(home, "sqlite", policy=None)
    yield srv
    stop_server(srv)


async def test_a_held_message_released_after_someone_was_asked_does_not_reach_them(holding: Server) -> None:
    moderator = (await login_all(holding, add_all_staff(holding, {"mod": ("moderator", "us")})))["mod"]
    spammer, puppet, victim = [await new_member(holding) for _ in range(3)]
    try:
        await befriend(spammer, puppet)
        group = await start(spammer, puppet.username, kind="group", title="deals")
        held = await say(spammer, group, f"{HOLD_WORD} {LINK}")
        assert held.json()["status"] == "pending_review", held.text
        added = await raw(
            spammer, "POST", f"/conversations/{group}/members", json={"members": [victim.username]}
        )
        assert added.status_code == 200, added.text
        stream = await live(victim)
        case = await held_case(moderator, held.json()["id"])
        await staff_call(moderator, "POST", f"/staff/held/{case['id']}/release", json={"note": "fine"})
        assert (await say(spammer, group, "welcome")).status_code == 201
        event = await stream.next_event(WAIT)
        await close_all(stream)
        assert event.type == "message.new" and event.data["message"]["text"] == "welcome"
        assert [
            m["text"] for m in (await raw(puppet, "GET", f"/conversations/{group}/messages")).json()["items"]
        ] == [
            f"{HOLD_WORD} {LINK}",
            "welcome",
        ]
    finally:
        await moderator.close()
