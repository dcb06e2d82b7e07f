"""The staff console at /staff in Chromium, against a real server, and the public /transparency.

Staff accounts are made as `keyhold staff add` makes them (tests/staff_helpers.py) and sign in
through the console's form with a TOTP code from pyotp; members, their messages and reports are
set up with the Python SDK, which also watches what members are told.

- A member reports a message; the moderator signs in, claims nothing (the case is assigned to
  them), reads the context window with the reported message marked, warns with a note; the
  reporter gets the outcome on their stream. The warned member appeals; a second moderator in
  another context takes the appeal and overturns it.
- The scanner holds a message (an operator rule); the moderator releases it from the held queue.
- Legal intake: a subpoena for content is refused by the rules (shown, with the rule's reason);
  a search warrant is recorded, its creator cannot approve it, a second legal user approves it
  in another context, produces the package, sees it verified and downloads it; the file
  verifies in Python as docs/governance.md says.
- An auditor browses the log, verifies every entry, the current head and the consistency
  between a kept head and a newer one; a tampered consistency proof shows ✗; the running
  period's report renders its charts.
- Every API error is shown in words (a wrong TOTP code); axe-core finds nothing serious on each
  screen, at 375 px and desktop widths; screenshots go to build/screenshots/ (`make screenshots`: docs/).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from playwright.sync_api import FilePayload, Page, Route, expect

from browser.conftest import NewPage
from browser.helpers import AsyncRunner, check_axe, page_problems, screenshot
from conftest import TLS, Server, new_member
from keyhold.sdk import Client
from staff_helpers import STAFF_PASSWORD, add_all_staff

PHONE = (375, 812)
DESKTOP = (1280, 900)
# Made one after another in this order, so that "mia" has a lower id than "max" and gets the
# first report case (a tie goes to the lowest id), leaving "max" for its appeal.
STAFF_GROUPS = [
    {"mia": ("moderator", "us"), "max": ("moderator", "us")},
    {"lee": ("legal", "us"), "lou": ("legal", "us")},
    {"ada": ("auditor", "us"), "eve": ("moderator", "eu")},
]
HOLD_RULES = """
[[rule]]
name = "browser-test-hold"
category = "scam"
action = "hold"
terms = ["purple walrus voucher"]
"""


@pytest.fixture(scope="module")
def staff(web_server: Server) -> dict[str, str]:
    (web_server.home / "safety-rules.toml").write_text(HOLD_RULES)

    return add_all_staff(web_server, {name: role for group in STAFF_GROUPS for name, role in group.items()})


# A TOTP step signs a staff member in once, and each sign-in needs a later step than the last.
_last_step: dict[str, int] = {}


def totp_code(name: str, secret: str) -> str:
    totp = pyotp.TOTP(secret)
    now_step = totp.timecode(dt.datetime.now())
    step = max(now_step, _last_step.get(name, -1) + 1)
    while step > totp.timecode(dt.datetime.now()) + 1:  # never ahead of what the server accepts
        time.sleep(1)
    _last_step[name] = step
    return totp.generate_otp(step)


def sign_in(page: Page, name: str, secret: str, path: str = "/staff") -> None:
    page.goto(path)
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_label("Authenticator code").fill(totp_code(name, secret))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def too_wide(page: Page) -> list[str]:
    """Elements reaching past the right edge of the viewport (nothing should, at 375 px)."""
    return list(
        page.evaluate(
            """() => [...document.querySelectorAll("body *")]
                .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1)
                .map((el) => `${el.tagName.toLowerCase()}.${el.className} (${Math.round(el.getBoundingClientRect().right)} px)`)
                .slice(0, 10)"""
        )
    )


def no_axe(page: Page) -> None:
    found = check_axe(page)
    if found:  # say what axe saw, colours included
        found.append(
            page.evaluate(
                """async () => (await window.axe.run(document, { resultTypes: ["violations"] })).violations
                .flatMap((v) => v.nodes.map((n) => n.html + " " + n.failureSummary))"""
            )
        )
    assert found == [], found


async def wait_event(client: Client, kind: str, timeout: float = 20, **match: Any) -> dict[str, Any]:
    """The first event of `kind` whose fields include `match` (replayed from the start)."""
    stream = await client.connect(since=0)
    deadline = time.monotonic() + timeout
    try:
        while True:
            event = await stream.next_event(wait=max(0.1, deadline - time.monotonic()))
            if event.type == kind and all(event.data.get(k) == v for k, v in match.items()):
                return event.data
    finally:
        await stream.close()


async def scene(server: Server) -> tuple[Client, Client, int, list[int]]:
    """alice and bob talk; bob's third message is the one alice will report."""
    alice, bob = await new_member(server), await new_member(server)
    conv = await alice.start_conversation([bob.username])
    ids = []
    for sender, text in [
        (alice, "hi bob, are we still on for saturday?"),
        (bob, "yes, see you at ten"),
        (bob, "and if you are late again I will make you regret it"),
        (alice, "that is not ok"),
    ]:
        ids.append((await sender.send(conv.id, text)).id)
    return alice, bob, conv.id, ids


def test_sign_in_errors_in_words(web_server: Server, staff: dict[str, str], new_page: NewPage) -> None:
    page = new_page(viewport=PHONE)
    page.goto("/staff")
    expect(page.get_by_role("heading", name="Keyhold staff sign-in")).to_be_visible()
    no_axe(page)
    screenshot(page, "staff-signin-phone")
    assert too_wide(page) == []
    page.get_by_label("Username").fill("mia")
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    wrong = "000000" if pyotp.TOTP(staff["mia"]).now() != "000000" else "111111"
    page.get_by_label("Authenticator code").fill(wrong)
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Sign-in failed")
    expect(alert).to_contain_text("Not signed in")  # the problem's title and detail, in words
    no_axe(page)
    # Keyboard only: the fields and the button are reachable with Tab, and Enter submits.
    # The page puts focus on its title once shown (an effect after the first paint): typing
    # before that, into a field focused by hand, lost the keys to the title (seen in CI).
    page.goto("/staff")
    expect(page.get_by_role("heading", name="Keyhold staff sign-in")).to_be_focused()
    for label, keys in (
        ("Username", "max"),
        ("Password", STAFF_PASSWORD),
        ("Authenticator code", totp_code("max", staff["max"])),
    ):
        page.keyboard.press("Tab")
        expect(page.get_by_label(label)).to_be_focused()
        page.keyboard.type(keys)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Report queue")).to_be_visible()
    assert page.url.endswith("/staff/reports")
    # A member's token never opens the console; the staff token is in memory only.
    stored = page.evaluate("() => JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage})")
    assert "ks_" not in stored
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Keyhold staff sign-in")).to_be_visible()
    assert page_problems(page) == []


def test_moderator_decides_report_and_appeal(
    web_server: Server, staff: dict[str, str], new_page: NewPage, aio: AsyncRunner
) -> None:
    alice, bob, conv_id, ids = aio.run(scene(web_server))
    try:
        case = aio.run(alice.report(conv_id, [ids[2]], "harassment", "he keeps threatening me"))
        case_id = case["id"]

        page = new_page(viewport=DESKTOP)
        sign_in(page, "mia", staff["mia"])
        expect(page.get_by_role("heading", name="Report queue")).to_be_visible()
        link = page.get_by_role("link", name=f"Case #{case_id}", exact=True)
        expect(link).to_be_visible()
        no_axe(page)
        screenshot(page, "staff-report-queue")
        link.click()
        expect(page.get_by_role("heading", name=f"Report case #{case_id}")).to_be_visible()
        expect(page.get_by_text("he keeps threatening me")).to_be_visible()
        # Keyboard: the reason field, then Enter reads the window.
        page.get_by_label("Reason for reading").fill("review harassment report")
        page.get_by_label("Reason for reading").press("Enter")
        window = page.get_by_role("list", name="Conversation excerpt")
        expect(window.locator("li")).to_have_count(4)
        reported = window.locator(".st-reported")
        expect(reported).to_have_count(1)
        expect(reported).to_contain_text("I will make you regret it")
        expect(reported).to_contain_text("Reported message")
        assert reported.get_attribute("data-message-id") == str(ids[2])
        no_axe(page)
        screenshot(page, "staff-report-case")

        page.get_by_label("Warn the sender (a strike)").check()
        page.get_by_label("Note", exact=True).fill("Threats are not allowed here.")
        page.get_by_role("button", name="Decide", exact=True).click()
        expect(page.get_by_role("status").filter(has_text="Decided: Warn")).to_be_visible()
        expect(page.get_by_test_id("case-status")).to_have_text("Decided")

        outcome = aio.run(wait_event(alice, "report.outcome", case_id=case_id))
        assert outcome["action"] == "warn" and outcome["note"] == "Threats are not allowed here."
        action = aio.run(wait_event(bob, "moderation.action", case_id=case_id))
        assert action["can_appeal"] is True

        # The warned member appeals; a different moderator takes and overturns it.
        aio.run(bob.appeal(case_id, "It was a joke between friends."))
        page.get_by_role("button", name="Sign out").click()
        other = new_page(viewport=PHONE)
        sign_in(other, "max", staff["max"], f"/staff/reports/{case_id}")
        expect(other.get_by_role("heading", name=f"Report case #{case_id}")).to_be_visible()
        expect(other.get_by_text("It was a joke between friends.")).to_be_visible()
        other.get_by_role("button", name="Take the appeal").click()
        expect(other.get_by_role("status").filter(has_text="You took this case")).to_be_visible()
        other.get_by_label("Overturn it").check()
        other.get_by_label("Note", exact=True).fill("Context shows banter.")
        no_axe(other)
        screenshot(other, "staff-appeal-phone")
        assert too_wide(other) == []
        other.get_by_role("button", name="Decide the appeal").click()
        expect(other.get_by_test_id("case-status")).to_have_text("Appeal decided")
        told = aio.run(wait_event(bob, "moderation.action", case_id=case_id, action="overturned"))
        assert told["appeal"] is True
        assert page_problems(page) == [] and page_problems(other) == []
    finally:
        aio.run(alice.close())
        aio.run(bob.close())


def test_moderator_releases_held_message(
    web_server: Server, staff: dict[str, str], new_page: NewPage, aio: AsyncRunner
) -> None:
    async def held() -> tuple[Client, Client, int, int]:
        # Region eu, whose one moderator is eve: the case is hers.
        alice, bob = await new_member(web_server, "eu"), await new_member(web_server, "eu")
        conv = await alice.start_conversation([bob.username])
        sent = await bob.send(conv.id, "claim your purple walrus voucher today")
        return alice, bob, conv.id, sent.id

    time.sleep(1.5)  # the server re-reads safety-rules.toml within about a second
    alice, bob, conv_id, message_id = aio.run(held())
    try:
        page = new_page(viewport=PHONE)
        sign_in(page, "eve", staff["eve"], "/staff/held")
        expect(page.get_by_role("heading", name="Held and flagged messages")).to_be_visible()
        rows = page.locator("section", has=page.get_by_role("heading", name="Held for review")).get_by_role(
            "link"
        )
        expect(rows.first).to_be_visible()
        no_axe(page)
        screenshot(page, "staff-held-phone")
        assert too_wide(page) == []
        rows.last.click()
        expect(page.get_by_role("heading", name=re.compile(r"Held message, case #\d+"))).to_be_visible()
        case_id = int(page.url.rsplit("/", 1)[1])
        page.get_by_label("Reason for reading").fill("review held message")
        page.get_by_role("button", name="Read the messages").click()
        expect(page.locator(".st-reported")).to_contain_text("purple walrus voucher")
        page.get_by_label("Note to the sender").fill("Looks fine after all.")
        no_axe(page)
        page.get_by_role("button", name="Release: deliver it").click()
        expect(page.get_by_role("status").filter(has_text="Released")).to_be_visible()
        review = aio.run(wait_event(bob, "message.review", case_id=case_id))
        assert review["outcome"] == "released" and review["message_id"] == message_id
        got = aio.run(wait_event(alice, "message.new", conversation_id=conv_id))
        assert got["message"]["id"] == message_id
        assert page_problems(page) == []
    finally:
        aio.run(alice.close())
        aio.run(bob.close())


def fill_intake(page: Page, process: str, targets: str, categories: list[str]) -> None:
    page.get_by_role("link", name="New legal request").click()
    expect(page.get_by_role("heading", name="Record a legal request")).to_be_visible()
    page.get_by_label("Agency").fill("Federal Bureau of Investigation")
    page.get_by_label("Officer").fill("Special Agent Dana Scully")
    page.get_by_label("Contact (e-mail or phone)").fill("dscully@fbi.example")
    page.get_by_label("Country of the requesting authority").fill("US")
    page.get_by_label("Legal process", exact=True).select_option(process)
    page.get_by_label("Target accounts").fill(targets)
    today = dt.datetime.now(dt.UTC).date()
    page.get_by_label("From (UTC day, included)").fill((today - dt.timedelta(days=1)).isoformat())
    page.get_by_label("To (UTC day, included)").fill((today + dt.timedelta(days=1)).isoformat())
    for category in categories:
        page.get_by_label(category).check()
    page.get_by_label("Legal process document").set_input_files(
        files=FilePayload(
            name=f"{process}.pdf", mimeType="application/pdf", buffer=f"%PDF-1.4 {process}".encode()
        )
    )


def test_legal_refusal_four_eyes_and_package(
    web_server: Server, staff: dict[str, str], new_page: NewPage, aio: AsyncRunner, tmp_path: Path
) -> None:
    alice, bob, _conv_id, _ids = aio.run(scene(web_server))
    try:
        lee = new_page(viewport=DESKTOP)
        sign_in(lee, "lee", staff["lee"])
        expect(lee.get_by_role("heading", name="Legal cases")).to_be_visible()
        no_axe(lee)

        # A subpoena for message content: recorded, refused by the rules, the rule's reason shown.
        fill_intake(lee, "subpoena", alice.username, ["Message content"])
        no_axe(lee)
        screenshot(lee, "staff-legal-intake")
        lee.get_by_role("button", name="Record the request").click()
        refusal = lee.get_by_role("alert")
        expect(refusal).to_contain_text("Refused by the rules")
        expect(lee.get_by_test_id("refusal-reason")).to_have_text(
            "a subpoena is not enough: message_content needs a search_warrant"
        )
        expect(lee.get_by_test_id("case-status")).to_have_text("Refused")
        no_axe(lee)
        screenshot(lee, "staff-legal-refused")

        # An API refusal in words: a target that is no account.
        fill_intake(lee, "search_warrant", "nobody_here_at_all", ["Message content"])
        lee.get_by_role("button", name="Record the request").click()
        expect(lee.get_by_role("alert")).to_contain_text("1 of the targets are not accounts")

        # A valid request: the creator cannot approve it (four eyes).
        lee.get_by_label("Target accounts").fill(alice.username)
        lee.get_by_role("button", name="Record the request").click()
        expect(lee.get_by_role("heading", name=re.compile(r"Legal case #\d+"))).to_be_visible()
        case_id = int(lee.url.rsplit("/", 1)[1])
        expect(lee.get_by_test_id("case-status")).to_have_text("Pending")
        expect(
            lee.get_by_text("You recorded this case: a second legal staff member must approve it.")
        ).to_be_visible()
        assert lee.get_by_role("button", name="Approve").count() == 0

        # The second legal user, in another context, at phone width.
        lou = new_page(viewport=PHONE)
        sign_in(lou, "lou", staff["lou"])
        lou.get_by_role("link", name=f"Case #{case_id}", exact=True).click()
        expect(lou.get_by_role("heading", name=f"Legal case #{case_id}")).to_be_visible()
        no_axe(lou)
        lou.get_by_role("button", name="Approve").click()
        expect(lou.get_by_test_id("case-status")).to_have_text("Approved")
        expect(lou.get_by_text("Approved.", exact=True)).to_be_visible()

        lou.get_by_role("button", name="Produce the disclosure package").click()
        expect(lou.get_by_text("signed by the service key; every section matches")).to_be_visible()
        no_axe(lou)
        screenshot(lou, "staff-legal-package-phone")
        assert too_wide(lou) == []
        with lou.expect_download() as caught:
            lou.get_by_role("link", name="Download the signed package").click()
        path = tmp_path / "package.json"
        caught.value.save_as(path)
        package = json.loads(path.read_text())
        assert caught.value.suggested_filename == f"keyhold-case-{case_id}-package.json"

        # The file verifies as docs/governance.md's verify_package.py does.
        pinned = httpx.get(web_server.url + "/api/v1/transparency/key", verify=TLS).json()["public_key"]
        signature = package["signature"]
        body = {"manifest": package["manifest"], "data": package["data"]}
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        assert digest == signature["sha256"] and signature["public_key"] == pinned
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(pinned)).verify(
            bytes.fromhex(signature["value"]), bytes.fromhex(digest)
        )
        texts = {m["text"] for m in package["data"]["message_content"]}
        assert "and if you are late again I will make you regret it" in texts
        assert package["manifest"]["case"] == case_id

        # A preservation: no categories; approved by the other, extended once, released.
        fill_intake(lee, "preservation", alice.username, [])
        lee.get_by_role("button", name="Record the request").click()
        expect(lee.get_by_test_id("case-status")).to_have_text("Pending")
        hold_id = int(lee.url.rsplit("/", 1)[1])
        lou.get_by_role("link", name="Legal cases", exact=True).first.click()
        lou.get_by_role("link", name=f"Case #{hold_id}", exact=True).click()
        lou.get_by_role("button", name="Approve").click()
        expect(lou.get_by_test_id("case-status")).to_have_text("Approved")
        lou.get_by_role("button", name="Extend by 90 days").click()
        expect(lou.get_by_text("Extended by 90 days.")).to_be_visible()
        lou.get_by_role("button", name="Extend by 90 days").click()  # only once: the API's refusal, in words
        expect(lou.get_by_role("alert")).to_contain_text("a preservation is extended once")
        lou.get_by_role("button", name="Release the hold").click()
        expect(lou.get_by_test_id("case-status")).to_have_text("Closed")
        assert page_problems(lee) == [] and page_problems(lou) == []
    finally:
        aio.run(alice.close())
        aio.run(bob.close())


def test_auditor_verifies_log(
    web_server: Server, staff: dict[str, str], new_page: NewPage, aio: AsyncRunner
) -> None:
    alice, bob, conv_id, ids = aio.run(scene(web_server))
    try:
        aio.run(alice.report(conv_id, [ids[1]], "spam"))
        page = new_page(viewport=DESKTOP)
        sign_in(page, "ada", staff["ada"])
        expect(page.get_by_role("heading", name="Access log")).to_be_visible()
        expect(page.get_by_text("Signature verifies with the service key")).to_be_visible()
        expect(page.locator(".st-entry").first).to_be_visible()
        page.get_by_role("button", name="Keep the current head").click()
        kept_size = int(page.get_by_test_id("sth-size").inner_text())
        # The log grows (another report), then the auditor fetches the newest head.
        aio.run(alice.report(conv_id, [ids[2]], "harassment"))
    finally:
        aio.run(alice.close())
        aio.run(bob.close())
    page.get_by_role("button", name="Fetch the newest head").click()
    expect(page.get_by_test_id("sth-size")).not_to_have_text(str(kept_size))
    expect(page.get_by_text("Signature verifies with the service key")).to_be_visible()
    new_size = int(page.get_by_test_id("sth-size").inner_text())
    assert new_size > kept_size

    def head_option(size: int) -> str:
        labels = page.get_by_label("Older head").locator("option").all_inner_texts()
        return next(label for label in labels if label.startswith(f"{size} entries"))

    page.get_by_label("Older head").select_option(label=head_option(kept_size))
    page.get_by_label("Newer head").select_option(label=head_option(new_size))
    page.get_by_role("button", name="Check consistency").click()
    expect(page.get_by_test_id("consistency-result")).to_contain_text(
        "consistent: the newer head extends the older one"
    )

    page.get_by_role("button", name="Verify every entry against the signed head").click()
    expect(page.get_by_test_id("whole-log-result")).to_contain_text(
        f"all {new_size} entries match the signed root"
    )

    page.get_by_role("button", name="Check this page's inclusion proofs").click()
    expect(page.locator(".st-entry .vf-ok").first).to_contain_text("in the signed tree")
    assert page.locator(".st-entry .vf-bad").count() == 0
    no_axe(page)
    screenshot(page, "staff-audit-log")

    # A tampered consistency proof (one byte changed on the way): ✗, saying what failed.
    def tamper(route: Route) -> None:
        response = route.fetch()
        data = response.json()
        first = data["proof"][0]
        data["proof"][0] = ("0" if first[0] != "0" else "1") + first[1:]
        route.fulfill(response=response, json=data)

    proofs = re.compile(r"/api/v1/transparency/proof/consistency\?")
    page.route(proofs, tamper)
    page.get_by_role("button", name="Check consistency").click()
    expect(page.get_by_test_id("consistency-result")).to_contain_text("✗")
    expect(page.get_by_test_id("consistency-result")).to_contain_text("the log was rewritten")
    page.unroute(proofs)

    # The transparency report of the running period, with its charts.
    page.get_by_role("link", name="Transparency report").click()
    expect(page.get_by_role("heading", name="Transparency report", level=1)).to_be_visible()
    expect(page.locator(".tp-card").first).to_be_visible()
    expect(page.get_by_text("Reports by category")).to_be_visible()
    assert page.locator(".tp-bar-fill").count() > 0
    expect(page.get_by_text("these entries are in the signed log")).to_be_visible()
    no_axe(page)
    screenshot(page, "staff-transparency")
    assert page_problems(page) == []


def test_auditor_console_at_phone_width(
    web_server: Server, staff: dict[str, str], new_page: NewPage, aio: AsyncRunner
) -> None:
    alice, bob, conv_id, ids = aio.run(scene(web_server))
    try:
        aio.run(alice.report(conv_id, [ids[2]], "violent_threat"))
    finally:
        aio.run(alice.close())
        aio.run(bob.close())
    page = new_page(viewport=PHONE)
    sign_in(page, "ada", staff["ada"])
    expect(page.get_by_role("heading", name="Access log")).to_be_visible()
    expect(page.get_by_text("Signature verifies with the service key")).to_be_visible()
    assert too_wide(page) == []
    no_axe(page)
    screenshot(page, "staff-audit-log-phone")
    # Keyboard only. After sign-in the focus is on the page's heading; going back with Shift+Tab
    # passes the header's controls up to the skip link, and Tab goes forward again.
    assert page.evaluate("() => document.activeElement?.tagName") == "H1"
    active = "() => document.activeElement?.textContent?.trim()"
    backwards = []
    for _ in range(4):
        page.keyboard.press("Shift+Tab")
        backwards.append(page.evaluate(active))
    assert backwards == ["Sign out", "Transparency report", "Access log", "Skip to content"], backwards
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate(active) == "Transparency report"
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Transparency report", level=1)).to_be_visible()
    expect(page.locator(".tp-card").first).to_be_visible()
    assert too_wide(page) == []
    no_axe(page)
    # Staff of one role do not get another's screens: the console sends them to their own.
    page.evaluate(
        "() => { history.pushState(null, '', '/staff/legal'); dispatchEvent(new PopStateEvent('popstate')); }"
    )
    expect(page.get_by_role("heading", name="Access log")).to_be_visible()
    assert page_problems(page) == []


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_public_transparency_page(web_server: Server, new_page: NewPage, viewport: tuple[int, int]) -> None:
    page = new_page(viewport=viewport)
    page.goto("/transparency")
    expect(page.get_by_role("heading", name="Transparency", level=1)).to_be_visible()
    expect(page.get_by_text("Signature verifies with the service key")).to_be_visible()
    expect(page.get_by_label("Period")).to_be_visible()
    expect(page.get_by_text("legal requests", exact=True)).to_be_visible()
    assert too_wide(page) == []
    no_axe(page)
    screenshot(page, "transparency-" + ("phone" if viewport == PHONE else "desktop"))
    assert page_problems(page) == []


def test_public_head_with_forged_signature(web_server: Server, new_page: NewPage) -> None:
    page = new_page(viewport=DESKTOP)

    def forge(route: Route) -> None:
        response = route.fetch()
        head = response.json()
        sig = head["signature"]
        head["signature"] = sig[:-2] + ("00" if sig[-2:] != "00" else "01")
        route.fulfill(response=response, json=head)

    page.route("**/api/v1/transparency/sth", forge)
    page.goto("/transparency")
    expect(page.locator(".tp-verdict")).to_contain_text("✗")
    expect(page.locator(".tp-verdict")).to_contain_text(
        "the signature of the signed tree head does not verify"
    )
    assert page_problems(page) == []
