"""The database goes away and comes back while members send (PostgreSQL backend).

A throwaway PostgreSQL cluster of this module's own (never the shared one from
KEYHOLD_TEST_PG_URL, which other tests use) is halted for a few seconds and resumed while ten
members send over REST. What must hold:

- every send is answered 201 (an acknowledgement) or 503 problem+json with `Retry-After`;
  never another status, never a hang, never an ack while the database is down;
- at least one send is refused with 503 during the outage (or the test proved nothing);
- the server (never restarted) reconnects by itself: `/health` answers 200 again;
- each refused send, retried with its idempotency key, is acknowledged in the end;
- every conversation's history holds each acknowledged message exactly once, as acknowledged,
  and nothing that was not sent.

Sends are paced, so the counts stay modest; timeouts are liveness bounds only.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import TLS, Server, new_member, start_server, stop_server
from keyhold.sdk import Client

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pg-test-cluster.sh"

CLIENTS = 10
REQUEST_TIMEOUT = 30.0  # no request may hang: an answer within this, or the test fails
PACE = 0.02  # seconds between one client's sends
MIN_OUTAGE = 4.0  # the database stays down at least this long...
OUTAGE_SENDS = 3  # ...and until every client has had this many answers while it is down
ACKS_BEFORE = 3  # acks per client before the outage, and again after the server is back
LIVENESS = 60.0  # bound on every wait below
RETRIES = 60  # tries per refused send after the outage
RETRY_PAUSE = 0.25
PAGE = 200


# -- the throwaway cluster ------------------------------------------------------------------------


@dataclass
class Cluster:
    directory: Path
    url: str


def cluster_command(action: str, directory: Path) -> str:
    """Run `scripts/pg-test-cluster.sh ACTION DIR`; its stdout (the URL for start/resume)."""
    done = subprocess.run([str(SCRIPT), action, str(directory)], capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"pg-test-cluster.sh {action} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Cluster]:
    if not os.environ.get("KEYHOLD_TEST_PG_URL"):
        pytest.skip("KEYHOLD_TEST_PG_URL not set (make test provides PostgreSQL)")
    # Short path under /tmp: the postgres user must reach it and its socket path is limited.
    directory = Path(tempfile.mkdtemp(prefix="kh-pgr.", dir="/tmp"))
    try:
        yield Cluster(directory, cluster_command("start", directory))
    finally:
        cluster_command("stop", directory)


@pytest.fixture(scope="module")
def pg_server(own_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("home") / "kh", "postgres", database_url=own_cluster.url)
    yield srv
    stop_server(srv)


# -- what every send saw --------------------------------------------------------------------------


@dataclass
class Attempt:
    number: int  # 1 for the first try of a send
    started: float
    ended: float
    status: int | None = None  # None: no HTTP answer (timeout or transport error)
    retry_after: str | None = None
    content_type: str = ""
    problem_status: object = None  # the `status` member of a problem+json body
    body: str = ""
    error: str = ""

    def kind(self) -> str:
        """A short name for the answer, to count them: `201`, `503+Retry-After`, `ReadTimeout`."""
        if self.status is None:
            return self.error.split(" ")[0].rstrip(":")
        return f"{self.status}+Retry-After" if self.retry_after is not None else str(self.status)


@dataclass
class Send:
    sender: str
    conversation_id: int
    key: str
    text: str
    attempts: list[Attempt] = field(default_factory=list)
    acked: dict[str, Any] | None = None

    def describe(self, attempt: Attempt) -> str:
        if attempt.status is None:
            answer = f"no answer: {attempt.error}"
        else:
            answer = (
                f"{attempt.status} content-type={attempt.content_type!r} "
                f"Retry-After={attempt.retry_after!r} body={attempt.body[:200]!r}"
            )
        return f"send key={self.key} conversation={self.conversation_id} try {attempt.number}: {answer}"


def valid_retry_after(value: str | None) -> bool:
    """RFC 9110: delay-seconds or an HTTP-date."""
    if value is None:
        return False
    value = value.strip()
    if value.isdigit():
        return True
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    return True


def judge(send: Send, attempt: Attempt) -> str | None:
    """What is wrong with one answer to a send, or None: a matching 201, or a proper 503."""
    if attempt.status == 201:
        ack = send.acked or {}
        if (ack.get("conversation_id"), ack.get("sender"), ack.get("text")) != (
            send.conversation_id,
            send.sender,
            send.text,
        ):
            return f"{send.describe(attempt)} -- the ack is not the message sent"
        return None
    if attempt.status == 503:
        problem_ok = attempt.content_type.startswith(PROBLEM_JSON) and attempt.problem_status == 503
        if problem_ok and valid_retry_after(attempt.retry_after):
            return None
        return f"{send.describe(attempt)} -- a 503 must be problem+json with a Retry-After header"
    return f"{send.describe(attempt)} -- expected 201 or 503"


async def post_send(http: httpx.AsyncClient, send: Send) -> Attempt:
    number = len(send.attempts) + 1
    started = time.monotonic()
    body = {"text": send.text, "idempotency_key": send.key}
    try:
        response = await http.post(f"/conversations/{send.conversation_id}/messages", json=body)
    except httpx.TimeoutException as exc:
        attempt = Attempt(
            number, started, time.monotonic(), error=f"{type(exc).__name__} after {REQUEST_TIMEOUT}s"
        )
    except httpx.TransportError as exc:
        attempt = Attempt(number, started, time.monotonic(), error=f"{type(exc).__name__}: {exc}")
    else:
        attempt = Attempt(
            number,
            started,
            time.monotonic(),
            status=response.status_code,
            retry_after=response.headers.get("retry-after"),
            content_type=response.headers.get("content-type", ""),
            body=response.text[:1000],
        )
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            attempt.problem_status = parsed.get("status")
            if response.status_code == 201:
                send.acked = parsed
    send.attempts.append(attempt)
    return attempt


@dataclass
class Sender:
    index: int
    member: Client
    conversations: list[int]
    http: httpx.AsyncClient
    sends: list[Send] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        """Send continuously (one request at a time, paced) until `stop`; each send once."""
        n = 0
        while not stop.is_set():
            send = Send(
                sender=self.member.username,
                conversation_id=self.conversations[n % len(self.conversations)],
                key=f"c{self.index}-{n}-{uuid.uuid4().hex[:10]}",
                text=f"{self.member.username} says #{n} ({uuid.uuid4().hex})",
            )
            self.sends.append(send)
            await post_send(self.http, send)
            n += 1
            await asyncio.sleep(PACE)

    def answered_since(self, since: float, status: int | None = None, any_status: bool = False) -> int:
        """First tries started at or after `since` and answered (with `status`, if given)."""
        return sum(
            1
            for s in self.sends
            for a in s.attempts[:1]
            if a.started >= since and (any_status or a.status == status)
        )


async def wait_for(condition: Callable[[], bool], bound: float = LIVENESS) -> bool:
    """Poll `condition` until it holds (True) or `bound` seconds pass (False): liveness only."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def health(url: str) -> int | str:
    try:
        async with httpx.AsyncClient(verify=TLS, timeout=REQUEST_TIMEOUT) as http:
            return (await http.get(url + API + "/health")).status_code
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"


async def history(http: httpx.AsyncClient, conversation_id: int) -> list[dict[str, Any]]:
    """The whole history of a conversation, newest page first, paginated with `before`."""
    items: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"limit": PAGE}
        if before is not None:
            params["before"] = before
        response = await http.get(f"/conversations/{conversation_id}/messages", params=params)
        assert response.status_code == 200, response.text[:500]
        page = response.json()
        items = page["items"] + items
        cursor = page["next_before"]
        if cursor is None:
            return items
        assert before is None or cursor < before, f"history cursor did not move back: {before} -> {cursor}"
        before = cursor


@pytest.fixture
async def senders(pg_server: Server) -> AsyncIterator[list[Sender]]:
    members = list(await asyncio.gather(*(new_member(pg_server) for _ in range(CLIENTS))))
    # A ring of direct conversations (each member talks to both neighbours) and one group.
    ring = [
        (await members[i].start_conversation([members[(i + 1) % CLIENTS].username])).id
        for i in range(CLIENTS)
    ]
    group = (await members[0].start_conversation([m.username for m in members[1:]], title="all ten")).id
    made = [
        Sender(
            i,
            member,
            [ring[(i - 1) % CLIENTS], ring[i], group],
            httpx.AsyncClient(
                verify=TLS,
                base_url=pg_server.url + API,
                headers={"Authorization": f"Bearer {member.token}"},
                timeout=REQUEST_TIMEOUT,
            ),
        )
        for i, member in enumerate(members)
    ]
    try:
        yield made
    finally:
        for sender in made:
            await sender.http.aclose()
            await sender.member.close()


# -- the test -------------------------------------------------------------------------------------


async def test_sends_survive_a_database_restart(
    pg_server: Server, own_cluster: Cluster, senders: list[Sender]
) -> None:
    failures: list[str] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop), name=f"sender-{s.index}") for s in senders]
    halted_at = resuming_at = back_at = 0.0
    halted = False
    outage_health: int | str = ""
    try:
        # Everyone is sending successfully before the outage.
        if not await wait_for(lambda: all(s.answered_since(0, 201) >= ACKS_BEFORE for s in senders)):
            pytest.fail(f"the clients did not get {ACKS_BEFORE} acks each before the outage")

        halted = True
        await asyncio.to_thread(cluster_command, "halt", own_cluster.directory)
        halted_at = time.monotonic()  # from here on the database is down
        outage_health = await health(pg_server.url)
        # Down for a few seconds, and until every client has been answered a few times.
        await wait_for(
            lambda: (
                time.monotonic() - halted_at >= MIN_OUTAGE
                and all(s.answered_since(halted_at, any_status=True) >= OUTAGE_SENDS for s in senders)
            )
        )
        resuming_at = time.monotonic()  # until here the database was down
        await asyncio.to_thread(cluster_command, "resume", own_cluster.directory)
        halted = False

        # The same server process reconnects by itself.
        deadline = time.monotonic() + LIVENESS
        seen_health: Counter[int | str] = Counter()
        while (status := await health(pg_server.url)) != 200:
            seen_health[status] += 1
            if time.monotonic() > deadline:
                pytest.fail(
                    f"/health did not answer 200 within {LIVENESS:.0f}s of the database coming back; "
                    f"answers: {dict(seen_health)}\n{log_summary(pg_server)}"
                )
            await asyncio.sleep(0.2)
        back_at = time.monotonic()
        assert pg_server.process.poll() is None, "the server process exited"

        # And new sends are acknowledged again.
        if not await wait_for(lambda: all(s.answered_since(back_at, 201) >= ACKS_BEFORE for s in senders)):
            failures.append(f"not every client got {ACKS_BEFORE} acks within {LIVENESS:.0f}s after /health")
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if halted:
            cluster_command("resume", own_cluster.directory)
    for task in tasks:
        task.result()  # a sender that crashed is a bug in the test: show it

    sends = [send for s in senders for send in s.sends]
    first_tries = Counter(send.attempts[0].kind() for send in sends)

    # During the outage: refusals, never an ack.
    in_outage = [
        (send, a)
        for send in sends
        for a in send.attempts
        if a.started >= halted_at and a.ended <= resuming_at
    ]
    if outage_health == 200:
        failures.append("/health answered 200 while the database was down")
    if not any(a.status == 503 for _, a in in_outage):
        failures.append(
            f"no send was refused with 503 during the {resuming_at - halted_at:.1f}s outage "
            f"(answers then: {dict(Counter(a.status for _, a in in_outage))})"
        )
    acked_while_down = [send.describe(a) for send, a in in_outage if a.status == 201]
    if acked_while_down:
        failures.append(
            f"{len(acked_while_down)} sends acked while the database was down, e.g. {acked_while_down[:3]}"
        )

    # Refused sends (and any other unacknowledged one) are retried with the same idempotency key
    # until acknowledged: a bounded number of tries, and a bound on the whole phase.
    retry_deadline = time.monotonic() + LIVENESS

    async def retry(sender: Sender) -> None:
        for send in sender.sends:
            tries = 0
            while send.acked is None and tries < RETRIES and time.monotonic() < retry_deadline:
                if tries:
                    await asyncio.sleep(RETRY_PAUSE)
                await post_send(sender.http, send)
                tries += 1

    await asyncio.gather(*(retry(s) for s in senders))
    retried = [send for send in sends if len(send.attempts) > 1]
    retries = Counter(a.kind() for send in retried for a in send.attempts[1:])
    never_acked = [send for send in sends if send.acked is None]
    if never_acked:
        failures.append(
            f"{len(never_acked)} sends were not acked after up to {RETRIES} retries with their key "
            f"(within {LIVENESS:.0f}s), e.g. "
            + "; ".join(send.describe(send.attempts[-1]) for send in never_acked[:3])
        )

    # Every answer, first tries and retries alike: 201 or a proper 503.
    bad: dict[str, list[str]] = {}
    for send in sends:
        for a in send.attempts:
            if (problem := judge(send, a)) is not None:
                bad.setdefault(a.kind(), []).append(problem)
    if bad:
        counts = {kind: len(problems) for kind, problems in bad.items()}
        total = sum(len(send.attempts) for send in sends)
        failures.append(
            f"{sum(counts.values())} of {total} answers were neither 201 nor a 503 "
            f"problem+json with Retry-After: {counts}; one of each:\n  "
            + "\n  ".join(examples[0] for examples in bad.values())
        )

    # Nothing acknowledged is lost, nothing is stored twice, nothing unsent appears.
    ack_ids = Counter(send.acked["id"] for send in sends if send.acked is not None)
    shared = [i for i, n in ack_ids.items() if n > 1]
    if shared:
        failures.append(f"{len(shared)} message ids acknowledged for more than one send, e.g. {shared[:3]}")
    reader = {cid: s.http for s in senders for cid in s.conversations}
    for cid, http in sorted(reader.items()):
        stored = await history(http, cid)
        sent = {send.text: send for send in sends if send.conversation_id == cid}
        acked = {send.acked["id"]: send for send in sent.values() if send.acked is not None}
        ids = Counter(m["id"] for m in stored)
        texts = Counter(m["text"] for m in stored)
        twice = [i for i, n in ids.items() if n > 1] + [t for t, n in texts.items() if n > 1]
        if twice:
            failures.append(f"conversation {cid}: stored more than once: {twice[:5]}")
        unsent = [m for m in stored if m["text"] not in sent]
        if unsent:
            failures.append(f"conversation {cid}: {len(unsent)} messages nobody sent, e.g. {unsent[:2]}")
        lost = [send for i, send in acked.items() if i not in ids]
        if lost:
            failures.append(
                f"conversation {cid}: {len(lost)} acknowledged messages are missing, e.g. "
                + "; ".join(
                    f"{s.key} id={s.acked and s.acked['id']} tries={len(s.attempts)}" for s in lost[:3]
                )
            )
        unacked = [sent[m["text"]].key for m in stored if m["text"] in sent and sent[m["text"]].acked is None]
        if unacked:
            failures.append(f"conversation {cid}: {len(unacked)} stored, never acknowledged: {unacked[:3]}")
        differs = [
            f"{send.key} (tries={len(send.attempts)}): ack {send.acked} != stored {m}"
            for m in stored
            if (send := sent.get(m["text"])) is not None and send.acked is not None and send.acked != m
        ]
        if differs:
            failures.append(
                f"conversation {cid}: {len(differs)} acks differ from the stored message, e.g. {differs[0]}"
            )

    summary = (
        f"{len(sends)} sends: first tries {dict(first_tries)}; {len(retried)} retried: {dict(retries)}; "
        f"outage {resuming_at - halted_at:.1f}s with {len(in_outage)} answers in it; "
        f"/health while down: {outage_health!r}"
    )
    assert not failures, summary + "\n" + "\n".join(failures) + "\n" + log_summary(pg_server)


def log_summary(server: Server, lines: int = 15) -> str:
    """The server log's most frequent top-level lines (tracebacks folded), for failure messages."""
    top = Counter(
        line for line in server.log().splitlines() if line.strip() and not line[0].isspace()
    ).most_common(lines)
    return f"server log {server.log_path}, most frequent lines:\n" + "\n".join(
        f"{n:6d}x {line[:200]}" for line, n in top
    )
