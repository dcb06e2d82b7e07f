"""The minors' rules through the API (issue 9, item 1), on both databases, in both models:
minors are not findable by strangers (a member under 18 answers as an unknown user does, for
their profile, a follow, a conversation or a group add, until they follow that member); 13 to 15
cannot send, receive, start or be added; 16 and 17 message friends only, start at "no one" and
can never choose "everyone"; an adult reaches a minor who is not their friend in no form; on
the 16th and 18th birthdays the next rules apply; a guardian sees settings, never content."""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import PASSWORD, Server, new_member, raw, unique
from keyhold.sdk import Client
from test_contacts import befriend

pytestmark = pytest.mark.postgres
SERVER_POLICY = None  # the built-in defaults
UNKNOWN = "1 of the named members are not active users"


def born_years_ago(years: int, days_later: int = 0) -> str:
    today = dt.date.today()
    try:
        day = today.replace(year=today.year - years)
    except ValueError:  # 29 February in a year without one
        day = dt.date(today.year - years, 3, 1)
    return (day + dt.timedelta(days=days_later)).isoformat()


async def member_born(server: Server, birthdate: str) -> Client:
    return await Client.register(server.url, unique(), PASSWORD, birthdate=birthdate, region="us", e2ee=False)


@pytest.mark.parametrize("years", [14, 16])
async def test_a_stranger_finds_a_minor_as_an_unknown_user(server: Server, years: int) -> None:
    minor = await member_born(server, born_years_ago(years))
    stranger = await new_member(server)
    unknown = await raw(stranger, "GET", f"/users/{unique('nobody')}")
    hidden = await raw(stranger, "GET", f"/users/{minor.username}")
    assert unknown.status_code == hidden.status_code == 404
    assert {k: v for k, v in hidden.json().items() if k != "instance"} == {
        k: v for k, v in unknown.json().items() if k != "instance"
    }
    follow = await raw(stranger, "PUT", f"/following/{minor.username}")
    assert follow.status_code == 404 and follow.json()["detail"] == unknown.json()["detail"]
    assert (await raw(minor, "GET", f"/users/{minor.username}")).status_code == 200  # oneself
    assert (await raw(minor, "GET", f"/users/{stranger.username}")).status_code == 200  # adults are findable

    await minor.follow(stranger.username)  # the minor starts the friendship
    assert (await raw(stranger, "GET", f"/users/{minor.username}")).json()["username"] == minor.username
    await stranger.follow(minor.username)
    assert minor.username in await stranger.friends()


async def test_on_the_eighteenth_birthday_the_member_is_findable(server: Server) -> None:
    stranger = await new_member(server)
    turning_today = await member_born(server, born_years_ago(18))
    tomorrow = await member_born(server, born_years_ago(18, days_later=1))
    assert (await raw(stranger, "GET", f"/users/{turning_today.username}")).status_code == 200
    assert (await raw(stranger, "GET", f"/users/{tomorrow.username}")).status_code == 404


async def post(client: Client, path: str, body: dict[str, object]) -> tuple[int, str]:
    answer = await raw(client, "POST", path, json=body)
    return answer.status_code, str(answer.json().get("detail", "")) if answer.content else ""


@pytest.mark.parametrize("encryption", ["standard", "e2ee"])
async def test_13_to_15_cannot_start_be_messaged_or_be_added_even_by_friends(server: Server, encryption: str) -> None:
    young = await member_born(server, born_years_ago(14))
    friend = await new_member(server)
    await befriend(young, friend)
    body = {"members": [friend.username], "encryption": encryption}
    status, detail = await post(young, "/conversations", body)
    assert status == 403 and "off at your age" in detail
    status, detail = await post(friend, "/conversations", {"members": [young.username], "encryption": encryption})
    assert status == 403 and "does not accept" in detail  # worded as for anyone who accepts no one
    group = await raw(friend, "POST", "/conversations", json={"members": [unique()], "kind": "group", "title": "t"})
    assert group.status_code == 404  # (an unknown name) — now a real group, then the add:
    other = await new_member(server)
    await befriend(friend, other)
    group_id = (await raw(friend, "POST", "/conversations", json={"members": [other.username], "encryption": encryption,
                                                                  "kind": "group", "title": "t"})).json()["id"]  # fmt: skip
    status, detail = await post(friend, f"/conversations/{group_id}/members", {"members": [young.username]})
    assert status == 403 and "does not accept" in detail  # worded as for anyone who accepts no one
    setting = await raw(young, "PUT", "/account/messaging", json={"dm_audience": "friends"})
    assert setting.status_code == 403
    assert (await raw(young, "GET", "/account/messaging")).json() == {"dm_audience": "no_one", "chosen": None,
                                                                     "band": "young_teen"}  # fmt: skip


async def test_16_and_17_start_at_no_one_message_friends_only_and_never_everyone(server: Server) -> None:
    teen = await member_born(server, born_years_ago(16))
    friend, acquaintance, stranger = await new_member(server), await new_member(server), await new_member(server)
    await befriend(teen, friend)
    await teen.follow(acquaintance.username)  # findable to them, but not friends
    status, detail = await post(friend, "/conversations", {"members": [teen.username]})
    assert status == 403 and "does not accept" in detail  # the default: no one
    everyone = await raw(teen, "PUT", "/account/messaging", json={"dm_audience": "everyone"})
    assert everyone.status_code == 403 and "never everyone" in everyone.json()["detail"]
    assert (await raw(teen, "PUT", "/account/messaging", json={"dm_audience": "friends"})).status_code == 200

    status, _ = await post(friend, "/conversations", {"members": [teen.username]})
    assert status == 201  # friends: straight in, not a request
    status, detail = await post(acquaintance, "/conversations", {"members": [teen.username]})
    assert status == 403 and "friends only" in detail
    status, detail = await post(stranger, "/conversations", {"members": [teen.username]})
    assert (status, detail) == (404, UNKNOWN)  # not findable: as for a name that is no account
    status, detail = await post(teen, "/conversations", {"members": [acquaintance.username]})
    assert status == 403 and "friends only" in detail


async def test_an_ended_friendship_ends_a_teens_direct_messages(server: Server) -> None:
    teen = await member_born(server, born_years_ago(17))
    friend = await new_member(server)
    await befriend(teen, friend)
    conversation = (await raw(teen, "POST", "/conversations", json={"members": [friend.username]})).json()["id"]
    await friend.send(conversation, "no links or files from non-friends, but we are friends: www.example.com")
    await friend.unfollow(teen.username)
    status, detail = await post(friend, f"/conversations/{conversation}/messages", {"text": "still there?"})
    assert status == 403 and "friends only" in detail
    status, _ = await post(teen, f"/conversations/{conversation}/messages", {"text": "yes"})
    assert status == 403


async def test_an_adult_reaches_a_minor_who_is_not_their_friend_in_no_form(server: Server) -> None:
    adult = await new_member(server)
    teen = await member_born(server, born_years_ago(16))
    await raw(teen, "PUT", "/account/messaging", json={"dm_audience": "friends"})
    friend = await new_member(server)
    await befriend(adult, friend)
    group = (await raw(adult, "POST", "/conversations", json={"members": [friend.username], "kind": "group",
                                                              "title": "t"})).json()["id"]  # fmt: skip
    attempts = [
        ("/conversations", {"members": [teen.username]}),  # a direct conversation, or a request
        ("/conversations", {"members": [teen.username], "encryption": "e2ee"}),
        ("/conversations", {"members": [teen.username, friend.username], "kind": "group", "title": "x"}),
        (f"/conversations/{group}/members", {"members": [teen.username]}),
    ]
    for path, body in attempts:
        assert await post(adult, path, body) == (404, UNKNOWN), (path, body)
    await teen.follow(adult.username)  # findable now, still not a friend
    for path, body in attempts:
        status, detail = await post(adult, path, body)
        assert status == 403 and "friends only" in detail, (path, body)
    assert teen.username not in [c.id for c in await teen.conversations()]


async def test_the_16th_birthday_turns_direct_messaging_on(server: Server) -> None:
    friend = await new_member(server)
    sixteen_today = await member_born(server, born_years_ago(16))
    sixteen_tomorrow = await member_born(server, born_years_ago(16, days_later=1))
    for teen in (sixteen_today, sixteen_tomorrow):
        await befriend(teen, friend)
        await raw(teen, "PUT", "/account/messaging", json={"dm_audience": "friends"})
    assert (await post(friend, "/conversations", {"members": [sixteen_today.username]}))[0] == 201
    assert (await post(friend, "/conversations", {"members": [sixteen_tomorrow.username]}))[0] == 403


async def test_a_guardian_sees_settings_and_partners_never_content(server: Server) -> None:
    teen = await member_born(server, born_years_ago(16))
    guardian, friend, other_adult = await new_member(server), await new_member(server), await new_member(server)
    await teen.follow(guardian.username)  # so that the guardian can find the teen
    await befriend(teen, friend)
    await raw(teen, "PUT", "/account/messaging", json={"dm_audience": "friends"})
    conversation = (await raw(friend, "POST", "/conversations", json={"members": [teen.username]})).json()["id"]
    await friend.send(conversation, "the secret plan for saturday")

    asked = await raw(guardian, "PUT", f"/guardian/links/{teen.username}")
    assert asked.json()["items"][0]["status"] == "waiting_for_them"
    assert (await raw(guardian, "GET", f"/guardian/teens/{teen.username}")).status_code == 404  # not yet
    accepted = await raw(teen, "PUT", f"/guardian/links/{guardian.username}")
    assert accepted.json()["items"][0] | {"since": None} == {
        "username": guardian.username, "role": "guardian", "status": "active", "dm_audience": None, "since": None,
    }  # fmt: skip
    view = await raw(guardian, "GET", f"/guardian/teens/{teen.username}")
    assert view.status_code == 200
    seen = view.json()
    assert seen["dm_audience"] == "friends" and seen["band"] == "teen"
    assert [(c["id"], c["with"]) for c in seen["conversations"]] == [(conversation, [friend.username])]
    assert "secret plan" not in view.text and "last_message" not in view.text and "title" not in view.text

    off = await raw(guardian, "PUT", f"/guardian/teens/{teen.username}/messaging", json={"dm_audience": "no_one"})
    assert off.status_code == 200 and off.json()["dm_audience"] == "no_one"
    await raw(teen, "PUT", "/account/messaging", json={"dm_audience": "friends"})  # the stricter one stays
    group = await post(friend, "/conversations", {"members": [teen.username], "kind": "group", "title": "x"})
    assert group[0] == 403 and "does not accept" in group[1]
    everyone = await raw(guardian, "PUT", f"/guardian/teens/{teen.username}/messaging", json={"dm_audience": "everyone"})
    assert everyone.status_code == 422

    for outsider in (other_adult, friend):
        assert (await raw(outsider, "GET", f"/guardian/teens/{teen.username}")).status_code == 404
    assert (await raw(teen, "GET", f"/guardian/teens/{guardian.username}")).status_code == 404
    adults = await raw(other_adult, "PUT", f"/guardian/links/{guardian.username}")
    assert adults.status_code == 409  # two adults: no guardian link
    assert (await raw(teen, "DELETE", f"/guardian/links/{guardian.username}")).status_code == 204
    assert (await raw(guardian, "GET", f"/guardian/teens/{teen.username}")).status_code == 404
