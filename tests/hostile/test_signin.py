"""Findings 2 and 8: password guessing, for members and staff.

Sign-in attempts are throttled per client address and per account, atomically: 40 wrong
sign-ins sent at once are evaluated at most 5 times, the rest get 429 with Retry-After. The
guesser's address is throttled harder than the account, so a stranger who names an account
cannot lock its owner out; an unknown name answers exactly like a throttled real one. Password
hashing has a bounded queue: past it, sign-ins get 503 with Retry-After at once, and requests
made with a token are not held up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest

from conftest import PASSWORD, Server, new_member, start_server, stop_server, unique
from hostile_helpers import assert_problem, fresh_address, http, member_in_process, service_in_process
from keyhold.core.errors import Problem
from keyhold.core.signin import client_of
from staff_helpers import STAFF_PASSWORD, server_with_staff

WRONG = "not the password, a guess"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def guarded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    with server_with_staff(tmp_path_factory, "signin", request.param, {"staff_guarded": ("moderator", "us")}) as (server, secrets):
        yield server, secrets["staff_guarded"]


async def staff_signin(server: Server, address: str, username: str, password: str, code: str) -> httpx.Response:
    async with http(server, address=address) as client:
        return await client.post("/staff/sessions", json={"username": username, "password": password, "totp": code})


async def member_login(server: Server, address: str, username: str, password: str) -> httpx.Response:
    async with http(server, address=address) as client:
        return await client.post("/sessions", json={"username": username, "password": password})


def assert_throttled(response: httpx.Response) -> None:
    assert_problem(response, 429)
    assert int(response.headers["retry-after"]) > 0


async def test_forty_concurrent_wrong_staff_signins_are_evaluated_at_most_five_times(
    guarded: tuple[Server, str],
) -> None:
    server, secret = guarded
    guesser, owner = fresh_address(), fresh_address()

    answers = await asyncio.gather(
        *(staff_signin(server, guesser, "staff_guarded", WRONG, "000000") for _ in range(40))
    )

    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= 5, statuses
    for response in answers:
        if response.status_code == 429:
            assert_throttled(response)
    # Right after, the right password and code from the guessing address are refused too ...
    code = pyotp.TOTP(secret).at(time.time())
    assert_throttled(await staff_signin(server, guesser, "staff_guarded", STAFF_PASSWORD, code))
    # ... while the owner, elsewhere, is not locked out by a stranger's guesses.
    assert (await staff_signin(server, owner, "staff_guarded", STAFF_PASSWORD, code)).status_code == 201


async def test_an_unknown_staff_name_answers_like_a_throttled_real_one(guarded: tuple[Server, str]) -> None:
    server, _ = guarded
    real_address, unknown_address = fresh_address(), fresh_address()
    real = [await staff_signin(server, real_address, "staff_guarded", WRONG, "000000") for _ in range(7)]
    nobody = unique("nostaff")
    unknown = [await staff_signin(server, unknown_address, nobody, WRONG, "000000") for _ in range(7)]

    assert [r.status_code for r in real] == [r.status_code for r in unknown]
    assert [r.status_code for r in real][-1] == 429
    assert [r.json()["detail"] for r in real] == [r.json()["detail"] for r in unknown]


async def test_member_sign_in_is_throttled_per_address(guarded: tuple[Server, str]) -> None:
    server, _ = guarded
    alice = await new_member(server)
    guesser, elsewhere = fresh_address(), fresh_address()

    answers = [await member_login(server, guesser, alice.username, WRONG) for _ in range(6)]

    assert [r.status_code for r in answers] == [401] * 5 + [429]
    assert_throttled(answers[-1])
    assert_throttled(await member_login(server, guesser, alice.username, PASSWORD))
    assert (await member_login(server, elsewhere, alice.username, PASSWORD)).status_code == 201
    await alice.close()


async def test_an_unknown_member_name_answers_like_a_real_one(guarded: tuple[Server, str]) -> None:
    server, _ = guarded
    alice = await new_member(server)
    real_address, unknown_address = fresh_address(), fresh_address()

    real = [await member_login(server, real_address, alice.username, WRONG) for _ in range(7)]
    ghost = unique("ghost")
    unknown = [await member_login(server, unknown_address, ghost, WRONG) for _ in range(7)]

    assert [r.status_code for r in real] == [r.status_code for r in unknown] == [401] * 5 + [429] * 2
    assert [r.json()["detail"] for r in real] == [r.json()["detail"] for r in unknown]
    await alice.close()


async def test_guesses_from_many_addresses_lock_an_account_for_a_bounded_time(
    guarded: tuple[Server, str],
) -> None:
    server, _ = guarded
    alice = await new_member(server)

    for _ in range(12):  # one guess from each of many addresses: no address is throttled
        assert (await member_login(server, fresh_address(), alice.username, WRONG)).status_code in (401, 429)
    locked = await member_login(server, fresh_address(), alice.username, PASSWORD)

    assert_throttled(locked)
    assert int(locked.headers["retry-after"]) <= 15 * 60
    await alice.close()


async def test_concurrent_wrong_member_logins_are_evaluated_at_most_five_times(
    guarded: tuple[Server, str],
) -> None:
    server, _ = guarded
    alice = await new_member(server)
    guesser = fresh_address()

    answers = await asyncio.gather(*(member_login(server, guesser, alice.username, WRONG) for _ in range(40)))

    statuses = [r.status_code for r in answers]
    assert statuses.count(401) <= 5 and statuses.count(429) >= 35, statuses
    await alice.close()


# -- the password-hashing queue (real argon2id cost, not the suite's cheap one) -------------------

ARGON2_DEFAULTS = {
    "KEYHOLD_ARGON2_TIME_COST": "3",
    "KEYHOLD_ARGON2_MEMORY_KIB": "65536",
    "KEYHOLD_ARGON2_PARALLELISM": "4",
}


@pytest.fixture(scope="module")
def real_cost_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("argon2") / "kh", "sqlite", env=ARGON2_DEFAULTS)
    yield server
    stop_server(server)


async def test_password_hashing_has_a_bounded_queue(real_cost_server: Server) -> None:
    server = real_cost_server
    alice = await new_member(server)

    async def token_request() -> int:
        await asyncio.sleep(0.05)  # let the sign-ins fill the queue first
        async with http(server, alice.token) as client:
            return (await client.get("/account")).status_code

    # Forty sign-ins, each from its own address (so that throttling plays no part).
    logins = [member_login(server, fresh_address(), unique("ghost"), WRONG) for _ in range(40)]
    *answers, token_status = await asyncio.gather(*logins, token_request())

    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {401, 503}, statuses
    assert 503 in statuses, "the queue never filled: 40 sign-ins were all hashed"
    for response in answers:
        if response.status_code == 503:
            assert_problem(response, 503)
            assert int(response.headers["retry-after"]) > 0
    assert token_status == 200
    # Once the burst is over, signing in works again.
    assert (await member_login(server, fresh_address(), alice.username, PASSWORD)).status_code == 201
    await alice.close()


# -- what the review of the first fix found ---------------------------------------------------


async def test_strangers_cannot_lock_the_owner_out_of_an_address_they_used_before(
    guarded: tuple[Server, str],
) -> None:
    """Two fresh addresses every few minutes could keep an account's own counter full for
    ever; an address the owner signed in from is held only to its own guess limit."""
    server, _ = guarded
    alice = await new_member(server)
    home = fresh_address()
    assert (await member_login(server, home, alice.username, PASSWORD)).status_code == 201

    for _ in range(12):  # strangers, each from an address of their own: the account is locked ...
        await member_login(server, fresh_address(), alice.username, WRONG)
    assert_throttled(await member_login(server, fresh_address(), alice.username, PASSWORD))

    # ... but not for the address alice uses.
    assert (await member_login(server, home, alice.username, PASSWORD)).status_code == 201
    await alice.close()


async def test_a_shared_address_full_of_wrong_guesses_still_lets_its_members_in(
    guarded: tuple[Server, str],
) -> None:
    server, _ = guarded
    alice = await new_member(server)
    office = fresh_address()
    assert (await member_login(server, office, alice.username, PASSWORD)).status_code == 201

    for i in range(55):  # someone else behind the same address sprays made-up names
        await member_login(server, office, f"{unique('made_up')}_{i}", WRONG)
    assert_throttled(await member_login(server, office, unique("made_up"), WRONG))

    assert (await member_login(server, office, alice.username, PASSWORD)).status_code == 201
    await alice.close()


async def test_retry_after_does_not_say_which_counter_refused(guarded: tuple[Server, str]) -> None:
    """A guesser's lock and an account's lock wait out windows of the same length."""
    server, _ = guarded
    bob, carol = await new_member(server), await new_member(server)
    guesser = fresh_address()
    for _ in range(5):
        await member_login(server, guesser, bob.username, WRONG)
    by_guesser = await member_login(server, guesser, bob.username, WRONG)
    for _ in range(10):
        await member_login(server, fresh_address(), carol.username, WRONG)
    by_account = await member_login(server, fresh_address(), carol.username, WRONG)

    assert_throttled(by_guesser)
    assert_throttled(by_account)
    waits = [int(r.headers["retry-after"]) for r in (by_guesser, by_account)]
    assert all(800 < wait <= 900 for wait in waits), waits
    await bob.close()
    await carol.close()


@pytest.mark.parametrize(
    ("address", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("unknown", "unknown"),
    ],
)
def test_an_ipv6_host_counts_as_its_64(address: str, client: str) -> None:
    """One IPv6 host holds a whole /64: counting its addresses one by one would not bind it."""
    assert client_of(address) == client


async def test_a_deleted_account_is_checked_against_the_dummy_hash(tmp_path: Path) -> None:
    """Deleting an account leaves a hash no password matches and argon2 refuses at once: a
    sign-in to it must still spend a full verification, or timing would tell it apart."""
    async with service_in_process(tmp_path / "kh", "sqlite") as svc:
        alice = await member_in_process(svc, unique("a"))
        await svc.conversations.delete_account(alice)
        checked: list[str | None] = []
        real_verify = svc.passwords.verify

        async def recording_verify(stored_hash: str | None, password: str) -> bool:
            checked.append(stored_hash)
            return await real_verify(stored_hash, password)

        svc.passwords.verify = recording_verify  # type: ignore[method-assign]
        with pytest.raises(Problem) as refused:
            await svc.accounts.login(alice.username, PASSWORD, address="127.0.0.9")
        assert refused.value.status == 401
        assert checked == [None]  # None: the dummy hash, never the deleted account's "!"
