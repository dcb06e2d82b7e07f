"""The access log checked in the browser (web/src/verify), against the Python SDK's verifier.

- A member sees a moderator's read of their conversation in their access history (/access in
  the member app, which mounts verify/AccessHistory) with ✓, after the SDK verified the same
  response.
- A tampered proof (one byte of an inclusion proof changed on the way, with Playwright's
  page.route; no fixture route in the server) shows ✗ and says what failed.
- Cross-check of the TypeScript verifier with keyhold.sdk.verify on the same data, in the
  browser, without Node: variants of a real response (each altering one thing) and synthetic
  logs of many sizes, signed by a throwaway key, are served to the page; for each item the page's
  ✓/✗ must equal verify_access_event's True/False, and for each pair of heads the page's
  consistency check must equal verify_consistency_between's.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Page, Route, expect

from browser.conftest import NewPage
from browser.helpers import AsyncRunner, check_axe, page_problems, screenshot
from conftest import PASSWORD, TLS, Server, new_member
from keyhold.crypto.merkle import MerkleTree, block_hash, sth_message
from keyhold.sdk import Client
from keyhold.sdk.verify import verify_access_event, verify_consistency_between
from staff_helpers import add_all_staff, login_all

PHONE = (375, 812)
DESKTOP = (1280, 900)
EVENTS = re.compile(r"/api/v1/account/access-events$")
KEY = re.compile(r"/api/v1/transparency/key$")
CONSISTENCY = re.compile(r"/api/v1/transparency/proof/consistency\?")
MISMATCH = "inclusion proof does not match the signed tree head"


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def flip(hex_text: str, at: int = 0) -> str:
    """One byte changed (the first hex digit of byte `at`)."""
    i = 2 * at
    return hex_text[:i] + ("0" if hex_text[i] != "0" else "1") + hex_text[i + 1 :]


class World:
    """alice and bob talk, bob reports alice's message, a moderator reads the case's window."""

    def __init__(self, server: Server, aio: AsyncRunner) -> None:
        self.server, self.aio = server, aio
        secrets = add_all_staff(server, {"vic": ("moderator", "us")})

        async def setup() -> tuple[Client, Client, int]:
            alice, bob = await new_member(server), await new_member(server)
            conv = await alice.start_conversation([bob.username])
            first = await alice.send(conv.id, "the spare key is under the blue pot")
            await bob.send(conv.id, "thanks, got it")
            case = await bob.report(conv.id, [first.id], "other", "checking how reports work")
            staff = (await login_all(server, secrets))["vic"]
            try:
                await staff.report_content(case["id"], "review report from bob")
            finally:
                await staff.close()
            return alice, bob, case["id"]

        self.alice, self.bob, self.case_id = aio.run(setup())
        self.alice_id = int(aio.run(self.alice.me())["id"])
        self.key = httpx.get(server.url + "/api/v1/transparency/key", verify=TLS).json()["public_key"]

    def events(self, client: Client | None = None) -> dict[str, Any]:
        token = (client or self.alice).token
        response = httpx.get(
            self.server.url + "/api/v1/account/access-events", verify=TLS, headers={"Authorization": f"Bearer {token}"}
        )
        response.raise_for_status()
        return dict(response.json())

    def close(self) -> None:
        self.aio.run(self.alice.close())
        self.aio.run(self.bob.close())


@pytest.fixture(scope="module")
def world(web_server: Server, aio: AsyncRunner) -> Any:
    w = World(web_server, aio)
    yield w
    w.close()


def member_access_page(page: Page, username: str) -> None:
    """Log in through the member app (signed out, /access leads to the login page and back)."""
    page.goto("/access")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="My access history")).to_be_visible()


def results(page: Page) -> list[tuple[int, bool, str]]:
    """(index, verified, what the page says) of every event shown, in the order shown."""
    expect(page.locator(".vf-pending")).to_have_count(0)
    rows = page.locator("li.vf-event")
    out = []
    for i in range(rows.count()):
        row = rows.nth(i)
        ok = "vf-event-ok" in (row.get_attribute("class") or "")
        text = " ".join((row.locator(".vf-status").text_content() or "").split())
        out.append((int(row.get_attribute("data-index") or -1), ok, text))
    return out


def serve(page: Page, pattern: re.Pattern[str], body: Callable[[], Any]) -> None:
    def handle(route: Route) -> None:
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body()))

    page.route(pattern, handle)


def recheck(page: Page) -> None:
    page.get_by_role("button", name="Check again").click()
    expect(page.get_by_role("button", name="Check again")).to_be_enabled()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_member_sees_staff_read_verified(
    world: World, new_page: NewPage, aio: AsyncRunner, viewport: tuple[int, int]
) -> None:
    # The SDK verifies the same thing first.
    verified = aio.run(world.alice.access_events(pinned_key=world.key))
    reads = [e for e in verified if e["type"] == "content_accessed" and e["case"]["id"] == world.case_id]
    assert len(reads) == 1

    page = new_page(viewport=viewport)
    member_access_page(page, world.alice.username)
    shown = results(page)
    assert (reads[0]["index"], True, "✓ Verified") in shown, shown
    event = page.locator(f'li.vf-event[data-index="{reads[0]["index"]}"]')
    expect(event).to_contain_text("Staff read messages")
    expect(event).to_contain_text("review report from bob")
    expect(event).to_contain_text(f"report case #{world.case_id}")
    expect(page.locator(".vf-head")).to_contain_text("Signature verifies")
    expect(page.get_by_role("status").filter(has_text="entries verify")).to_contain_text("All")
    found = check_axe(page)
    assert found == [], found
    screenshot(page, "access-history-" + ("phone" if viewport == PHONE else "desktop"))
    assert page_problems(page) == []


def test_tampered_proof_shows_what_failed(world: World, new_page: NewPage) -> None:
    data = world.events()
    target = next(i for i in data["items"] if i["inclusion_proof"])
    tampered = copy.deepcopy(data)
    item = next(i for i in tampered["items"] if i["index"] == target["index"])
    item["inclusion_proof"][0] = flip(item["inclusion_proof"][0], at=5)
    assert not verify_access_event(item, tampered["tree_head"], world.alice_id, world.key)

    page = new_page(viewport=DESKTOP)
    serve(page, EVENTS, lambda: tampered)
    member_access_page(page, world.alice.username)
    shown = {index: (ok, text) for index, ok, text in results(page)}
    ok, text = shown[target["index"]]
    assert not ok and text == f"✗ Does not verify: {MISMATCH}", text
    assert all(ok for index, (ok, _) in shown.items() if index != target["index"])
    expect(page.get_by_role("status").filter(has_text="do not verify")).to_contain_text("1 of")
    found = check_axe(page)
    assert found == [], found
    screenshot(page, "access-history-tampered")
    assert page_problems(page) == []


def variants(world: World) -> list[tuple[str, dict[str, Any]]]:
    """Items of alice's real response, each with one thing changed (or none)."""
    data = world.events()
    bob_items = {i["index"]: i for i in world.events(world.bob)["items"]}
    base = next(i for i in data["items"] if i["index"] in bob_items and i["inclusion_proof"])
    out: list[tuple[str, dict[str, Any]]] = [(f"untouched {i['index']}", i) for i in data["items"]]

    def variant(name: str, change: Callable[[dict[str, Any]], None]) -> None:
        item = copy.deepcopy(base)
        change(item)
        out.append((name, item))

    variant(
        "proof byte",
        lambda i: i.update(inclusion_proof=[flip(i["inclusion_proof"][0], 31), *i["inclusion_proof"][1:]]),
    )
    variant("proof shortened", lambda i: i.update(inclusion_proof=i["inclusion_proof"][:-1]))
    variant(
        "proof lengthened",
        lambda i: i.update(inclusion_proof=[*i["inclusion_proof"], i["inclusion_proof"][0]]),
    )
    variant("proof not hex", lambda i: i.update(inclusion_proof=["zz" * 32, *i["inclusion_proof"][1:]]))
    variant(
        "entry reason",
        lambda i: i.update(entry=i["entry"].replace("review report from bob", "routine check")),
    )
    variant("entry index", lambda i: i.update(index=i["index"] + 1))
    variant(
        "bob's block",
        lambda i: i.update(
            block=bob_items[i["index"]]["block"],
            messages=json.loads(bob_items[i["index"]]["block"])["messages"],
        ),
    )
    variant("block salt", lambda i: i.update(block=i["block"].replace('"salt":"', '"salt":"0')))
    variant("type", lambda i: i.update(type="case_opened"))
    variant("messages", lambda i: i.update(messages=[]))
    variant("entry not json", lambda i: i.update(entry=i["entry"][:-1]))
    return out


def test_verifier_agrees_with_python_sdk(world: World, new_page: NewPage) -> None:
    data = world.events()
    head = data["tree_head"]
    cases = variants(world)
    # Distinct indexes, so that the page's rows map back to the variants: each variant is served
    # as its own response, one after the other, with "Check again".
    page = new_page(viewport=DESKTOP)
    current: dict[str, Any] = {"tree_head": head, "items": []}
    serve(page, EVENTS, lambda: current)
    member_access_page(page, world.alice.username)
    agreed = []
    for name, item in cases:
        expected = verify_access_event(item, head, world.alice_id, world.key)
        current["items"] = [item]
        recheck(page)
        shown = results(page)
        assert len(shown) == 1, (name, shown)
        assert shown[0][1] == expected, (name, expected, shown[0][2])
        agreed.append((name, expected, shown[0][2]))
    by_name = {name: (expected, text) for name, expected, text in agreed}
    assert sum(1 for _, expected, _ in agreed if expected) == len(data["items"])
    assert by_name["proof byte"][1].endswith(MISMATCH)
    assert by_name["entry reason"][1].endswith(MISMATCH)
    assert "names another member" in by_name["bob's block"][1]
    assert "not committed to by the log entry" in by_name["block salt"][1]
    assert "type" in by_name["type"][1]

    # Heads: a forged signature, another root, another size, another key: every item fails, as
    # in Python, and the page says why.
    key = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    changes: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        ("signature", lambda h: h.update(signature=flip(h["signature"], 10))),
        ("root", lambda h: h.update(root=flip(h["root"], 3))),
        ("size", lambda h: h.update(size=h["size"] + 1)),
        ("key", lambda h: h.update(public_key=key.hex())),
    ]
    for name, change in changes:
        forged = copy.deepcopy(head)
        change(forged)
        current.update(tree_head=forged, items=data["items"])
        assert not any(verify_access_event(i, forged, world.alice_id, world.key) for i in data["items"])
        recheck(page)
        shown = results(page)
        assert shown and not any(ok for _, ok, _ in shown), (name, shown)
        expect(page.locator(".vf-head")).to_contain_text("✗")
    assert page_problems(page) == []


def synthetic_log(
    size: int, user_id: int, signer: Ed25519PrivateKey, time_ms: int
) -> tuple[MerkleTree, list[dict[str, Any]]]:
    """A log of `size` entries, each a staff read with a block for `user_id`, and its items."""
    tree, items = MerkleTree(), []
    for idx in range(size):
        block = canonical(
            {
                "idx": idx,
                "messages": [1000 + idx],
                "salt": os.urandom(16).hex(),
                "user": user_id,
                "visible_from_ms": 0,
            }
        )
        entry = canonical(
            {
                "details": {
                    "case": {"id": 1, "kind": "report"},
                    "messages": 1,
                    "reason": f"synthetic read {idx}",
                    "region": "us",
                    "role": "moderator",
                    "staff": 1,
                },
                "idx": idx,
                "subjects": sorted([block_hash(block), os.urandom(32).hex()]),
                "time": "2026-11-23T15:17:17.809Z",
                "time_ms": time_ms + idx,
                "type": "content_accessed",
                "v": 1,
            }
        )
        tree.append(entry)
        items.append(
            {
                "index": idx,
                "entry": entry.decode(),
                "block": block.decode(),
                "type": "content_accessed",
                "time": "2026-11-23T15:17:17.809Z",
                "case": {"id": 1, "kind": "report"},
                "messages": [1000 + idx],
            }
        )
    return tree, items


def signed_head(tree: MerkleTree, size: int, signer: Ed25519PrivateKey, time_ms: int) -> dict[str, Any]:
    root = tree.root(size)
    public = signer.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "size": size,
        "root": root.hex(),
        "timestamp_ms": time_ms,
        "public_key": public.hex(),
        "signature": signer.sign(sth_message(size, root, time_ms)).hex(),
    }


def test_verifier_agrees_on_synthetic_logs(world: World, new_page: NewPage) -> None:
    """Inclusion of every leaf of trees of many shapes, and consistency between successive heads."""
    signer = Ed25519PrivateKey.generate()
    public = (
        signer.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    )
    sizes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 31, 32, 33, 45]
    tree, all_items = synthetic_log(60, world.alice_id, signer, 1795447037809)
    current: dict[str, Any] = {}
    consistency: dict[str, Any] = {"tamper": False}

    def prove(route: Route) -> None:
        query = dict(p.split("=") for p in route.request.url.split("?", 1)[1].split("&"))
        first, second = int(query["first"]), int(query["second"])
        proof = [h.hex() for h in tree.consistency_proof(first, second)]
        if consistency["tamper"] and proof:
            proof[-1] = flip(proof[-1], 7)
        consistency["last"] = (first, second, proof)
        route.fulfill(
            status=200,
            content_type="application/json",
            body=json.dumps({"first": first, "second": second, "proof": proof}),
        )

    page = new_page(viewport=DESKTOP)
    serve(page, EVENTS, lambda: current)
    serve(page, KEY, lambda: {"algorithm": "Ed25519", "public_key": public})
    page.route(CONSISTENCY, prove)
    previous: dict[str, Any] | None = None
    for size in sizes:
        head = signed_head(tree, size, signer, 1795447037809 + size)
        items = [
            {**item, "inclusion_proof": [h.hex() for h in tree.inclusion_proof(item["index"], size)]}
            for item in all_items[:size]
        ]
        # One leaf of each tree gets a bad proof too (a sibling swapped for another's).
        bad = copy.deepcopy(items[size // 2])
        if bad["inclusion_proof"]:
            bad["inclusion_proof"][-1] = flip(bad["inclusion_proof"][-1], 0)
            items[size // 2] = bad
        current.clear()
        current.update(tree_head=head, items=items)
        if previous is None:
            member_access_page(page, world.alice.username)
        else:
            recheck(page)
        shown = {index: ok for index, ok, _ in results(page)}
        expected = {item["index"]: verify_access_event(item, head, world.alice_id, public) for item in items}
        assert shown == expected, (size, shown, expected)
        assert sum(expected.values()) == size - (1 if bad["inclusion_proof"] else 0)
        if previous is not None:
            first, second, proof = consistency["last"]
            assert (first, second) == (previous["size"], size)
            assert verify_consistency_between(previous, head, proof)
            expect(page.locator(".vf-head")).to_contain_text("✓ the log only grew")
        previous = head

    # A tampered consistency proof to a bigger head: Python and the page both refuse it.
    consistency["tamper"] = True
    last = tree.size
    head = signed_head(tree, last, signer, 1795447037809 + last)
    current.update(
        tree_head=head,
        items=[
            {**item, "inclusion_proof": [h.hex() for h in tree.inclusion_proof(item["index"], last)]}
            for item in all_items
        ],
    )
    recheck(page)
    first, second, proof = consistency["last"]
    assert previous is not None and (first, second) == (previous["size"], last)
    assert not verify_consistency_between(previous, head, proof)
    expect(page.locator(".vf-head")).to_contain_text("✗ Does not verify: consistency proof does not show")
    assert all(ok for _, ok, _ in results(page))  # the entries themselves are fine
    assert page_problems(page) == []
