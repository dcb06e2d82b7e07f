"""Minors are not findable by strangers (issue 9, item 1), on both databases: to a stranger a
member under 18 answers as an unknown user does, for their profile and for a follow, until they
follow that member (how a friendship starts); on their 18th birthday the rule stops."""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import PASSWORD, Server, new_member, raw, unique
from keyhold.sdk import Client

pytestmark = pytest.mark.postgres


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
