"""Rate limits (issue 9, item 5): token buckets per account and per client address.

Unit tests drive the limiter with a fake clock; the API tests run a real server whose policy file
(written into its data dir before it starts) has tiny figures and, for messages, a two-second
window. Each API test acts from loopback addresses of its own (127.x.y.z), so that no test
spends another's per-address budget, whatever the order they run in.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from conftest import TLS, Server, new_member, start_server, stop_server
from keyhold.core.accounts import Member
from keyhold.core.errors import Problem
from keyhold.safety.limiter import RateLimiter
from keyhold.safety.policy import DEFAULT_POLICY, PolicyError, parse
from keyhold.safety.policy import policy_file as load_policy_file
from keyhold.safety.rate_limits import DEFAULT_RATE_LIMITS, Limit, RateLimits
from keyhold.sdk import Client

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
DAY_MS = 24 * 3600 * 1000
NOW_MS = 1_800_000_000_000

# -- the limiter, on a fake clock ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def member(id_: int = 1, age_days: float = 30) -> Member:
    return Member(id_, f"m{id_}", "us", "", created_ms=int(NOW_MS - age_days * DAY_MS))


def limiter(limits: RateLimits = DEFAULT_RATE_LIMITS, max_keys: int = 1000) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(lambda: limits, clock=clock, wall_ms=lambda: NOW_MS, max_keys=max_keys), clock


def refusal(call: Any) -> Problem:
    with pytest.raises(Problem) as caught:
        call()
    return caught.value


def test_a_burst_then_one_token_per_refill_step() -> None:
    limits, clock = limiter()
    alice = member()
    for _ in range(60):  # the default: 60 a minute, all at once if need be
        limits.take("messages", alice, "198.51.100.7")
    problem = refusal(lambda: limits.take("messages", alice, "198.51.100.7"))
    assert problem.status == 429 and problem.retry_after == 1
    assert problem.detail == "too many messages: at most 60 a minute; try again in 1 s"
    assert problem.to_dict()["limit"] == "messages" and problem.to_dict()["scope"] == "account"
    clock.now += 0.5
    assert refusal(lambda: limits.take("messages", alice, "198.51.100.7")).retry_after == 1
    clock.now += 0.5  # a whole second: one token back, and only one
    limits.take("messages", alice, "198.51.100.7")
    refusal(lambda: limits.take("messages", alice, "198.51.100.7"))
    clock.now += 60  # a whole window refills the bucket, no more
    for _ in range(60):
        limits.take("messages", alice, "198.51.100.7")
    refusal(lambda: limits.take("messages", alice, "198.51.100.7"))


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    limits, clock = limiter()
    alice = member()
    for _ in range(20):
        limits.take("conversations", alice, None)  # 20 an hour: one token every 180 s
    clock.now += 100
    problem = refusal(lambda: limits.take("conversations", alice, None))
    assert problem.retry_after == 80
    assert problem.detail == "too many new conversations: at most 20 an hour; try again in 80 s"
    clock.now += 79.5
    assert refusal(lambda: limits.take("conversations", alice, None)).retry_after == 1
    clock.now += 0.5
    limits.take("conversations", alice, None)


def test_each_kind_has_its_own_buckets_and_figures() -> None:
    limits, _ = limiter()
    alice = member()
    expected = {"messages": 60, "conversations": 20, "requests": 20, "reports": 20, "follows": 60}
    for kind, count in expected.items():
        for _ in range(count):
            limits.take(kind, alice, "198.51.100.7")
        problem = refusal(lambda kind=kind: limits.take(kind, alice, "198.51.100.7"))
        assert problem.to_dict()["limit"] == kind
    assert (
        "message requests: at most 20 a day" in refusal(lambda: limits.take("requests", alice, None)).detail
    )


def test_one_address_is_shared_by_its_accounts_and_a_refusal_takes_nothing() -> None:
    figures = RateLimits(messages=Limit(window_seconds=60, account=3, new_account=3, address=5))
    limits, _ = limiter(figures)
    a, b, c = member(1), member(2), member(3)
    for _ in range(3):
        limits.take("messages", a, "198.51.100.7")
    for _ in range(10):  # refused by a's own limit: the address keeps what is left of it
        refusal(lambda: limits.take("messages", a, "198.51.100.7"))
    for _ in range(2):
        limits.take("messages", b, "198.51.100.7")
    problem = refusal(lambda: limits.take("messages", b, "198.51.100.7"))
    assert problem.to_dict()["scope"] == "address"
    assert problem.detail.startswith("too many messages from your network address: at most 5 a minute")
    limits.take("messages", b, "203.0.113.9")  # b still has a token of its own, elsewhere
    limits.take("messages", c, "203.0.113.9")


def test_an_ipv6_client_is_its_slash_64() -> None:
    figures = RateLimits(follows=Limit(window_seconds=3600, account=10, new_account=10, address=2))
    limits, _ = limiter(figures)
    limits.take("follows", member(1), "2001:db8:1:2::1")
    limits.take("follows", member(2), "2001:db8:1:2:ffff::9")
    assert (
        refusal(lambda: limits.take("follows", member(3), "2001:db8:1:2::abcd")).to_dict()["scope"]
        == "address"
    )
    limits.take("follows", member(3), "2001:db8:1:3::1")  # another /64: another client
    limits.take("follows", member(4), "::ffff:198.51.100.7")  # IPv4-mapped is the IPv4 address
    limits.take("follows", member(5), "198.51.100.7")
    refusal(lambda: limits.take("follows", member(6), "198.51.100.7"))


def test_accounts_younger_than_seven_days_get_the_new_account_figures() -> None:
    limits, _ = limiter()
    newcomer, week_old, veteran = member(1, age_days=6.9), member(2, age_days=7), member(3, age_days=400)
    for who, count in ((newcomer, 20), (week_old, 60), (veteran, 60)):
        for _ in range(count):
            limits.take("messages", who, None)
        refusal(lambda who=who: limits.take("messages", who, None))
    assert "at most 20 a minute" in refusal(lambda: limits.take("messages", newcomer, None)).detail
    lenient = RateLimits(new_account_days=0)  # no newcomer figures at all
    limits, _ = limiter(lenient)
    for _ in range(60):
        limits.take("messages", member(9, age_days=0), None)


def test_a_refund_gives_the_token_back() -> None:
    limits, _ = limiter()
    alice = member()
    charges = [limits.take("conversations", alice, "198.51.100.7") for _ in range(20)]
    refusal(lambda: limits.take("conversations", alice, "198.51.100.7"))
    limits.refund(charges[0])
    limits.take("conversations", alice, "198.51.100.7")
    refusal(lambda: limits.take("conversations", alice, "198.51.100.7"))


def test_idle_full_buckets_are_dropped_and_the_number_of_keys_is_capped() -> None:
    limits, clock = limiter(max_keys=100)
    for i in range(30):
        limits.take("messages", member(i), f"198.51.100.{i}")
    assert limits.tracked()["messages"] == 60  # an account and an address bucket each
    clock.now += 30
    for i in range(30, 55):
        limits.take("messages", member(i), f"198.51.100.{i}")
    assert limits.tracked()["messages"] == 100  # capped: the least recently used went first
    assert limits.tracked()["messages_evicted_early"] == 10
    clock.now += 30  # the first ones idle a whole window: full again, the same as no bucket
    limits.take("messages", member(99), None)
    assert limits.tracked()["messages"] == 51
    clock.now += 30
    limits.take("follows", member(1), None)
    limits.take("messages", member(1), None)
    assert limits.tracked()["messages"] == 2 and limits.tracked()["follows"] == 1
    assert limits.tracked()["messages_evicted_early"] == 10  # the sweep is not the cap


def test_a_dropped_bucket_starts_full() -> None:
    limits, clock = limiter()
    alice = member()
    for _ in range(60):
        limits.take("messages", alice, None)
    clock.now += 60
    limits.take("follows", member(2), None)  # another kind: its buckets are swept on their own
    for _ in range(60):
        limits.take("messages", alice, None)
    refusal(lambda: limits.take("messages", alice, None))


def test_the_scale_multiplies_every_figure() -> None:
    clock = FakeClock()
    limits = RateLimiter(lambda: DEFAULT_RATE_LIMITS, scale=10, clock=clock, wall_ms=lambda: NOW_MS)
    for _ in range(600):
        limits.take("messages", member(), None)
    assert "at most 600 a minute" in refusal(lambda: limits.take("messages", member(), None)).detail


# -- the policy file's [rate_limits] table --------------------------------------------------------


def test_the_policy_file_sets_some_figures_and_keeps_the_defaults_of_the_rest() -> None:
    policy = parse(
        """
        [rate_limits]
        new_account_days = 3

        [rate_limits.messages]
        account = 30
        window_seconds = 30
        """
    )
    assert policy.rate_limits.messages == Limit(window_seconds=30, account=30, new_account=20, address=300)
    assert policy.rate_limits.new_account_days == 3
    assert policy.rate_limits.follows == DEFAULT_RATE_LIMITS.follows
    assert parse(policy.to_toml()) == policy  # what `show` prints reads back the same
    assert "[rate_limits.reports]" in DEFAULT_POLICY.to_toml()
    assert parse(DEFAULT_POLICY.to_toml()) == DEFAULT_POLICY


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[rate_limits]\nbursts = 3", "rate_limits: unknown setting 'bursts'"),
        ("[rate_limits.spam]\naccount = 3", "rate_limits: unknown setting 'spam'"),
        ("[rate_limits.messages]\nper_minute = 3", "rate_limits.messages: unknown setting 'per_minute'"),
        (
            "[rate_limits.messages]\naccount = 0",
            "rate_limits.messages.account: must be a whole number from 1",
        ),
        ("[rate_limits.messages]\naccount = 2.5", "rate_limits.messages.account: must be a whole number"),
        ("[rate_limits.messages]\naccount = true", "rate_limits.messages.account: must be a whole number"),
        ("[rate_limits.follows]\nwindow_seconds = 999999999", "rate_limits.follows.window_seconds"),
        (
            "[rate_limits.follows]\naccount = 5",
            "rate_limits.follows: new_account cannot be more than account",
        ),
        (
            "[rate_limits]\nnew_account_days = -1",
            "rate_limits.new_account_days: must be a whole number from 0",
        ),
        ("rate_limits = 3", "rate_limits: must be a table"),
    ],
)
def test_a_bad_rate_limits_table_is_refused_saying_where(text: str, error: str) -> None:
    with pytest.raises(PolicyError, match="^" + error.replace(".", r"\.").replace("(", r"\(")):
        parse(text)


def test_a_running_limiter_follows_the_policy_file_as_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "safety-policy.toml"
    file_clock = [0.0]
    policy_file = load_policy_file(path, clock=lambda: file_clock[0])
    clock = FakeClock()
    limits = RateLimiter(lambda: policy_file.current().rate_limits, clock=clock, wall_ms=lambda: NOW_MS)
    path.write_text("[rate_limits.reports]\naccount = 2\nnew_account = 1\n")
    file_clock[0] += 2
    limits.take("reports", member(), None)
    limits.take("reports", member(), None)
    assert "at most 2 a day" in refusal(lambda: limits.take("reports", member(), None)).detail
    path.write_text("[rate_limits.reports]\naccount = 0\n")  # broken: the last good figures stay
    file_clock[0] += 2
    assert "at most 2 a day" in refusal(lambda: limits.take("reports", member(), None)).detail
    assert policy_file.error is not None


# -- through the API, on a server of its own --------------------------------------------------------

POLICY = """
[rate_limits]
new_account_days = 7

[rate_limits.messages]
window_seconds = 2
account = 4
new_account = 3
address = 10

[rate_limits.conversations]
window_seconds = 3600
account = 3
new_account = 2
address = 3

[rate_limits.follows]
window_seconds = 3600
account = 4
new_account = 2
address = 1000

[rate_limits.reports]
window_seconds = 86400
account = 3
new_account = 2
address = 1000
"""

_addresses = itertools.count(1)
_block = uuid.uuid4().int % 200 + 20


def fresh_address() -> str:
    """A loopback address no other test uses (Linux answers for all of 127.0.0.0/8)."""
    n = next(_addresses)
    return f"127.{_block}.{n // 250}.{1 + n % 250}"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home") / "kh"
    home.mkdir()
    (home / "safety-policy.toml").write_text(POLICY)
    srv = start_server(home, request.param, env={"KEYHOLD_RATE_LIMIT_SCALE": "1"})
    yield srv
    stop_server(srv)


async def call(client: Client, address: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request with the client's token, from `address`."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(
        verify=TLS,
        base_url=client.base_url + API,
        headers={"Authorization": f"Bearer {client.token}"},
        transport=transport,
        timeout=60,
    ) as http:
        return await http.request(method, path, **kwargs)


def assert_429(response: httpx.Response, limit: str, scope: str = "account") -> dict[str, Any]:
    assert response.status_code == 429, response.text[:500]
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem = dict(response.json())
    retry = int(response.headers["retry-after"])
    assert retry >= 1 and problem["retry_after"] == retry
    assert problem["status"] == 429 and problem["limit"] == limit and problem["scope"] == scope
    assert problem["detail"].endswith(f"; try again in {retry} s")
    return problem


async def friends(server: Server) -> tuple[Client, Client, int]:
    """Two new members who follow each other, and their 1:1 (started from an address of its own)."""
    a, b = await asyncio.gather(new_member(server), new_member(server))
    await asyncio.gather(a.follow(b.username), b.follow(a.username))
    started = await call(a, fresh_address(), "POST", "/conversations", json={"members": [b.username]})
    assert started.status_code == 201, started.text
    return a, b, int(started.json()["id"])


async def send(client: Client, address: str, cid: int, text: str) -> httpx.Response:
    return await call(client, address, "POST", f"/conversations/{cid}/messages", json={"text": text})


async def history_texts(client: Client, cid: int) -> list[str]:
    return [m.text for m in await client.history(cid)]


async def test_rest_messages_over_the_limit_get_429_with_retry_after_and_nothing_is_stored(
    server: Server,
) -> None:
    a, b, cid = await friends(server)
    address = fresh_address()
    sent: list[str] = []
    for i in range(20):
        response = await send(a, address, cid, f"m{i}")
        if response.status_code != 201:
            break
        sent.append(f"m{i}")
    problem = assert_429(response, "messages")
    # A new account's burst is 3 (a slow machine may see a token come back meanwhile).
    assert 3 <= len(sent) < 20
    assert problem["detail"].startswith("too many messages: at most 3 every 2 seconds; try again in ")
    assert await history_texts(b, cid) == sent  # the refused send left nothing
    await asyncio.gather(a.close(), b.close())


async def test_new_conversations_are_limited_and_an_existing_one_does_not_count(server: Server) -> None:
    a, *others = await asyncio.gather(*(new_member(server) for _ in range(4)))
    address = fresh_address()

    async def start(other: Client) -> httpx.Response:
        return await call(a, address, "POST", "/conversations", json={"members": [other.username]})

    assert (await start(others[0])).status_code == 201
    assert (await start(others[0])).status_code == 200  # the 1:1 that exists: no new conversation
    assert (await start(others[1])).status_code == 201
    problem = assert_429(await start(others[2]), "conversations")
    assert problem["detail"].startswith("too many new conversations: at most 2 an hour")
    assert 1700 <= problem["retry_after"] <= 1800  # one token of 2 an hour: half an hour
    mine = await a.conversations()
    assert len(mine) == 2  # nothing made for the refused one
    await asyncio.gather(*(c.close() for c in (a, *others)))


async def test_follows_are_limited(server: Server) -> None:
    a, *others = await asyncio.gather(*(new_member(server) for _ in range(4)))
    address = fresh_address()
    for other in others[:2]:
        assert (await call(a, address, "PUT", f"/following/{other.username}")).status_code == 204
    problem = assert_429(await call(a, address, "PUT", f"/following/{others[2].username}"), "follows")
    assert problem["detail"].startswith("too many follows: at most 2 an hour")
    assert sorted((await a.relations())["following"]) == sorted(o.username for o in others[:2])
    await asyncio.gather(*(c.close() for c in (a, *others)))


async def test_reports_are_limited(server: Server) -> None:
    a, b, cid = await friends(server)
    ids = []
    for i in range(3):
        response = await send(b, fresh_address(), cid, f"report me {i}")
        assert response.status_code == 201, response.text
        ids.append(int(response.json()["id"]))
    address = fresh_address()

    async def report(message_id: int) -> httpx.Response:
        body = {"conversation_id": cid, "message_ids": [message_id], "category": "harassment"}
        return await call(a, address, "POST", "/reports", json=body)

    assert (await report(ids[0])).status_code == 201
    assert (await report(ids[1])).status_code == 201
    problem = assert_429(await report(ids[2]), "reports")
    assert problem["detail"].startswith("too many reports: at most 2 a day")
    await asyncio.gather(a.close(), b.close())


async def test_one_address_is_limited_across_its_accounts(server: Server) -> None:
    a1, a2, *others = await asyncio.gather(*(new_member(server) for _ in range(6)))
    shared, elsewhere = fresh_address(), fresh_address()

    async def start(who: Client, other: Client, address: str) -> httpx.Response:
        return await call(who, address, "POST", "/conversations", json={"members": [other.username]})

    assert (await start(a1, others[0], shared)).status_code == 201
    assert (await start(a1, others[1], shared)).status_code == 201
    assert (await start(a2, others[2], shared)).status_code == 201  # the address's third of 3
    problem = assert_429(await start(a2, others[3], shared), "conversations", scope="address")
    assert problem["detail"].startswith(
        "too many new conversations from your network address: at most 3 an hour"
    )
    assert (await start(a2, others[3], elsewhere)).status_code == 201  # a2 had a token of its own
    await asyncio.gather(*(c.close() for c in (a1, a2, *others)))


def backdate(server: Server, username: str, days: int) -> None:
    """Make an account `days` old, as if it had registered then."""
    created = time.time_ns() // 1_000_000 - days * DAY_MS
    if server.backend == "sqlite":
        conn = sqlite3.connect(server.home / "keyhold.db", timeout=30)
        try:
            with conn:
                conn.execute("UPDATE users SET created_ms = ? WHERE username = ?", (created, username))
        finally:
            conn.close()
        return
    import asyncpg

    async def update() -> None:
        conn = await asyncpg.connect(server.database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await conn.execute("UPDATE users SET created_ms = $1 WHERE username = $2", created, username)
        finally:
            await conn.close()

    asyncio.run(update())


async def test_accounts_younger_than_a_week_get_the_stricter_figures(server: Server) -> None:
    newcomer, veteran, *others = await asyncio.gather(*(new_member(server) for _ in range(10)))
    await asyncio.to_thread(backdate, server, veteran.username, 8)
    started = {}
    for who, targets in ((newcomer, others[:4]), (veteran, others[4:])):
        address = fresh_address()  # its own: the address figure (3) is not what is tested
        count = 0
        for other in targets:
            response = await call(who, address, "POST", "/conversations", json={"members": [other.username]})
            if response.status_code != 201:
                assert_429(response, "conversations")
                break
            count += 1
            if count == 3:
                address = fresh_address()
        started[who.username] = count
    assert started == {newcomer.username: 2, veteran.username: 3}
    await asyncio.gather(*(c.close() for c in (newcomer, veteran, *others)))


def ws_url(server: Server) -> str:
    return "ws://" + server.url.removeprefix("http://") + API + "/stream?since=latest"


async def frame_for(ws: Any, ref: int) -> dict[str, Any]:
    """The server's answer to the frame `ref` (events in between are passed over)."""
    while True:
        frame = dict(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
        if frame.get("ref") == ref and frame["type"] in ("ack", "error", "pong"):
            return frame


async def test_a_websocket_send_over_the_limit_gets_an_error_frame_and_the_socket_stays_open(
    server: Server,
) -> None:
    a, b, cid = await friends(server)
    headers = {"Authorization": f"Bearer {a.token}"}
    async with websockets.connect(
        ws_url(server), additional_headers=headers, local_addr=(fresh_address(), 0)
    ) as ws:
        while orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "ready":
            pass
        acked: list[str] = []
        for ref in range(1, 21):
            await ws.send(
                orjson.dumps({"type": "send", "ref": ref, "conversation_id": cid, "text": f"w{ref}"})
            )
            answer = await frame_for(ws, ref)
            if answer["type"] != "ack":
                break
            acked.append(f"w{ref}")
        assert answer["type"] == "error", answer
        problem = answer["problem"]
        assert problem["status"] == 429 and problem["limit"] == "messages"
        assert problem["retry_after"] >= 1
        assert problem["detail"].endswith(f"; try again in {problem['retry_after']} s")
        assert 3 <= len(acked) < 20
        await ws.send(orjson.dumps({"type": "ping", "ref": 100}))
        assert (await frame_for(ws, 100))["type"] == "pong"  # still open, still answering
        await asyncio.sleep(problem["retry_after"])  # the server's own figure: then a token is back
        await ws.send(orjson.dumps({"type": "send", "ref": 101, "conversation_id": cid, "text": "later"}))
        later = await frame_for(ws, 101)
        assert later["type"] == "ack", later
        assert later["message"]["text"] == "later"
    assert await history_texts(b, cid) == [*acked, "later"]
    await asyncio.gather(a.close(), b.close())


async def test_a_flooding_account_does_not_make_another_accounts_sends_fail(server: Server) -> None:
    (flooder, f_peer, f_cid), (quiet, q_peer, q_cid) = await asyncio.gather(friends(server), friends(server))
    shared = fresh_address()  # the same address: the flood's refusals must not spend it
    flood = await asyncio.gather(*(send(flooder, shared, f_cid, f"flood {i}") for i in range(40)))
    statuses = [r.status_code for r in flood]
    assert set(statuses) <= {201, 429}
    accepted = statuses.count(201)
    assert 3 <= accepted <= 10 and statuses.count(429) >= 30
    for response in flood:
        if response.status_code == 429:
            assert_429(response, "messages")
    for i in range(3):
        response = await send(quiet, shared, q_cid, f"quiet {i}")
        assert response.status_code == 201, response.text
    assert len(await history_texts(f_peer, f_cid)) == accepted
    assert await history_texts(q_peer, q_cid) == ["quiet 0", "quiet 1", "quiet 2"]
    await asyncio.gather(*(c.close() for c in (flooder, f_peer, quiet, q_peer)))


# -- the flood benchmark, small -------------------------------------------------------------------


def test_bench_flood_runs_and_the_quiet_members_are_never_refused(tmp_path: Path) -> None:
    out = tmp_path / "flood.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyhold",
            "bench",
            "flood",
            "--quiet",
            "2",
            "--messages",
            "3",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(out.read_text())
    assert set(report["p99_ratio"]) == {"flood_ws", "flood_rest"}
    for name in ("alone", "flood_ws", "flood_rest"):
        phase = report[name]
        assert phase["sends"] == 6 and phase["quiet_outcomes"] == {"acked": 6}
        assert 0 < phase["send_p50_ms"] <= phase["send_p99_ms"] <= phase["send_max_ms"]
    for name in ("flood_ws", "flood_rest"):
        flooder = report[name]["flooder"]
        # A new account's 20, and the few tokens that come back while it floods.
        assert 20 <= flooder["accepted"] <= 25
        assert flooder["refused_429"] >= 1
        assert set(flooder["other"]) <= {"unanswered"}
