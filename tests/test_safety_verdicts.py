"""The scanning pipeline's verdicts on `standard` sends and uploads (issue 9, item 4), against a
real server on both databases, driven by the operator's rules file and hash lists:

- `block`: a 422 naming the policy, nothing stored, nothing delivered (REST and WebSocket);
- `hold`: stored, shown to its sender as `pending_review` (REST answer, WebSocket ack, history)
  and to no one else, until a moderator of the sender's region releases it (then delivered) or
  refuses it (deleted, the sender told); a moderator of another region can do neither;
- `flag`: delivered, and a report case opened by the system, read through the governed path
  (the access log records the moderator's read);
- attachments matched by exact hash on upload; self-harm answered with support, never blocked;
- `e2ee` content never scanned, whatever it says;
and every non-allow verdict recorded without the content.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from conftest import Server, new_member, raw, start_server, stop_server
from db_snapshot import stored
from e2ee_helpers import Megolm, published
from keyhold.core.screening import ALLOWED, Screening, blocked, most_severe
from keyhold.safety.scanning import Verdict
from keyhold.safety.screening import as_screening
from keyhold.sdk import Client, KeyholdError, StaffClient
from staff_helpers import add_all_staff, login_all
from stream_helpers import live

API = "/api/v1"
STAFF = {"mod_us": ("moderator", "us"), "mod_eu": ("moderator", "eu")}

# Made-up words, so that only the operator's rules (never the built-in scanner) decide.
BLOCK_WORD = "quokkablast"
HOLD_WORD = "zebrafruit"
FLAG_WORD = "flamingoflag"
RULES = f"""
[[rule]]
name = "test-threats"
category = "violent_threat"
action = "block"
terms = ["{BLOCK_WORD}"]
policy = "Threats of violence are not delivered."

[[rule]]
name = "test-spam"
category = "spam"
action = "hold"
terms = ["{HOLD_WORD}"]

[[rule]]
name = "test-harassment"
category = "harassment"
action = "flag"
terms = ["{FLAG_WORD}"]
"""
BLOCKED_FILE = b"a file on the operator's block list\n" * 10
HELD_FILE = b"a file on the operator's hold list\n" * 10


def hash_lists() -> str:
    blocked, held = hashlib.sha256(BLOCKED_FILE).hexdigest(), hashlib.sha256(HELD_FILE).hexdigest()
    return f"""
[[lists]]
name = "test-blocked"
category = "csam"
action = "block"
kind = "sha256"
hashes = ["{blocked}"]

[[lists]]
name = "test-held"
category = "scam"
action = "hold"
kind = "sha256"
hashes = ["{held}"]
"""


@dataclass
class World:
    server: Server
    staff: dict[str, StaffClient]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def verdict_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("verdicts") / "kh"
    home.mkdir()
    (home / "safety-rules.toml").write_text(RULES)
    (home / "safety-hashes.toml").write_text(hash_lists())
    # The scan in its child process (off for most test servers): every verdict below goes through it.
    server = start_server(home, request.param, env={"KEYHOLD_SCANNING_PROCESS": "on"})
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
async def world(verdict_server: Server) -> AsyncIterator[World]:
    secrets = add_all_staff(verdict_server, STAFF)
    staff = await login_all(verdict_server, secrets)
    yield World(verdict_server, staff)
    for client in staff.values():
        await client.close()


# -- helpers --------------------------------------------------------------------------------------


async def pair(server: Server) -> tuple[Client, Client, int]:
    a, b = await new_member(server, "us"), await new_member(server, "us")
    conversation = await a.start_conversation([b.username])
    return a, b, conversation.id


async def send(client: Client, conversation_id: int, text: str, **extra: Any) -> Any:
    return await raw(
        client, "POST", f"/conversations/{conversation_id}/messages", json={"text": text, **extra}
    )


async def history(client: Client, conversation_id: int) -> list[dict[str, Any]]:
    response = await raw(client, "GET", f"/conversations/{conversation_id}/messages")
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def replayed(client: Client) -> list[dict[str, Any]]:
    """Every event stored for the member so far: the replay from 0, up to the `ready` frame."""
    stream = await client.connect(0)
    try:
        await asyncio.wait_for(stream.ready.wait(), 10)
        upto, events = stream.last_seq, []
        while upto and (not events or events[-1]["seq"] < upto):
            events.append((await stream.next_event(10)).data)
        return events
    finally:
        await stream.close()


async def next_message(stream: Any) -> dict[str, Any]:
    """The next `message.new` on a live stream (other events passed over)."""
    while True:
        event = await stream.next_event(10)
        if event.type == "message.new":
            return dict(event.data["message"])


async def staff_call(staff: StaffClient, method: str, path: str, **kwargs: Any) -> Any:
    return await staff._request(method, path, **kwargs)


async def refused(awaitable: Any, status: int, needle: str = "") -> dict[str, Any]:
    with pytest.raises(KeyholdError) as caught:
        await awaitable
    assert caught.value.status == status, caught.value.problem
    assert needle in str(caught.value.problem.get("detail", "")), caught.value.problem
    return dict(caught.value.problem)


async def verdicts_of(server: Server, sender: Client) -> list[tuple[Any, ...]]:
    uid = int((await sender.me())["id"])
    return await stored(
        server,
        "SELECT action, category, message_id, attachment_id, scores, fired, policy FROM scan_verdicts"
        " WHERE sender_id = ? ORDER BY id",
        uid,
    )


async def held_case(staff: StaffClient, message_id: int) -> dict[str, Any]:
    page = await staff_call(staff, "GET", "/staff/held", params={"limit": 200})
    found = [c for c in page["items"] if c["reported_messages"] == [message_id]]
    assert len(found) == 1, page
    return dict(found[0])


def ws_url(server: Server) -> str:
    return "ws://" + server.url.removeprefix("http://") + API + "/stream?since=latest"


async def answer(ws: Any, ref: int) -> dict[str, Any]:
    while True:
        frame = dict(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
        if frame.get("ref") == ref and frame["type"] in ("ack", "error"):
            return frame


# -- block ----------------------------------------------------------------------------------------


async def test_a_blocked_send_is_refused_naming_the_policy_and_nothing_is_stored(world: World) -> None:
    server = world.server
    a, b, cid = await pair(server)
    first = await send(a, cid, "hello before")
    assert first.status_code == 201
    stream = await live(b)
    events_before = await replayed(b)

    response = await send(a, cid, f"you will see, {BLOCK_WORD} tonight")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["detail"].startswith("blocked by the safety policy: violent threat")
    assert problem["detail"].endswith("Threats of violence are not delivered.")
    assert problem["category"] == "violent_threat"
    assert BLOCK_WORD not in response.text  # the answer does not quote the message

    assert (await send(a, cid, "hello after")).status_code == 201
    assert (await next_message(stream))["text"] == "hello after"  # the blocked one never came
    assert [m["text"] for m in await history(b, cid)] == ["hello before", "hello after"]
    assert [m["text"] for m in await history(a, cid)] == ["hello before", "hello after"]
    new_events = (await replayed(b))[len(events_before) :]
    assert [e["message"]["text"] for e in new_events if e["type"] == "message.new"] == ["hello after"]
    # Recorded: the verdict, its category and what fired; never the text.
    [(action, category, message_id, _att, scores, fired, _policy)] = await verdicts_of(server, a)
    assert (action, category, message_id) == ("block", "violent_threat", None)
    assert "test-threats" in fired and BLOCK_WORD not in fired + scores
    assert await stored(server, "SELECT count(*) FROM messages WHERE conversation_id = ?", cid) == [(2,)]
    await asyncio.gather(stream.close(), a.close(), b.close())


async def test_websocket_frames_get_the_same_verdicts(world: World) -> None:
    server = world.server
    a, b, cid = await pair(server)
    async with websockets.connect(
        ws_url(server), additional_headers={"Authorization": f"Bearer {a.token}"}
    ) as ws:
        while orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "ready":
            pass
        frames = [f"{BLOCK_WORD}!", f"buy {HOLD_WORD} now", "just hello"]
        for ref, text in enumerate(frames, 1):
            await ws.send(orjson.dumps({"type": "send", "ref": ref, "conversation_id": cid, "text": text}))
        blocked, held, fine = [await answer(ws, ref) for ref in (1, 2, 3)]
        assert blocked["type"] == "error" and blocked["problem"]["status"] == 422, blocked
        assert blocked["problem"]["detail"].startswith("blocked by the safety policy: violent threat")
        assert held["type"] == "ack" and held["message"]["status"] == "pending_review", held
        assert held["message"]["text"] == f"buy {HOLD_WORD} now"
        assert fine["type"] == "ack" and "status" not in fine["message"], fine
        # Acknowledged in the order sent, and the socket stays open.
        assert held["message"]["id"] < fine["message"]["id"]
    assert [m["text"] for m in await history(b, cid)] == ["just hello"]
    assert [(m["text"], m.get("status")) for m in await history(a, cid)] == [
        (f"buy {HOLD_WORD} now", "pending_review"),
        ("just hello", None),
    ]
    await asyncio.gather(a.close(), b.close())


async def test_the_scan_child_going_away_loses_no_send_and_changes_no_verdict(world: World) -> None:
    """The server scans in a child process (`scanning_process` on); when the child is killed, sends waiting on it and those after it are scanned in-process, and a new
    child takes over after the pause. (One block per sender: more would suspend it.)"""
    server = world.server
    a, b, cid = await pair(server)
    await send(a, cid, "hello")
    for _ in range(600):
        if "scanning in a child process (pid " in server.log():
            break
        await asyncio.sleep(0.1)
    pid = int(server.log().rsplit("scanning in a child process (pid ", 1)[1].split(")", 1)[0])
    texts = ["fine one", f"buy {HOLD_WORD} now", "fine two", f"{BLOCK_WORD}!"]
    before = await asyncio.gather(*(send(a, cid, t) for t in texts))
    c, d, other = await pair(server)
    after = asyncio.gather(*(send(c, other, t) for t in texts))
    os.kill(pid, signal.SIGKILL)  # while those are on their way
    for responses in (before, await after):
        assert [r.status_code for r in responses] == [201, 201, 201, 422], [r.text for r in responses]
        assert [r.json().get("status") for r in responses[:3]] == [None, "pending_review", None]
    assert sorted(m["text"] for m in await history(b, cid)) == ["fine one", "fine two", "hello"]
    assert sorted(m["text"] for m in await history(d, other)) == ["fine one", "fine two"]
    await asyncio.gather(a.close(), b.close(), c.close(), d.close())


# -- hold -----------------------------------------------------------------------------------------


async def test_a_held_message_reaches_no_one_until_a_moderator_of_the_region_releases_it(
    world: World,
) -> None:
    server, mod, eu = world.server, world.staff["mod_us"], world.staff["mod_eu"]
    a, b, cid = await pair(server)
    b_stream, a_stream = await live(b), await live(a)

    response = await send(a, cid, f"great deal on {HOLD_WORD}")
    assert response.status_code == 201, response.text
    held = response.json()
    assert held["status"] == "pending_review" and held["text"] == f"great deal on {HOLD_WORD}"
    assert (await send(a, cid, "and hello")).status_code == 201
    assert (await next_message(b_stream))["text"] == "and hello"
    assert [m["text"] for m in await history(b, cid)] == ["and hello"]
    mine = await history(a, cid)
    assert [(m["id"], m.get("status")) for m in mine] == [
        (held["id"], "pending_review"),
        (mine[1]["id"], None),
    ]
    listed = (await raw(b, "GET", "/conversations")).json()["items"]
    [view] = [c for c in listed if c["id"] == cid]
    assert view["last_message"]["preview"] == "and hello" and view["unread"] == 1

    case = await held_case(mod, held["id"])
    assert case["held_message"] == {"message_id": held["id"], "state": "pending_review"}
    assert case["details"]["source"] == "system" and case["details"]["held"] is True
    verdict = case["details"]["verdict"]
    assert (
        verdict["action"] == "hold" and verdict["category"] == "spam" and "test-spam" in str(verdict["fired"])
    )
    assert HOLD_WORD not in orjson.dumps(case).decode()  # the case names the rule, never the text
    assert case["assigned_to"] == mod.id
    # Not another region's: not listed there, and neither released nor refused from there.
    assert held["id"] not in {
        m for c in (await staff_call(eu, "GET", "/staff/held"))["items"] for m in c["reported_messages"]
    }
    await refused(staff_call(eu, "POST", f"/staff/held/{case['id']}/release", json={}), 404, "region eu")
    await refused(staff_call(eu, "POST", f"/staff/held/{case['id']}/refuse", json={}), 404, "region eu")
    # The case is decided by releasing or refusing, not by a plain decision.
    await refused(mod.decide(case["id"], "no_violation"), 409, "release or refuse")
    # The moderator reads it through the governed path (logged), then releases it.
    [read] = await mod.read(case["id"], [held["id"]], reason="review of a held message")
    assert read["text"] == f"great deal on {HOLD_WORD}"
    released = await staff_call(mod, "POST", f"/staff/held/{case['id']}/release", json={"note": "fine"})
    assert released["status"] == "decided" and released["decision"]["review"] == "released"
    assert released["held_message"]["state"] == "released"

    delivered = await next_message(b_stream)
    assert (delivered["id"], delivered["text"]) == (held["id"], f"great deal on {HOLD_WORD}")
    assert "status" not in delivered
    while (event := await a_stream.next_event(10)).type != "message.review":
        pass
    assert event.data["outcome"] == "released" and event.data["message_id"] == held["id"]
    assert [m["text"] for m in await history(b, cid)] == [f"great deal on {HOLD_WORD}", "and hello"]
    assert [m.get("status") for m in await history(a, cid)] == [None, None]
    # Released once: not again, and not refused afterwards.
    await refused(staff_call(mod, "POST", f"/staff/held/{case['id']}/refuse", json={}), 409)
    await asyncio.gather(a_stream.close(), b_stream.close(), a.close(), b.close())


async def test_a_refused_held_message_is_deleted_and_only_its_sender_is_told(world: World) -> None:
    server, mod = world.server, world.staff["mod_us"]
    a, b, cid = await pair(server)
    response = await send(a, cid, f"{HOLD_WORD} for sale")
    held = response.json()
    assert response.status_code == 201 and held["status"] == "pending_review"
    case = await held_case(mod, held["id"])
    refused_case = await staff_call(mod, "POST", f"/staff/held/{case['id']}/refuse", json={"note": "no ads"})
    assert (
        refused_case["decision"]["review"] == "refused"
        and refused_case["decision"]["action"] == "remove_message"
    )
    assert refused_case["held_message"]["state"] == "refused"

    [told] = [e for e in await replayed(a) if e["type"] == "message.review"]
    assert told["outcome"] == "refused" and told["note"] == "no ads" and told["message_id"] == held["id"]
    assert [(m["deleted"], m["text"], m.get("status")) for m in await history(a, cid)] == [
        (True, None, "refused")
    ]
    assert await history(b, cid) == []
    assert not [e for e in await replayed(b) if e.get("message_id") == held["id"] or "message" in e]
    assert await stored(server, "SELECT body, review FROM messages WHERE id = ?", held["id"]) == [
        (None, "refused")
    ]
    # The sender may appeal the refusal like any decision.
    await a.appeal(case["id"], "it was a joke")
    await asyncio.gather(a.close(), b.close())


async def test_a_held_message_its_sender_deletes_is_never_announced_to_the_others(world: World) -> None:
    server, mod = world.server, world.staff["mod_us"]
    a, b, cid = await pair(server)
    held = (await send(a, cid, f"cheap {HOLD_WORD} here")).json()
    assert held["status"] == "pending_review"
    deleted = await raw(a, "DELETE", f"/messages/{held['id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert (await send(a, cid, "sorry")).status_code == 201
    b_events = await replayed(b)
    assert not [e for e in b_events if e.get("message_id") == held["id"]]
    assert [e["message"]["text"] for e in b_events if e["type"] == "message.new"] == ["sorry"]
    assert [e["type"] for e in await replayed(a) if e.get("message_id") == held["id"]] == ["message.deleted"]
    case = await held_case(mod, held["id"])
    assert case["held_message"]["state"] == "deleted"
    # Nothing left to release; the case is decided like any other.
    await refused(
        staff_call(mod, "POST", f"/staff/held/{case['id']}/release", json={}), 409, "no longer held"
    )
    assert (await mod.decide(case["id"], "no_violation"))["status"] == "decided"
    await asyncio.gather(a.close(), b.close())


# -- flag -----------------------------------------------------------------------------------------


async def test_a_flagged_message_is_delivered_and_the_system_opens_a_case_read_through_the_access_log(
    world: World,
) -> None:
    server, mod = world.server, world.staff["mod_us"]
    a, b, cid = await pair(server)
    b_stream = await live(b)
    response = await send(a, cid, f"you {FLAG_WORD}")
    assert response.status_code == 201 and "status" not in response.json(), response.text
    message_id = response.json()["id"]
    assert (await next_message(b_stream))["id"] == message_id

    [case] = [c for c in await mod.reports(status="open") if c["reported_messages"] == [message_id]]
    assert case["details"]["source"] == "system" and case["details"]["held"] is False
    assert case["details"]["category"] == "harassment" and case["details"]["verdict"]["action"] == "flag"
    assert case["conversation_id"] == cid and case["assigned_to"] == mod.id
    assert await staff_call(mod, "GET", f"/staff/held/{case['id']}") == {
        **await mod.report(case["id"]),
        "held_message": None,
    }
    assert not any(
        e["type"] == "content_accessed" and e["case"]["id"] == case["id"] for e in await a.access_events()
    )
    items = await mod.report_content(case["id"], reason="system flag review")
    assert f"you {FLAG_WORD}" in [m["text"] for m in items]
    # The read is in the access log, shown to the conversation's members like any report's.
    reads = [
        e
        for e in await a.access_events()
        if e["type"] == "content_accessed" and e["case"]["id"] == case["id"]
    ]
    assert len(reads) == 1 and message_id in reads[0]["messages"]
    decided = await mod.decide(case["id"], "warn", note="mind your words")
    assert decided["status"] == "decided"
    [(action, category, recorded_id, *_rest)] = await verdicts_of(server, a)
    assert (action, category, recorded_id) == ("flag", "harassment", message_id)
    await asyncio.gather(b_stream.close(), a.close(), b.close())


# -- support --------------------------------------------------------------------------------------


async def test_self_harm_gets_support_and_is_never_blocked(world: World) -> None:
    a, b, cid = await pair(world.server)
    response = await send(a, cid, "i want to kill myself tonight")
    assert response.status_code == 201, response.text
    support = response.json()["support"]
    assert "emergency" in support["text"] and support["url"].startswith("https://")
    [theirs] = await history(b, cid)
    assert theirs["text"] == "i want to kill myself tonight" and "support" not in theirs
    await asyncio.gather(a.close(), b.close())


# -- attachments ----------------------------------------------------------------------------------


async def upload(client: Client, cid: int, data: bytes) -> Any:
    return await raw(
        client, "POST", f"/conversations/{cid}/attachments", headers={"Keyhold-Filename": "f.bin"}, content=data
    )


async def test_attachments_are_matched_by_exact_hash_on_upload(world: World) -> None:
    server = world.server
    a, b, cid = await pair(server)
    blobs = sorted(p.name for p in (server.home / "blobs").rglob("*") if p.is_file())
    response = await upload(a, cid, BLOCKED_FILE)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("blocked by the safety policy: csam")
    assert sorted(p.name for p in (server.home / "blobs").rglob("*") if p.is_file()) == blobs
    assert await stored(server, "SELECT id FROM attachments WHERE conversation_id = ?", cid) == []

    ok = await upload(a, cid, b"an ordinary file")
    assert ok.status_code == 201
    assert (await send(a, cid, "", attachment_id=ok.json()["id"])).json().get("status") is None

    uploaded = await upload(a, cid, HELD_FILE)
    assert uploaded.status_code == 201, uploaded.text
    sent = await send(a, cid, "look at this", attachment_id=uploaded.json()["id"])
    assert sent.status_code == 201 and sent.json()["status"] == "pending_review", sent.text
    assert [m["attachment"]["id"] for m in await history(b, cid)] == [ok.json()["id"]]
    assert (await held_case(world.staff["mod_us"], sent.json()["id"]))["details"]["verdict"][
        "category"
    ] == "scam"
    actions = [(v[0], v[1], v[2] is None, v[3] is None) for v in await verdicts_of(server, a)]
    # block (nothing stored), hold on upload (the file), hold on send (the message)
    assert actions == [
        ("block", "csam", True, True),
        ("hold", "scam", True, False),
        ("hold", "scam", False, True),
    ]
    await asyncio.gather(a.close(), b.close())


# -- e2ee: never scanned --------------------------------------------------------------------------


async def test_e2ee_content_is_never_scanned(world: World) -> None:
    server = world.server
    alice, bob = await published(server), await published(server)
    cid = (await alice.client.start_conversation([bob.client.username], encryption="e2ee")).id
    session = Megolm()
    words = f"{BLOCK_WORD} {HOLD_WORD}"
    sealed = session.content(words, f"!{cid}:keyhold.local")
    # Even what reads as the rule's words in the clear (an opaque field to the service).
    cleartext = {**session.content("x"), "ciphertext": BLOCK_WORD + HOLD_WORD}
    for content in (sealed, cleartext):
        response = await raw(
            alice.client, "POST", f"/conversations/{cid}/messages", json={"encrypted": content}
        )
        assert response.status_code == 201, response.text
        assert "status" not in response.json()
    page = await raw(bob.client, "GET", f"/conversations/{cid}/messages")
    assert session.open(page.json()["items"][0]["event"]["content"]) == words
    # Plain text is not accepted there at all, whatever it says: refused as unencrypted, unscanned.
    plain = await raw(alice.client, "POST", f"/conversations/{cid}/messages", json={"text": words})
    assert plain.status_code == 422 and "end-to-end encrypted" in plain.json()["detail"]
    assert await verdicts_of(server, alice.client) == []
    # The same words in a standard conversation of the same pair are blocked.
    standard = await alice.client.start_conversation([bob.client.username])
    assert (await send(alice.client, standard.id, words)).status_code == 422
    assert [v[0] for v in await verdicts_of(server, alice.client)] == ["block"]
    await asyncio.gather(alice.client.close(), bob.client.close())


# -- scanning off ---------------------------------------------------------------------------------


async def test_scanning_can_be_turned_off(tmp_path: Path) -> None:
    home = tmp_path / "kh"
    home.mkdir()
    (home / "safety-rules.toml").write_text(RULES)
    server = start_server(home, env={"KEYHOLD_SCANNING": "off"})
    try:
        a, b, cid = await pair(server)
        response = await send(a, cid, f"{BLOCK_WORD} {HOLD_WORD}")
        assert response.status_code == 201 and "status" not in response.json(), response.text
        assert [m["text"] for m in await history(b, cid)] == [f"{BLOCK_WORD} {HOLD_WORD}"]
        await asyncio.gather(a.close(), b.close())
    finally:
        stop_server(server)


# -- the pieces, without a server -------------------------------------------------------------------


def test_the_most_severe_answer_decides_and_keeps_what_fired_in_both() -> None:
    text = Screening("flag", "harassment", "", {"harassment": 0.5, "spam": 0.2}, ("rule:a",))
    upload = Screening("hold", "scam", "p", {"scam": 0.9, "spam": 0.4}, ("hash:b",))
    combined = most_severe(text, upload)
    assert (combined.action, combined.category, combined.policy) == ("hold", "scam", "p")
    assert combined.scores == {"harassment": 0.5, "spam": 0.4, "scam": 0.9}
    assert combined.fired == ("rule:a", "hash:b")
    assert most_severe(ALLOWED, ALLOWED) == ALLOWED
    assert most_severe(upload, Screening("hold", "spam")).category == "scam"  # the first of equals


def test_self_harm_is_at_most_flagged_and_always_offered_support() -> None:
    for action in ("hold", "block"):
        screening = as_screening(Verdict(action, "self_harm", {"self_harm": 0.99}))
        assert (screening.action, screening.support) == ("flag", True)
    assert as_screening(Verdict("block", "violent_threat", policy="x")).action == "block"
    assert as_screening(Verdict("allow", "self_harm", support=True)).support is True


def test_a_blocked_answer_names_the_category_and_the_policy_and_never_a_5xx() -> None:
    problem = blocked(Screening("block", "violent_threat", "Threats of violence are not delivered."))
    assert problem.status == 422 and problem.slug == "blocked"
    assert (
        problem.detail
        == "blocked by the safety policy: violent threat. Threats of violence are not delivered."
    )
    assert blocked(Screening("block")).detail == "blocked by the safety policy: content"
