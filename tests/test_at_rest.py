"""Encryption at rest: no plaintext of a message or attachment lands anywhere on disk (invariant 1).

A dedicated server (debug logging, so access logs are on too) receives unique random canaries:
a text sent over REST, a text sent over the WebSocket, and an attachment of random bytes with an
ASCII canary inside and a canary file name. After proving they round-trip, every file under the
data dir and the server log is searched for the canaries (whole, hex/base64-encoded, and every
16-byte window) while the server runs (WAL present) and again after it stopped. Then the sealed
rows are checked directly in SQLite, and a sealed body / blob moved to another row must not open.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import sqlite3
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from canaries import WINDOW, Canaries, files_under
from conftest import PASSWORD, TLS, Server, new_member, start_server, stop_server
from keyhold.sdk import Client

API = "/api/v1"


def _letters(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters) for _ in range(n))


TEXT_CANARY = _letters(40)
WS_CANARY = _letters(40)
ATT_CANARY = _letters(40)
NAME_CANARY = _letters(32)
ATTACHMENT = secrets.token_bytes(3000) + ATT_CANARY.encode() + secrets.token_bytes(3000)
FILENAME = f"{NAME_CANARY}.bin"


CANARIES = Canaries(
    [s.encode() for s in (TEXT_CANARY, WS_CANARY, ATT_CANARY, NAME_CANARY, FILENAME)], raw=[ATTACHMENT]
)
leaks_in = CANARIES.found_in
scan = CANARIES.scan


def test_leak_detector_finds_what_it_looks_for() -> None:
    """The scanner itself: whole canaries, encodings and partial windows are all found."""
    noise = secrets.token_bytes(500)
    assert not leaks_in(noise)
    assert leaks_in(noise + TEXT_CANARY.encode() + noise)
    assert leaks_in(noise + TEXT_CANARY[7 : 7 + WINDOW].encode() + noise)
    assert leaks_in(noise + base64.b64encode(b"x" + ATT_CANARY.encode()) + noise)
    assert leaks_in(noise + ATT_CANARY.encode().hex().encode() + noise)
    assert leaks_in(noise + ATTACHMENT[1000:1016] + noise)
    assert leaks_in(noise + NAME_CANARY.encode() + noise)


@dataclass
class Scenario:
    home: Path
    server: Server
    log_path: Path
    conversation_id: int = 0
    sender: str = ""
    text_message_id: int = 0
    ws_message_id: int = 0
    attachment_id: str = ""
    swap_ids: tuple[int, int] = (0, 0)
    swap_texts: tuple[str, str] = ("", "")
    control_id: int = 0
    spare_attachment: tuple[str, bytes] = ("", b"")
    notes: list[str] = field(default_factory=list)

    @property
    def first_log(self) -> Path:
        return self.log_path.with_name("first-run-server.log")

    def restart(self) -> None:
        stop_server(self.server)
        self.server = start_server(self.home, "sqlite")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    home = tmp_path_factory.mktemp("at-rest") / "kh"
    srv = start_server(home, "sqlite", extra_args=("--log-level", "debug"))
    state = Scenario(home=home, server=srv, log_path=srv.log_path)
    yield state
    stop_server(state.server)


async def test_canaries_round_trip(scenario: Scenario) -> None:
    srv = scenario.server
    alice, bob = await new_member(srv, "us"), await new_member(srv, "eu")
    try:
        conv = await alice.start_conversation([bob.username])
        scenario.conversation_id, scenario.sender = conv.id, alice.username
        sent = await alice.send(conv.id, TEXT_CANARY)
        scenario.text_message_id = sent.id
        async with await alice.connect() as stream:
            scenario.ws_message_id = (await stream.send(conv.id, WS_CANARY)).id
        with_file = await alice.send_file(conv.id, ATTACHMENT, FILENAME, "application/x-canary")
        assert with_file.attachment is not None
        scenario.attachment_id = with_file.attachment.id
        spare = secrets.token_bytes(2000)
        spare_att = await alice.upload(conv.id, spare, "spare.bin")
        scenario.spare_attachment = (spare_att.id, spare)
        one, two = "swap-one-" + _letters(20), "swap-two-" + _letters(20)
        m1, m2 = await alice.send(conv.id, one), await alice.send(conv.id, two)
        control = await alice.send(conv.id, "control message")
        scenario.swap_ids, scenario.swap_texts, scenario.control_id = (m1.id, m2.id), (one, two), control.id

        # Both canaries come back intact to the other participant.
        history = {m.id: m for m in await bob.history(conv.id, limit=50)}
        assert history[scenario.text_message_id].text == TEXT_CANARY
        assert history[scenario.ws_message_id].text == WS_CANARY
        att = history[with_file.id].attachment
        assert att is not None and att.filename == FILENAME and att.size == len(ATTACHMENT)
        assert await bob.download(scenario.attachment_id) == ATTACHMENT
        assert await alice.download(spare_att.id) == spare
    finally:
        await alice.close()
        await bob.close()


def test_no_canary_in_data_dir_while_running(scenario: Scenario) -> None:
    assert scenario.text_message_id, "needs test_canaries_round_trip"
    files = files_under(scenario.home)
    names = {p.name for p in files}
    assert "keyhold.db-wal" in names, f"expected a live WAL to search too, found {sorted(names)}"
    assert any(p.parent.parent.name == "blobs" for p in files), "expected sealed blobs to search"
    assert {"keys.json", "config.toml", "keyhold.db"} <= names
    leaks = scan(files)
    assert not leaks, f"plaintext found in the data dir while the server runs: {leaks}"


def test_no_canary_in_data_dir_after_stop(scenario: Scenario) -> None:
    assert scenario.text_message_id, "needs test_canaries_round_trip"
    stop_server(scenario.server)
    assert scenario.server.process.returncode is not None
    leaks = scan(files_under(scenario.home))
    assert not leaks, f"plaintext found in the data dir after shutdown: {leaks}"


def test_no_canary_in_server_log(scenario: Scenario) -> None:
    """The server ran with --log-level debug (uvicorn access log on): still no content."""
    assert scenario.server.process.poll() is not None, "runs after the server stopped"
    # The restart below reuses the log path: keep this run's log beside it for inspection.
    shutil.copyfile(scenario.log_path, scenario.first_log)
    leaks = scan([scenario.log_path])
    assert not leaks, f"plaintext found in the server log: {leaks}\n" + "\n".join(
        line for line in scenario.log_path.read_text(errors="replace").splitlines() if NAME_CANARY in line
    )


def _db(scenario: Scenario) -> sqlite3.Connection:
    return sqlite3.connect(scenario.home / "keyhold.db")


def test_stored_rows_are_sealed(scenario: Scenario) -> None:
    """Looked at directly: bodies are AES-GCM envelopes (format byte, 12-byte nonce, 16-byte
    tag), never the plaintext; the file name is sealed too."""
    assert scenario.server.process.poll() is not None, "runs with the server stopped"
    conn = _db(scenario)
    try:
        rows = dict(
            conn.execute(
                "SELECT id, body FROM messages WHERE id IN (?, ?)",
                (scenario.text_message_id, scenario.ws_message_id),
            ).fetchall()
        )
        for message_id, plaintext in (
            (scenario.text_message_id, TEXT_CANARY),
            (scenario.ws_message_id, WS_CANARY),
        ):
            body = rows[message_id]
            assert isinstance(body, bytes) and body, "the body column holds sealed bytes"
            assert body != plaintext.encode() and plaintext.encode() not in body
            assert len(body) == 1 + 12 + len(plaintext) + 16, "format byte + nonce + ciphertext + tag"
        meta = conn.execute(
            "SELECT sealed_meta FROM attachments WHERE id = ?", (scenario.attachment_id,)
        ).fetchone()[0]
        assert NAME_CANARY.encode() not in meta and b"application/x-canary" not in meta
        events = conn.execute("SELECT data FROM events").fetchall()
        assert not any(TEXT_CANARY in d or WS_CANARY in d for (d,) in events), "events carry no content"
    finally:
        conn.close()


def test_sealed_body_moved_to_another_row_does_not_open(scenario: Scenario) -> None:
    """Swap the sealed bodies of two messages (same conversation, sender and epoch, so the same
    DEK): the associated data binds the message id, so neither may open as the other."""
    assert scenario.server.process.poll() is not None, "runs with the server stopped"
    (m1, m2), (t1, t2) = scenario.swap_ids, scenario.swap_texts
    conn = _db(scenario)
    try:
        with conn:
            rows = dict(conn.execute("SELECT id, body FROM messages WHERE id IN (?, ?)", (m1, m2)).fetchall())
            conn.execute("UPDATE messages SET body = ? WHERE id = ?", (rows[m2], m1))
            conn.execute("UPDATE messages SET body = ? WHERE id = ?", (rows[m1], m2))
        epochs = {e for (e,) in conn.execute("SELECT epoch FROM messages WHERE id IN (?, ?)", (m1, m2))}
        assert len(epochs) == 1, "both rows share one epoch key: only the AAD tells them apart"
    finally:
        conn.close()

    scenario.restart()
    srv = scenario.server
    token = httpx.post(
        f"{srv.url}{API}/sessions", verify=TLS, json={"username": scenario.sender, "password": PASSWORD}, timeout=30
    ).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    cid = scenario.conversation_id

    for what, url in (
        ("history", f"{srv.url}{API}/conversations/{cid}/messages?limit=50"),
        ("one conversation", f"{srv.url}{API}/conversations/{cid}"),
        ("conversation list", f"{srv.url}{API}/conversations"),
    ):
        reply = httpx.get(url, verify=TLS, headers=auth, timeout=30)
        scenario.notes.append(f"{what}: {reply.status_code} {reply.text[:300]}")
        # Whatever the server does, it never shows one message's plaintext as another's.
        if reply.status_code == 200 and what == "history":
            items = {m["id"]: m for m in reply.json()["items"]}
            assert items[m1]["text"] != t2 and items[m2]["text"] != t1, "a moved body opened as its new row"
            assert items[m1]["text"] != t1 and items[m2]["text"] != t2, "a tampered row showed content"
            assert items[scenario.control_id]["text"] == "control message"
        elif reply.status_code != 200:
            assert reply.headers["content-type"].startswith("application/problem+json"), reply.text
            problem = reply.json()
            assert problem["detail"], problem
            assert t1 not in reply.text and t2 not in reply.text
        else:  # one conversation / the list preview only the last (untampered) message
            assert t1 not in reply.text and t2 not in reply.text

    history = httpx.get(f"{srv.url}{API}/conversations/{cid}/messages?limit=50", verify=TLS, headers=auth, timeout=30)
    if history.status_code >= 500:
        # A refusal is acceptable, a silent one is not: the failure must be in the server log.
        log = srv.log()
        assert "SealError" in log or "authenticate" in log, f"a 5xx without a logged reason:\n{log[-2000:]}"
    # Pages that do not include the tampered rows still read normally.
    after = httpx.get(
        f"{srv.url}{API}/conversations/{cid}/messages", verify=TLS,
        params={"after": m2, "limit": 50},
        headers=auth,
        timeout=30,
    )
    assert after.status_code == 200, after.text
    assert [m["text"] for m in after.json()["items"]] == ["control message"]
    print("\n".join(scenario.notes))


def test_blob_moved_to_another_attachment_does_not_open(scenario: Scenario) -> None:
    """Copy one attachment's sealed blob over another's: the AAD binds the attachment id."""
    srv = scenario.server
    assert srv.process.poll() is None, "runs with the restarted server"
    spare_id, spare = scenario.spare_attachment
    blobs = scenario.home / "blobs"
    source = next(blobs.rglob(scenario.attachment_id))
    target = next(blobs.rglob(spare_id))
    shutil.copyfile(source, target)
    token = httpx.post(
        f"{srv.url}{API}/sessions", verify=TLS, json={"username": scenario.sender, "password": PASSWORD}, timeout=30
    ).json()["token"]
    reply = httpx.get(f"{srv.url}{API}/attachments/{spare_id}", verify=TLS, headers={"Authorization": f"Bearer {token}"})
    scenario.notes.append(f"moved blob: {reply.status_code} {reply.text[:200]!r}")
    print(scenario.notes[-1])
    assert reply.content != ATTACHMENT and ATT_CANARY.encode() not in reply.content
    assert reply.content != spare
    assert reply.status_code >= 400
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert json.loads(reply.content)["detail"]
    if reply.status_code >= 500:
        log = srv.log()
        assert "SealError" in log or "authenticate" in log, f"a 5xx without a logged reason:\n{log[-2000:]}"


async def test_untampered_content_still_reads_after_restart(scenario: Scenario) -> None:
    srv = scenario.server
    client = await Client.login(srv.url, scenario.sender, PASSWORD)
    try:
        items = await client.history(scenario.conversation_id, after=0, limit=3)
        assert [m.text for m in items[:2]] == [TEXT_CANARY, WS_CANARY]
        assert await client.download(scenario.attachment_id) == ATTACHMENT
    finally:
        await client.close()
