"""End-to-end encryption in the browser (issue 10): matrix-sdk-crypto-wasm's OlmMachine in
Chromium, against a real Keyhold server, with Python SDK devices (vodozemac) and other browsers.

What runs here is the built app's e2ee chunk (web/src/e2ee/codec.ts, the module the member view
loads with a dynamic import for e2ee conversations), driven through its public functions: each
browser member signs in on a device of their own, opens the stream (first-frame auth) and hands
its events to the chunk, as the member app does. The passphrase is typed into the chunk's own
dialog, and the e2ee components (devices that can read, safety number, SAS) are mounted from the
same chunk and used with the mouse and keyboard. The member app's conversation screens are
covered by the member app's own tests.

Covered: a browser and a Python SDK member chat both ways; two browsers chat; the wasm is not
fetched before the first e2ee conversation and is no part of the main chunk; franked reports;
safety numbers (digits and QR payload) agree with the Python SDK's; SAS verification with a
Python device, both directions; an identity change stops sends until accepted; a tampered
inclusion proof (page.route) is shown and refuses the send; a tampered franking is
"unverifiable"; the passphrase protects the IndexedDB store across a reload.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, Route

from browser.conftest import NewPage
from browser.helpers import WEB_DIST, AsyncRunner, check_axe, page_problems, screenshot
from conftest import PASSWORD, Server, new_member
from keyhold.sdk import Client

PASSPHRASE = "long enough passphrase"
WAIT_MS = 30_000


def codec_url() -> str:
    """The built e2ee chunk (its name carries a content hash)."""
    found = [p for p in (WEB_DIST / "assets").glob("codec-*.js") if "e2eeCodec" in p.read_text()]
    assert len(found) == 1, f"expected one built e2ee codec chunk, found {found}"
    return f"/assets/{found[0].name}"


SIGN_IN = """async ({ username, password, deviceId }) => {
  const answer = await fetch("/api/v1/sessions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password, device_id: deviceId, device_name: "browser test" }),
  });
  if (!answer.ok) throw new Error(`sign-in: ${answer.status} ${await answer.text()}`);
  const s = await answer.json();
  const listeners = new Set();
  const kh = { codecs: {}, errors: {}, frames: [], ready: false, listeners };
  window.__kh = kh;
  const ws = new WebSocket(`ws://${location.host}/api/v1/stream`);
  ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: s.token, since: 0 }));
  ws.onmessage = (m) => {
    const frame = JSON.parse(m.data);
    if (frame.type === "ready") kh.ready = true;
    kh.frames.push(frame);
    for (const listener of [...listeners]) listener(frame);
  };
  kh.ws = ws;
  kh.session = {
    token: s.token, username: s.username, userId: s.user_id, deviceId: s.device_id,
    events: { subscribe(l) { listeners.add(l); return () => listeners.delete(l); } },
  };
  return { userId: s.user_id, deviceId: s.device_id, token: s.token };
}"""

LOAD = """async (url) => {
  const kh = window.__kh;
  kh.m = await import(url);
  // As the member app does from sign-in on: every stream event to the e2ee runtime.
  kh.listeners.add((frame) => kh.m.feedStreamEvent(frame));
  for (const frame of kh.frames) kh.m.feedStreamEvent(frame);
}"""

OPEN_CODEC = """async (id) => {
  const kh = window.__kh;
  const r = await fetch(`/api/v1/conversations/${id}`, { headers: { authorization: `Bearer ${kh.session.token}` } });
  const conversation = await r.json();
  kh.codecs[id] = null;
  delete kh.errors[id];
  kh.m.e2eeCodec(conversation, kh.session).then(
    (codec) => { kh.codecs[id] = codec; },
    (e) => { kh.errors[id] = String((e && e.message) || e); },
  );
}"""

SEND = """async ({ id, text }) => {
  const kh = window.__kh;
  let fields;
  try {
    fields = await kh.codecs[id].seal(text);
  } catch (e) {
    return { refused: `${e.name}: ${e.message}` };
  }
  const r = await fetch(`/api/v1/conversations/${id}/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${kh.session.token}` },
    body: JSON.stringify({ ...fields, idempotency_key: crypto.randomUUID() }),
  });
  if (!r.ok) throw new Error(`send: ${r.status} ${await r.text()}`);
  return await r.json();
}"""

READ = """async (id) => {
  const kh = window.__kh;
  const r = await fetch(`/api/v1/conversations/${id}/messages?limit=100`, {
    headers: { authorization: `Bearer ${kh.session.token}` },
  });
  const page = await r.json();
  const out = [];
  for (const message of page.items) {
    const opened = await kh.codecs[id].open(message);
    out.push({ id: message.id, sender: message.sender, text: opened.text, state: opened.state, note: opened.note ?? null });
  }
  return out;
}"""

MOUNT = """({ name, props }) => {
  const kh = window.__kh;
  let host = document.getElementById("e2ee-test-host");
  if (!host) {
    host = document.createElement("main");
    host.id = "e2ee-test-host";
    document.body.append(host);
    // The component alone on the page (the signed-out app behind it is not this test's).
    document.getElementById("app").hidden = true;
  }
  kh.unmount?.();
  kh.unmount = kh.m.mount(kh.m[name], props, host);
}"""


class BrowserMember:
    """One member in one browser context: signed in on a device of its own, its stream open,
    the built e2ee chunk loaded."""

    def __init__(self, page: Page, username: str, device_id: str) -> None:
        self.page = page
        self.username = username
        self.device_id = device_id
        self.user_id = ""
        self.token = ""
        self.wasm_requests: list[str] = []

    @classmethod
    def start(
        cls, new_page: NewPage, username: str, viewport: tuple[int, int] = (1280, 900)
    ) -> BrowserMember:
        page = new_page(viewport=viewport)
        member = cls(page, username, "WEB" + uuid.uuid4().hex[:8].upper())
        page.on("request", lambda r: member.wasm_requests.append(r.url) if r.url.endswith(".wasm") else None)
        assert page.goto("/").status == 200  # type: ignore[union-attr]
        page.wait_for_function("() => document.getElementById('app')?.childElementCount > 0")
        member.sign_in()
        return member

    def sign_in(self) -> None:
        answer = self.page.evaluate(
            SIGN_IN, {"username": self.username, "password": PASSWORD, "deviceId": self.device_id}
        )
        self.user_id, self.token = answer["userId"], answer["token"]
        assert answer["deviceId"] == self.device_id
        self.page.wait_for_function("() => window.__kh.ready")
        self.page.evaluate(LOAD, codec_url())

    def unlock(self, conversation_id: int, new: bool = True, passphrase: str = PASSPHRASE) -> None:
        """Opens the conversation's codec: the passphrase dialog comes, the member types it."""
        self.page.evaluate(OPEN_CODEC, conversation_id)
        dialog = self.page.get_by_role("dialog")
        dialog.get_by_label("Passphrase", exact=True).fill(passphrase)
        if new:
            dialog.get_by_label("The same passphrase again").fill(passphrase)
            dialog.get_by_role("button", name="Set passphrase").click()
        else:
            dialog.get_by_role("button", name="Unlock").click()
        self.wait_codec(conversation_id)

    def open_codec(self, conversation_id: int) -> None:
        """A further conversation's codec, once the device is unlocked (no prompt)."""
        self.page.evaluate(OPEN_CODEC, conversation_id)
        self.wait_codec(conversation_id)

    def wait_codec(self, conversation_id: int) -> None:
        self.page.wait_for_function(
            "(id) => window.__kh.codecs[id] || window.__kh.errors[id]", arg=conversation_id, timeout=WAIT_MS
        )
        error = self.page.evaluate("(id) => window.__kh.errors[id] ?? null", conversation_id)
        assert error is None, error

    def send(self, conversation_id: int, text: str) -> dict[str, Any]:
        result: dict[str, Any] = self.page.evaluate(SEND, {"id": conversation_id, "text": text})
        return result

    def sent(self, conversation_id: int, text: str) -> int:
        result = self.send(conversation_id, text)
        assert "refused" not in result, result
        return int(result["id"])

    def read(self, conversation_id: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.page.evaluate(READ, conversation_id)
        return result

    def texts(self, conversation_id: int) -> list[str | None]:
        return [m["text"] for m in self.read(conversation_id)]

    def mount(self, name: str, **props: Any) -> None:
        self.page.evaluate(MOUNT, {"name": name, "props": props})


@pytest.fixture
def py_members(web_server: Server, aio: AsyncRunner) -> Iterator[list[Client]]:
    """Python SDK members made by a test, closed after it."""
    made: list[Client] = []
    yield made
    for client in made:
        aio.run(client.close())


def python_member(web_server: Server, aio: AsyncRunner, made: list[Client], e2ee: bool = True) -> Client:
    client = aio.run(new_member(web_server, e2ee=e2ee))
    made.append(client)
    return client


def browser_account(web_server: Server, aio: AsyncRunner, made: list[Client]) -> str:
    """An account whose only e2ee device will be a browser (its SDK session publishes no keys)."""
    return python_member(web_server, aio, made, e2ee=False).username


# -- the wasm is loaded only for e2ee ------------------------------------------------------------


def test_the_wasm_is_its_own_lazy_chunk() -> None:
    """The main chunk (the one index.html loads) neither contains nor names the crypto core, and
    stays under 150 KB gzipped; the wasm bindings live in the e2ee machine chunk only."""
    import gzip

    html = (WEB_DIST / "index.html").read_text()
    entries = re.findall(r'src="/assets/([^"]+\.js)"', html)
    assert len(entries) == 1, html
    main = (WEB_DIST / "assets" / entries[0]).read_bytes()
    assert len(gzip.compress(main)) <= 150 * 1024
    for marker in (b"matrix_sdk_crypto_wasm", b"OlmMachine", b".wasm"):
        assert marker not in main, marker
    holders = [p.name for p in (WEB_DIST / "assets").glob("*.js") if b"OlmMachine" in p.read_bytes()]
    assert len(holders) == 1 and holders[0].startswith("machine-"), holders
    assert len(list((WEB_DIST / "assets").glob("*.wasm"))) == 1


# -- chatting ----------------------------------------------------------------------------------


def test_a_browser_and_a_python_member_chat_both_ways(
    web_server: Server, new_page: NewPage, aio: AsyncRunner, py_members: list[Client]
) -> None:
    python = python_member(web_server, aio, py_members)
    name = browser_account(web_server, aio, py_members)
    browser = BrowserMember.start(new_page, name)
    conversation = aio.run(python.start_conversation([name], encryption="e2ee"))
    assert browser.wasm_requests == []  # nothing e2ee opened yet

    browser.unlock(conversation.id)
    assert len(browser.wasm_requests) == 1
    first = browser.sent(conversation.id, "from the browser's OlmMachine to vodozemac ✓")
    assert [m.text for m in aio.run(python.history(conversation.id))] == [
        "from the browser's OlmMachine to vodozemac ✓"
    ]

    aio.run(python.send(conversation.id, "and back from Python"))
    read = browser.read(conversation.id)
    assert [(m["text"], m["state"]) for m in read] == [
        ("from the browser's OlmMachine to vodozemac ✓", "ok"),
        ("and back from Python", "ok"),
    ], read
    # A second round on the same sessions.
    browser.sent(conversation.id, "again from the browser")
    aio.run(python.send(conversation.id, "again from Python"))
    expected = [
        "from the browser's OlmMachine to vodozemac ✓",
        "and back from Python",
        "again from the browser",
        "again from Python",
    ]
    assert browser.texts(conversation.id) == expected
    assert [m.text for m in aio.run(python.history(conversation.id))] == expected
    assert first > 0
    assert page_problems(browser.page) == []


def test_two_browsers_chat(
    web_server: Server, new_page: NewPage, aio: AsyncRunner, py_members: list[Client]
) -> None:
    alice = BrowserMember.start(new_page, browser_account(web_server, aio, py_members))
    bob = BrowserMember.start(new_page, browser_account(web_server, aio, py_members), viewport=(375, 812))
    # Bob's device exists (keys published) before Alice writes: unlock it on a conversation of his own first.
    starter = next(c for c in py_members if c.username == alice.username)
    conversation = aio.run(starter.start_conversation([bob.username], encryption="e2ee"))
    bob.unlock(conversation.id)
    alice.unlock(conversation.id)
    alice.sent(conversation.id, "hello from one browser")
    bob.sent(conversation.id, "hello back from the other")
    alice.sent(conversation.id, "and once more")
    expected = ["hello from one browser", "hello back from the other", "and once more"]
    for member in (alice, bob):
        read = member.read(conversation.id)
        assert [(m["text"], m["state"]) for m in read] == [(t, "ok") for t in expected], read
    # Each browser is the first e2ee device of its member: it made the cross-signing keys.
    for member in (alice, bob):
        status = member.page.evaluate("() => window.__kh.m.e2eeStatus.get()")
        assert status["phase"] == "ready" and status["crossSigning"] is True, status
    bob.mount("DeviceList", conversationId=conversation.id)
    devices = bob.page.get_by_test_id("e2ee-reader")
    devices.first.wait_for()
    assert sorted(devices.evaluate_all("(items) => items.map((i) => i.dataset.device)")) == sorted(
        [alice.device_id, bob.device_id]
    )
    assert check_axe(bob.page) == []
    screenshot(bob.page, "e2ee-devices-phone")
    for member in (alice, bob):
        assert page_problems(member.page) == []


# -- reports, safety numbers, verification ------------------------------------------------------


def test_franked_reports_of_e2ee_messages(
    web_server: Server, new_page: NewPage, aio: AsyncRunner, py_members: list[Client]
) -> None:
    python = python_member(web_server, aio, py_members)
    browser = BrowserMember.start(new_page, browser_account(web_server, aio, py_members))
    conversation = aio.run(python.start_conversation([browser.username], encryption="e2ee"))
    browser.unlock(conversation.id)
    browser.sent(conversation.id, "the browser franks what it sends")
    aio.run(python.send(conversation.id, "you are going to regret this"))
    read = browser.read(conversation.id)
    assert [m["state"] for m in read] == ["ok", "ok"]

    # The browser reports the Python member's message: the service checks the franking.
    case = browser.page.evaluate(
        """async ({ id, messageId }) => {
            const kh = window.__kh;
            const r = await fetch(`/api/v1/conversations/${id}/messages?limit=10`, { headers: { authorization: `Bearer ${kh.session.token}` } });
            const message = (await r.json()).items.find((m) => m.id === messageId);
            await kh.codecs[id].open(message);
            const fields = await kh.codecs[id].reportFields(message);
            const answer = await fetch("/api/v1/reports", {
              method: "POST",
              headers: { "content-type": "application/json", authorization: `Bearer ${kh.session.token}` },
              body: JSON.stringify({ conversation_id: id, message_ids: [messageId], category: "harassment", ...fields }),
            });
            return { status: answer.status, body: await answer.json(), revealed: fields.franking?.content?.body ?? null };
        }""",
        {"id": conversation.id, "messageId": read[1]["id"]},
    )
    assert case["status"] == 201 and case["body"]["verified_sender"] is True, case
    assert case["revealed"] == "you are going to regret this"

    # The Python member reports the browser's message: the browser's franking opens for the service.
    message = aio.run(python.history(conversation.id))[0]
    assert message.text == "the browser franks what it sends" and message.franked
    report = aio.run(python.report(conversation.id, [message.id], "spam", reveal=message))
    assert report["verified_sender"] is True, report

    # A franking that does not open (the commitment changed in transit) is "unverifiable", no text.
    tampered = browser.page.evaluate(
        """async ({ id, messageId }) => {
            const kh = window.__kh;
            const r = await fetch(`/api/v1/conversations/${id}/messages?limit=10`, { headers: { authorization: `Bearer ${kh.session.token}` } });
            const message = (await r.json()).items.find((m) => m.id === messageId);
            const bytes = Uint8Array.from(atob(message.franking.commitment + "="), (c) => c.charCodeAt(0));
            bytes[0] ^= 1;
            message.franking.commitment = btoa(String.fromCharCode(...bytes)).replace(/=+$/, "");
            return await kh.codecs[id].open(message);
        }""",
        {"id": conversation.id, "messageId": read[1]["id"]},
    )
    assert tampered["state"] == "unverifiable" and tampered["text"] is None, tampered
    assert "franking" in tampered["note"]
    assert page_problems(browser.page) == []


def test_safety_numbers_agree_with_the_python_sdk(
    web_server: Server, new_page: NewPage, aio: AsyncRunner, py_members: list[Client]
) -> None:
    python = python_member(web_server, aio, py_members)
    browser = BrowserMember.start(new_page, browser_account(web_server, aio, py_members), viewport=(375, 812))
    conversation = aio.run(python.start_conversation([browser.username], encryption="e2ee"))
    browser.unlock(conversation.id)
    browser.mount("SafetyNumber", username=python.username)
    digits = browser.page.get_by_test_id("e2ee-digits")
    digits.wait_for(timeout=WAIT_MS)
    theirs = aio.run(python.safety_number(browser.username))
    assert digits.get_attribute("data-digits") == theirs.digits
    assert digits.inner_text().split() == theirs.formatted.split()
    payload = browser.page.evaluate(
        """async (name) => {
            const number = await window.__kh.m.currentDevice().safetyNumber(name);
            return btoa(String.fromCharCode(...number.qrPayload));
        }""",
        python.username,
    )
    assert theirs.matches(base64.b64decode(payload))
    assert browser.page.get_by_test_id("e2ee-qr").is_visible()
    # Typing the other side's digits compares them.
    browser.page.get_by_label("Their digits (optional, to compare)").fill(theirs.formatted)
    assert browser.page.get_by_text("✓ The numbers match.").is_visible()
    assert check_axe(browser.page) == []
    screenshot(browser.page, "e2ee-safety-number-phone")
    assert page_problems(browser.page) == []


def test_sas_verification_with_a_python_device(
    web_server: Server, new_page: NewPage, aio: AsyncRunner, py_members: list[Client]
) -> None:
    python = python_member(web_server, aio, py_members)
    browser = BrowserMember.start(new_page, browser_account(web_server, aio, py_members))
    conversation = aio.run(python.start_conversation([browser.username], encryption="e2ee"))
    browser.unlock(conversation.id)
    stream = aio.run(python.connect(since="latest"))
    try:
        # The browser asks; the Python device accepts; both compare and confirm.
        async def python_side() -> tuple[list[str], list[int], bool]:
            incoming = await python.next_verification_request(timeout=60)
            await incoming.accept()
            codes = await incoming.codes(60)
            await incoming.confirm()
            return [name for _, name in codes.emoji], list(codes.decimals), await incoming.done(60)

        answering = asyncio.run_coroutine_threadsafe(python_side(), aio.loop)
        browser.mount("VerifyDevice", username=python.username)
        browser.page.get_by_test_id("e2ee-verify-start").click()
        emoji = browser.page.get_by_test_id("e2ee-sas-emoji")
        emoji.wait_for(timeout=WAIT_MS)
        shown = emoji.locator("li > span:not(.e2ee-symbol)").all_inner_texts()
        assert check_axe(browser.page) == []
        screenshot(browser.page, "e2ee-sas")
        decimals = browser.page.get_by_test_id("e2ee-sas-decimals").inner_text()
        browser.page.get_by_role("button", name="They match").click()
        names, numbers, done = answering.result(60)
        assert shown == names and done
        assert decimals == " ".join(str(n) for n in numbers)
        browser.page.get_by_text("✓ Verified").wait_for(timeout=WAIT_MS)
        assert python.is_verified(browser.username)
        status = browser.page.evaluate(
            "(name) => window.__kh.m.currentDevice().contact(name)", python.username
        )
        assert status["verified"] is True, status

        # The Python device asks this time; the browser's request banner accepts.
        browser.mount("VerificationRequests")

        async def python_asks() -> tuple[list[str], bool]:
            outgoing = await python.start_verification(browser.username)
            codes = await outgoing.codes(60)
            await outgoing.confirm()
            return [name for _, name in codes.emoji], await outgoing.done(60)

        asking = asyncio.run_coroutine_threadsafe(python_asks(), aio.loop)
        requests = browser.page.get_by_test_id("e2ee-verification-requests")
        requests.get_by_role("button", name="Accept").click(timeout=WAIT_MS)
        emoji = requests.get_by_test_id("e2ee-sas-emoji")
        emoji.wait_for(timeout=WAIT_MS)
        shown = emoji.locator("li > span:not(.e2ee-symbol)").all_inner_texts()
        requests.get_by_role("button", name="They match").click()
        names, done = asking.result(60)
        assert shown == names and done
        requests.get_by_text("✓ Verified").wait_for(timeout=WAIT_MS)
    finally:
        aio.run(stream.close())
    assert page_problems(browser.page) == []


def test_sas_codes_that_differ_are_refused(
    web_server: Server, new_page: NewPage, aio: AsyncRunner, py_members: list[Client]
) -> None:
    python = python_member(web_server, aio, py_members)
    browser = BrowserMember.start(new_page, browser_account(web_server, aio, py_members))
    conversation = aio.run(python.start_conversation([browser.username], encryption="e2ee"))
    browser.unlock(conversation.id)
    stream = aio.run(python.connect(since="latest"))
    try:

        async def python_side() -> tuple[str | None, bool]:
            incoming = await python.next_verification_request(timeout=60)
            await incoming.accept()
            await incoming.codes(60)
            done = await incoming.done(60)
            return incoming.cancel_code, done

        answering = asyncio.run_coroutine_threadsafe(python_side(), aio.loop)
        browser.mount("VerifyDevice", username=python.username)
        browser.page.get_by_test_id("e2ee-verify-start").click()
        browser.page.get_by_test_id("e2ee-sas-emoji").wait_for(timeout=WAIT_MS)
        browser.page.get_by_role("button", name="They don't match").click()
        code, done = answering.result(60)
        assert done is False and code == "m.mismatched_sas", code
        browser.page.get_by_text("m.mismatched_sas").wait_for(timeout=WAIT_MS)
        assert not python.is_verified(browser.username)
    finally:
        aio.run(stream.close())
    assert page_problems(browser.page) == []


# -- what stops a send ---------------------------------------------------------------------------


def tamper_inclusion_proof(user_id: str):  # type: ignore[no-untyped-def]
    """A route handler: the real keys/query answer, with one hash of `user_id`'s device proofs flipped."""

    def handle(route: Route) -> None:
        response = route.fetch()
        answer = response.json()
        proofs = answer.get("keyhold.transparency", {}).get("proofs", {}).get(user_id, {})
        for slot, proof in proofs.items():
            if slot.startswith("device:") and proof["inclusion_proof"]:
                first = proof["inclusion_proof"][0]
                proof["inclusion_proof"][0] = ("0" if first[0] != "0" else "1") + first[1:]
        route.fulfill(response=response, body=json.dumps(answer))

    return handle


def substitute_device_key(user_id: str):  # type: ignore[no-untyped-def]
    """A route handler: the real keys/query answer with `user_id`'s devices' Curve25519 keys replaced."""

    def handle(route: Route) -> None:
        response = route.fetch()
        answer = response.json()
        for key in answer.get("device_keys", {}).get(user_id, {}).values():
            for key_id in key["keys"]:
                if key_id.startswith("curve25519:"):
                    key["keys"][key_id] = base64.b64encode(bytes(32)).decode().rstrip("=")
        route.fulfill(response=response, body=json.dumps(answer))

    return handle


def test_a_key_transparency_failure_is_shown_and_refuses_the_send(
    web_server: Server, new_page: NewPage, aio: AsyncRunner, py_members: list[Client]
) -> None:
    python = python_member(web_server, aio, py_members)
    browser = BrowserMember.start(new_page, browser_account(web_server, aio, py_members))
    conversation = aio.run(python.start_conversation([browser.username], encryption="e2ee"))
    assert python.user_id is not None
    # The server (here: the network) shows the Python device's key with a proof that does not
    # lead to the signed head, from the browser's first look at it on.
    browser.page.route("**/api/v1/e2ee/keys/query", tamper_inclusion_proof(python.user_id))
    browser.unlock(conversation.id)
    refused = browser.send(conversation.id, "must not leave")
    assert refused.get("refused", "").startswith("KeyTransparencyError: not sending"), refused
    assert f"{python.user_id}'s device {python.device_id}" in refused["refused"]
    assert "not in the log under its signed head" in refused["refused"]
    browser.mount("DeviceList", conversationId=conversation.id)
    alert = browser.page.get_by_test_id("e2ee-transparency-failure")
    alert.wait_for(timeout=WAIT_MS)
    assert "refused" in alert.inner_text()
    failed = browser.page.locator(f'[data-device="{python.device_id}"]')
    assert "key-transparency check failed" in failed.inner_text()
    assert check_axe(browser.page) == []
    screenshot(browser.page, "e2ee-key-transparency-failure")
    assert aio.run(python.history(conversation.id)) == []  # nothing left the browser

    # The real proofs again: the device checks out, sends go through.
    browser.page.unroute("**/api/v1/e2ee/keys/query")
    browser.sent(conversation.id, "once the proofs check")
    assert [m.text for m in aio.run(python.history(conversation.id))] == ["once the proofs check"]

    # A substituted key (another key object than the one the log committed to) fails too, even
    # once the device's real key was proven.
    browser.page.route("**/api/v1/e2ee/keys/query", substitute_device_key(python.user_id))
    refused = browser.send(conversation.id, "must not leave either")
    assert "a substituted key" in refused.get("refused", ""), refused
    assert [m.text for m in aio.run(python.history(conversation.id))] == ["once the proofs check"]
    browser.page.unroute("**/api/v1/e2ee/keys/query")
    assert page_problems(browser.page) == []


def test_an_identity_change_stops_sends_until_accepted(
    web_server: Server, new_page: NewPage, aio: AsyncRunner, py_members: list[Client]
) -> None:
    python = python_member(web_server, aio, py_members)
    browser = BrowserMember.start(new_page, browser_account(web_server, aio, py_members))
    conversation = aio.run(python.start_conversation([browser.username], encryption="e2ee"))
    browser.unlock(conversation.id)
    browser.sent(conversation.id, "first, to the old identity")
    aio.run(python.reset_cross_signing(PASSWORD))
    refused = browser.send(conversation.id, "must wait for the member")
    assert refused.get("refused", "").startswith("IdentityChangedError"), refused
    assert "identity (master key) changed" in refused["refused"]
    browser.mount("SafetyNumber", username=python.username)
    warning = browser.page.get_by_test_id("e2ee-identity-change")
    warning.wait_for(timeout=WAIT_MS)
    screenshot(browser.page, "e2ee-identity-change")
    warning.get_by_role("button", name=re.compile("^Accept")).click()
    warning.wait_for(state="detached", timeout=WAIT_MS)
    browser.sent(conversation.id, "after accepting the new keys")
    assert [m.text for m in aio.run(python.history(conversation.id))] == [
        "first, to the old identity", "after accepting the new keys",
    ]  # fmt: skip
    assert page_problems(browser.page) == []


def test_the_passphrase_guards_the_keys_across_a_reload(
    web_server: Server, new_page: NewPage, aio: AsyncRunner, py_members: list[Client]
) -> None:
    python = python_member(web_server, aio, py_members)
    browser = BrowserMember.start(new_page, browser_account(web_server, aio, py_members))
    conversation = aio.run(python.start_conversation([browser.username], encryption="e2ee"))
    browser.unlock(conversation.id)
    browser.sent(conversation.id, "kept in IndexedDB")
    aio.run(python.send(conversation.id, "read again after the reload"))
    assert browser.texts(conversation.id) == ["kept in IndexedDB", "read again after the reload"]

    # A reload signs out (tokens live in memory); signing in again lands on the same device.
    browser.page.reload()
    browser.page.wait_for_function("() => document.getElementById('app')?.childElementCount > 0")
    browser.sign_in()
    browser.page.evaluate(OPEN_CODEC, conversation.id)
    dialog = browser.page.get_by_role("dialog")
    assert dialog.get_by_role("heading").inner_text() == "Unlock end-to-end encryption"
    dialog.get_by_label("Passphrase", exact=True).fill("not the passphrase")
    dialog.get_by_role("button", name="Unlock").click()
    dialog.get_by_role("alert").filter(has_text="wrong passphrase").wait_for(timeout=WAIT_MS)
    assert check_axe(browser.page) == []
    dialog.get_by_label("Passphrase", exact=True).fill(PASSPHRASE)
    dialog.get_by_role("button", name="Unlock").click()
    browser.wait_codec(conversation.id)
    assert browser.texts(conversation.id) == ["kept in IndexedDB", "read again after the reload"]
    browser.sent(conversation.id, "same device, same keys")
    assert [m.text for m in aio.run(python.history(conversation.id))][-1] == "same device, same keys"
    # Nothing of it in localStorage.
    assert (
        browser.page.evaluate(
            "() => Object.keys(localStorage).filter((k) => !k.startsWith('keyhold.device.'))"
        )
        == []
    )
    assert page_problems(browser.page, allow=[r"status of 4\d\d"]) == []


# -- files -----------------------------------------------------------------------------------------


def test_encrypted_files_both_ways(
    web_server: Server, new_page: NewPage, aio: AsyncRunner, py_members: list[Client]
) -> None:
    python = python_member(web_server, aio, py_members)
    browser = BrowserMember.start(new_page, browser_account(web_server, aio, py_members))
    conversation = aio.run(python.start_conversation([browser.username], encryption="e2ee"))
    browser.unlock(conversation.id)
    content = bytes(range(256)) * 40
    # The browser encrypts, uploads only ciphertext, then sends the key inside the message.
    browser.page.evaluate(
        """async ({ id, data }) => {
            const kh = window.__kh;
            const file = new File([Uint8Array.from(data)], "notes.bin", { type: "application/x-test" });
            const sealed = await kh.codecs[id].sealFile(file, "the notes");
            const up = await fetch(`/api/v1/conversations/${id}/attachments`, {
              method: "POST",
              headers: { "content-type": "application/octet-stream", authorization: `Bearer ${kh.session.token}` },
              body: sealed.upload,
            });
            if (!up.ok) throw new Error(`upload: ${up.status} ${await up.text()}`);
            const fields = await sealed.seal((await up.json()).id);
            const r = await fetch(`/api/v1/conversations/${id}/messages`, {
              method: "POST",
              headers: { "content-type": "application/json", authorization: `Bearer ${kh.session.token}` },
              body: JSON.stringify({ ...fields, idempotency_key: crypto.randomUUID() }),
            });
            if (!r.ok) throw new Error(`send: ${r.status} ${await r.text()}`);
        }""",
        {"id": conversation.id, "data": list(content)},
    )
    (message,) = aio.run(python.history(conversation.id))
    assert message.text == "the notes" and message.attachment is not None
    assert (message.attachment.filename, message.attachment.content_type) == (
        "notes.bin",
        "application/x-test",
    )
    assert aio.run(python.download(message.attachment.id)) != content  # the server holds ciphertext
    assert aio.run(python.download_file(message)) == content

    # And a file from the Python SDK, opened in the browser.
    aio.run(
        python.send_file(conversation.id, b"from vodozemac's side", "reply.txt", "text/plain", text="a reply")
    )
    opened = browser.page.evaluate(
        """async (id) => {
            const kh = window.__kh;
            const r = await fetch(`/api/v1/conversations/${id}/messages?limit=10`, { headers: { authorization: `Bearer ${kh.session.token}` } });
            const message = (await r.json()).items.at(-1);
            const result = await kh.codecs[id].open(message);
            const data = await (await fetch(`/api/v1/attachments/${message.attachment.id}`, { headers: { authorization: `Bearer ${kh.session.token}` } })).blob();
            const file = await kh.codecs[id].openFile(message, data);
            return { text: result.text, file: result.file, name: file.filename, type: file.contentType, body: await file.blob.text() };
        }""",
        conversation.id,
    )
    assert opened == {
        "text": "a reply",
        "file": {"filename": "reply.txt", "contentType": "text/plain", "size": len(b"from vodozemac's side")},
        "name": "reply.txt",
        "type": "text/plain",
        "body": "from vodozemac's side",
    }, opened
    assert page_problems(browser.page) == []


# -- in the member app -------------------------------------------------------------------------


def test_in_the_member_app(
    web_server: Server, new_page: NewPage, aio: AsyncRunner, py_members: list[Client]
) -> None:
    """The same codec as the member app's conversation view loads it: log in, open the e2ee
    conversation, set the passphrase in the dialog, chat with a Python SDK member."""
    python = python_member(web_server, aio, py_members)
    name = browser_account(web_server, aio, py_members)
    conversation = aio.run(python.start_conversation([name], encryption="e2ee"))
    page = new_page()
    wasm: list[str] = []
    page.on("request", lambda r: wasm.append(r.url) if r.url.endswith(".wasm") else None)
    page.goto("/login")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name=re.compile(python.username)).first.wait_for()
    assert wasm == []  # signed in, conversation list shown: no crypto core yet
    page.get_by_role("link", name=re.compile(python.username)).first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Passphrase", exact=True).wait_for()
    assert check_axe(page) == []
    screenshot(page, "e2ee-passphrase")
    dialog.get_by_label("Passphrase", exact=True).fill(PASSPHRASE)
    dialog.get_by_label("The same passphrase again").fill(PASSPHRASE)
    dialog.get_by_role("button", name="Set passphrase").click()
    assert len(wasm) == 1
    page.get_by_role("button", name="Which devices can read it").click()
    readers = page.get_by_test_id("e2ee-reader")
    readers.first.wait_for(timeout=WAIT_MS)
    assert python.device_id is not None
    page.locator(f'[data-device="{python.device_id}"]').wait_for(timeout=WAIT_MS)
    page.locator("#composer-text").fill("hello from the member app")
    page.get_by_role("button", name="Send", exact=True).click()
    page.locator("li.msg.mine:not(.pending)").filter(has_text="hello from the member app").wait_for(
        timeout=WAIT_MS
    )
    assert [m.text for m in aio.run(python.history(conversation.id))] == ["hello from the member app"]
    aio.run(python.send(conversation.id, "a reply from the Python SDK"))
    page.locator("li.msg.theirs").filter(has_text="a reply from the Python SDK").wait_for(timeout=WAIT_MS)
    assert check_axe(page) == []
    screenshot(page, "e2ee-conversation")
    # A send the device refuses (the contact's identity changed) is shown as refused, in words
    # pointing to Verify, and not retried as if the network had failed.
    aio.run(python.reset_cross_signing(PASSWORD))
    page.locator("#composer-text").fill("must wait for the member")
    page.get_by_role("button", name="Send", exact=True).click()
    refused = page.locator("li.msg.pending-refused").filter(has_text="must wait for the member")
    refused.wait_for(timeout=WAIT_MS)
    assert "identity (master key) changed" in refused.inner_text()
    assert 'Open "Verify"' in refused.inner_text()
    assert page.locator("li.msg.pending-retrying").count() == 0
    assert page_problems(page) == []
