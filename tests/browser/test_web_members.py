"""The member app in Chromium, against a real server: two members in two browser contexts.

- sign up in the browser, a message request accepted in the requests inbox, then live chat in
  `standard` both ways, with delivery and read receipts, unread counts and previews;
- the "who can read this" banner says exactly the API's `readable_by`;
- a send whose answer is lost is retried with the same idempotency key: one message, not two;
- the server restarts (same port, same data dir): the pages show they are offline, reconnect
  with `since`, and lose nothing nor show anything twice, a send made while offline included;
- settings: DM audience (and a 16-year-old's refusal, in the API's words), blocks, password,
  devices, log out everywhere;
- axe-core finds no serious or critical violation on any member page, at phone and desktop
  widths; screenshots of the main screens go to build/screenshots/ (`make screenshots`: docs/).

The server runs the built-in safety policy (message requests on), on a port of its own that it
keeps across the restart (a fixture of this module, so the restart disturbs no other module).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, Route, expect

import conftest as shared
from browser.conftest import NewPage
from browser.helpers import WEB_DIST, check_axe, page_problems, screenshot
from conftest import PASSWORD, TLS, Server, start_server, stop_server, unique

PHONE = (375, 812)
DESKTOP = (1280, 800)
# What a page logs while the server is away on purpose (restart) or an answer is cut (retry).
OFFLINE_NOISE = [
    r"WebSocket connection to .* failed",
    r"Failed to load resource: net::ERR_",
    r"server error: 503",
]


# An operator's rule that holds a message for review (docs/safety.md, the rules file).
HOLD_RULE = """
[[rule]]
name = "browser-test-hold"
category = "spam"
action = "hold"
terms = ["purple elephant"]
"""
# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@dataclass
class Site:
    server: Server
    home: Path
    port: int

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        stop_server(self.server)

    def start(self) -> None:
        self.server = start_on(self.home, self.port)


def start_on(home: Path, port: int) -> Server:
    """tests/conftest.py's start_server, on a port chosen here (kept across a restart) and
    serving the built app; `policy=None`: the built-in safety policy, message requests on."""
    original = shared.free_port
    shared.free_port = lambda: port
    try:
        return start_server(home, "sqlite", env={"KEYHOLD_WEB_DIR": str(WEB_DIST)}, policy=None)
    finally:
        shared.free_port = original


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not (WEB_DIST / "index.html").is_file():
        pytest.fail(
            f"{WEB_DIST}/index.html is missing: build the app (cd web && npm ci && npm run build)",
            pytrace=False,
        )
    home = tmp_path_factory.mktemp("members") / "kh"
    home.mkdir(parents=True)
    (home / "safety-rules.toml").write_text(HOLD_RULE)
    running = Site(start_on(home, shared.free_port()), home, 0)
    running.port = int(running.url.rsplit(":", 1)[1])
    yield running
    running.stop()


# -- helpers -------------------------------------------------------------------------------


def register(site: Site, prefix: str, birthdate: str = "1990-05-17", region: str = "us") -> str:
    name = unique(prefix)
    answer = httpx.post(
        f"{site.url}/api/v1/accounts", verify=TLS,
        json={"username": name, "password": PASSWORD, "birthdate": birthdate, "region": region},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return name


@contextmanager
def api_as(site: Site, username: str, password: str = PASSWORD) -> Iterator[httpx.Client]:
    """The API as `username`, on a session (and device) of its own, not the browser's."""
    answer = httpx.post(
        f"{site.url}/api/v1/sessions", verify=TLS, json={"username": username, "password": password}, timeout=30
    )
    assert answer.status_code == 201, answer.text
    token = answer.json()["token"]
    with httpx.Client(
        verify=TLS,
        base_url=f"{site.url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        yield http


def conversation_between(site: Site, starter: str, other: str) -> int:
    """A standard 1:1 started by `starter` and accepted by `other` (not friends: a request)."""
    with api_as(site, starter) as http:
        started = http.post("/conversations", json={"members": [other], "encryption": "standard"})
        assert started.status_code in (200, 201), started.text
        cid = int(started.json()["id"])
    with api_as(site, other) as http:
        accepted = http.post(f"/requests/{cid}/accept")
        assert accepted.status_code == 204, accepted.text
    return cid


def no_axe_findings(page: Page) -> None:
    found = check_axe(page)
    assert found == [], f"axe-core on {page.url}: {found}"
    # Nothing wider than the window (375 px on a phone): no sideways scrolling.
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{page.url} is {width[0]} px wide in a {width[1]} px window"


def sign_up(
    page: Page, username: str, region: str, birthdate: str = "1990-05-17", shot: str | None = None
) -> None:
    page.goto("/signup")
    expect(page.get_by_role("heading", name="Sign up", level=1)).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Birthdate").fill(birthdate)
    page.get_by_label("Region").select_option(region)
    # The minors' rules are explained next to the birthdate.
    expect(page.locator("#minors-rules")).to_contain_text("13\u201315")
    expect(page.locator("#minors-rules")).to_contain_text("16\u201317")
    if shot:
        no_axe_findings(page)
        screenshot(page, shot)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Chats", level=1)).to_be_visible()


def log_in(page: Page, username: str, path: str = "/", password: str = PASSWORD) -> None:
    """Open `path` signed out: the app asks to log in, then lands there."""
    page.goto("/login" if path == "/" else path)
    expect(page.get_by_role("heading", name="Log in", level=1)).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    if path == "/":
        expect(page.get_by_role("heading", name="Chats", level=1)).to_be_visible()
    else:
        expect(page).to_have_url(re.compile(re.escape(path) + "$"))


def go(page: Page, name: str) -> None:
    """Follow a link of the main navigation (behind the Menu button at phone width)."""
    nav = page.get_by_role("navigation", name="Main")
    if not nav.is_visible():
        page.get_by_role("button", name="Menu").click()
    nav.get_by_role("link", name=re.compile(f"^{re.escape(name)}")).click()


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def bubbles(page: Page, text: str) -> Locator:
    """The messages on the page that say exactly `text`."""
    return page.locator(".msg-list .msg-text").filter(has_text=re.compile(f"^{re.escape(text)}$"))


def delivered(page: Page, text: str) -> Locator:
    """My messages that the server confirmed (not pending) and say exactly `text`."""
    return page.locator(".msg-list .msg.mine:not(.pending)").filter(
        has=page.locator(".msg-text", has_text=re.compile(f"^{re.escape(text)}$"))
    )


def history_texts(site: Site, username: str, cid: int) -> list[str]:
    with api_as(site, username) as http:
        page = http.get(f"/conversations/{cid}/messages", params={"limit": 200})
        assert page.status_code == 200, page.text
        return [m["text"] for m in page.json()["items"]]


# -- tests ---------------------------------------------------------------------------------


def test_sign_up_request_accept_and_chat_live_both_ways(site: Site, new_page: NewPage) -> None:
    a = new_page(viewport=DESKTOP, base_url=site.url)
    b = new_page(viewport=PHONE, base_url=site.url)
    ann, ben = unique("ann"), unique("ben")

    a.goto("/")
    expect(a.get_by_role("heading", level=1)).to_contain_text("who can read it")
    expect(a.get_by_role("link", name="transparency report")).to_have_attribute("href", "/transparency")
    no_axe_findings(a)
    screenshot(a, "member-landing")
    b.goto("/login")
    no_axe_findings(b)

    sign_up(a, ann, "us", shot="member-signup")
    sign_up(b, ben, "eu")
    no_axe_findings(a)
    no_axe_findings(b)

    # ann starts a 1:1 with ben: they are not friends, so it reaches ben as a request.
    a.get_by_label("With (username)").fill(ben)
    a.get_by_role("button", name="Start", exact=True).click()
    expect(a).to_have_url(re.compile(r"/c/\d+$"))
    cid = int(a.url.rsplit("/", 1)[1])
    send(a, "hello ben")
    expect(delivered(a, "hello ben")).to_have_count(1)
    expect(a.locator(".msg.mine .receipt-words")).to_have_text(["Sent"])

    # ben: the request arrives live (no reload), in the requests inbox.
    expect(b.get_by_text("You have 1 message request")).to_be_visible()
    go(b, "Requests")
    expect(b.get_by_role("heading", name="Message requests")).to_be_visible()
    request = b.locator(".request")
    expect(request).to_have_count(1)
    expect(request).to_contain_text(ann)
    expect(request).to_contain_text("hello ben")
    no_axe_findings(b)
    screenshot(b, "member-requests-phone")
    request.get_by_role("button", name="Accept").click()
    expect(b.get_by_role("status")).to_contain_text("Accepted")
    expect(b.locator(".request")).to_have_count(0)

    go(b, "Chats")
    b.locator(".conv-item", has_text=ann).click()
    expect(b).to_have_url(re.compile(f"/c/{cid}$"))
    expect(bubbles(b, "hello ben")).to_have_count(1)
    # ben read it: ann's message shows ✓✓ Read, live.
    expect(a.locator(".msg.mine .receipt-words")).to_have_text(["Read"])

    send(b, "hi ann")
    expect(bubbles(a, "hi ann")).to_have_count(1)
    expect(b.locator(".msg.mine .receipt-words")).to_have_text(["Read"])
    expect(bubbles(b, "hi ann")).to_have_count(1)

    # The banner says the API's readable_by, word for word, on both sides.
    with api_as(site, ann) as http:
        readable_by = http.get(f"/conversations/{cid}").json()["readable_by"]
    assert "regions eu, us" in readable_by
    for page in (a, b):
        expect(page.get_by_test_id("readable-by")).to_have_text(readable_by)
        expect(page.locator(".banner .badge")).to_have_text("standard")
    # ... and explains the model on click, or from the keyboard.
    toggle = a.get_by_role("button", name=re.compile("What Keyhold can and cannot see"))
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.focus()
    a.keyboard.press("Enter")
    expect(a.locator(".explain")).to_be_visible()
    expect(a.locator(".explain")).to_contain_text("access log")
    expect(a.get_by_role("button", name="Hide what Keyhold can see")).to_have_attribute(
        "aria-expanded", "true"
    )
    no_axe_findings(a)
    no_axe_findings(b)
    screenshot(a, "member-conversation", full_page=False)
    screenshot(b, "member-conversation-phone", full_page=False)

    # The list: ann on her chats page gets ben's next message as an unread count and preview.
    go(a, "Chats")
    item = a.locator(".conv-item", has_text=ben)
    expect(item.locator(".badge")).to_have_text("standard")
    send(b, "are you there?")
    expect(item.locator(".unread")).to_have_text("1")
    expect(item.locator(".conv-preview")).to_have_text(f"{ben}: are you there?")
    # Search in names, client-side.
    a.get_by_label("Search conversations by name").fill("nobody-like-this")
    expect(a.locator(".conv-item")).to_have_count(0)
    a.get_by_label("Search conversations by name").fill(ben[:5])
    expect(a.locator(".conv-item")).to_have_count(1)
    no_axe_findings(a)
    screenshot(a, "member-chats")
    item.click()
    expect(bubbles(a, "are you there?")).to_have_count(1)
    expect(a.locator(".conv-item.active .unread")).to_have_count(0)
    expect(b.locator(".msg.mine .receipt-words")).to_have_text(["Read", "Read"])

    # Delete for everyone: a tombstone on both sides.
    mine = a.locator(".msg.mine").filter(has_text="hello ben")
    mine.get_by_role("button", name="Delete").click()
    a.get_by_role("button", name="Delete for everyone").click()
    expect(a.locator(".msg.mine .tombstone")).to_have_text("Message deleted")
    expect(bubbles(b, "hello ben")).to_have_count(0)
    expect(b.locator(".msg.theirs .tombstone")).to_have_text("Message deleted")

    # Log out: back to the landing page; the token no longer opens anything.
    a.get_by_role("button", name="Log out").click()
    expect(a.get_by_role("heading", level=1)).to_contain_text("who can read it")
    assert a.evaluate("() => [localStorage.length, sessionStorage.length]") == [1, 0]  # the device id only
    kept = a.evaluate("() => JSON.stringify(localStorage)")
    assert "kh_" not in kept and "hi ann" not in kept

    assert page_problems(a) == []
    assert page_problems(b) == []


def test_a_retried_send_never_duplicates(site: Site, new_page: NewPage) -> None:
    ann, ben = register(site, "ann"), register(site, "ben")
    cid = conversation_between(site, ann, ben)
    a = new_page(viewport=DESKTOP, base_url=site.url)
    log_in(a, ann, f"/c/{cid}")
    expect(a.get_by_text("No messages yet. Say hello.")).to_be_visible()

    # The first answer to a send is lost after the server stored the message (a dropped
    # connection): the app sends again, with the same idempotency key.
    bodies: list[dict[str, Any]] = []

    def cut_first_answer(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        body = route.request.post_data_json
        assert isinstance(body, dict)
        bodies.append(body)
        if len(bodies) == 1:
            stored = route.fetch()
            assert stored.status == 201
            route.abort("connectionreset")
        else:
            route.continue_()

    a.route(re.compile(r"/api/v1/conversations/\d+/messages$"), cut_first_answer)
    send(a, "exactly once")
    expect(delivered(a, "exactly once")).to_have_count(1)
    expect(a.locator(".msg.pending")).to_have_count(0)
    expect(bubbles(a, "exactly once")).to_have_count(1)
    assert len(bodies) >= 2
    keys = {body["idempotency_key"] for body in bodies}
    assert len(keys) == 1 and uuid.UUID(keys.pop())  # one random key, for every try
    assert history_texts(site, ann, cid).count("exactly once") == 1

    # The next message gets a key of its own.
    send(a, "and a second one")
    expect(delivered(a, "and a second one")).to_have_count(1)
    assert bodies[-1]["idempotency_key"] != bodies[0]["idempotency_key"]

    b = new_page(viewport=PHONE, base_url=site.url)
    log_in(b, ben, f"/c/{cid}")
    expect(bubbles(b, "and a second one")).to_have_count(1)
    expect(bubbles(b, "exactly once")).to_have_count(1)
    assert page_problems(a, allow=OFFLINE_NOISE) == []
    assert page_problems(b) == []


def test_reconnect_after_a_server_restart_loses_nothing(site: Site, new_page: NewPage) -> None:
    ann, ben = register(site, "ann"), register(site, "ben", region="eu")
    cid = conversation_between(site, ann, ben)
    a = new_page(viewport=DESKTOP, base_url=site.url)
    b = new_page(viewport=PHONE, base_url=site.url)
    log_in(a, ann, f"/c/{cid}")
    log_in(b, ben, f"/c/{cid}")
    send(a, "before the restart")
    expect(bubbles(b, "before the restart")).to_have_count(1)

    site.stop()
    for page in (a, b):
        expect(page.get_by_test_id("offline-banner")).to_be_visible()
    # Written while the server is away: kept, and retried with its key.
    send(a, "sent while offline")
    expect(a.locator(".msg.pending")).to_have_count(1)
    screenshot(a, "member-offline", full_page=False)

    site.start()  # same port, same data dir
    # ben's other device sends at once, before (or while) the pages reconnect.
    with api_as(site, ben) as http:
        for n in range(3):
            sent = http.post(
                f"/conversations/{cid}/messages",
                json={"text": f"missed {n}", "idempotency_key": uuid.uuid4().hex},
            )
            assert sent.status_code == 201, sent.text

    for page in (a, b):
        expect(page.get_by_test_id("offline-banner")).to_be_hidden(timeout=30_000)
    expect(a.locator(".msg.pending")).to_have_count(0, timeout=30_000)
    for text in ["before the restart", "sent while offline", "missed 0", "missed 1", "missed 2"]:
        for page in (a, b):
            expect(bubbles(page, text)).to_have_count(1)
    # Live again after the replay: no reload needed.
    send(b, "after the restart")
    expect(bubbles(a, "after the restart")).to_have_count(1)
    assert history_texts(site, ann, cid).count("sent while offline") == 1
    assert page_problems(a, allow=OFFLINE_NOISE) == []
    assert page_problems(b, allow=OFFLINE_NOISE) == []


def sixteen_years_old() -> str:
    today = date.today()
    return (today.replace(year=today.year - 16) - timedelta(days=30)).isoformat()


def test_settings_devices_standing_and_minors_limits(site: Site, new_page: NewPage) -> None:
    ann, carl = register(site, "ann"), register(site, "carl")
    teen = register(site, "teen", birthdate=sixteen_years_old())
    # A notice from before ann's sign-in (the teen asked for a guardian link): the stream
    # replays it (since=0) but raises no toast for it.
    with api_as(site, teen) as http:
        assert http.put(f"/guardian/links/{ann}").status_code == 200
    a = new_page(viewport=DESKTOP, base_url=site.url)
    log_in(a, ann, "/settings")
    expect(a.get_by_role("heading", name="Settings", level=1)).to_be_visible()
    no_axe_findings(a)

    # DM audience: everyone → friends.
    expect(a.get_by_test_id("dm-audience")).to_have_text("Everyone")
    audience = a.locator("section", has=a.get_by_role("heading", name="Who may message you"))
    audience.get_by_label("Friends only (mutual follows)").check()
    audience.get_by_role("button", name="Save").click()
    expect(audience.get_by_role("status")).to_have_text("Saved.")
    expect(a.get_by_test_id("dm-audience")).to_have_text("Friends only (mutual follows)")
    with api_as(site, ann) as http:
        assert http.get("/account/messaging").json()["dm_audience"] == "friends"

    # Blocks: block carl, then unblock him.
    blocks = a.locator("section", has=a.get_by_role("heading", name="Blocked members"))
    blocks.get_by_label("Block a member (username)").fill(carl)
    blocks.get_by_role("button", name="Block", exact=True).click()
    expect(blocks.locator(".plain-list li")).to_have_count(1)
    expect(blocks.locator(".plain-list li")).to_contain_text(carl)
    with api_as(site, ann) as http:
        assert [b["username"] for b in http.get("/blocks").json()["items"]] == [carl]
    screenshot(a, "member-settings")
    blocks.get_by_role("button", name=f"Unblock {carl}").click()
    expect(blocks.get_by_text("You block no one.")).to_be_visible()

    # A wrong current password: the API's words.
    password = a.locator("section", has=a.get_by_role("heading", name="Password"))
    password.get_by_label("Current password").fill("not my password")
    password.get_by_label("New password (at least 8 characters)").fill("a brand new password")
    password.get_by_role("button", name="Change password").click()
    expect(password.get_by_role("alert")).not_to_be_empty()
    no_axe_findings(a)

    # Devices: this browser is listed, by the name the app gave it.
    go(a, "Devices")
    current = a.locator(".device", has=a.locator(".tag", has_text="this browser"))
    expect(current).to_have_count(1)
    expect(current.locator(".device-name")).to_contain_text("Web: Chromium")
    no_axe_findings(a)
    screenshot(a, "member-devices")

    go(a, "Standing")
    expect(a.get_by_test_id("standing-status")).to_contain_text("Active")
    no_axe_findings(a)
    screenshot(a, "member-standing")
    go(a, "Access history")
    expect(a.get_by_role("heading", name="My access history")).to_be_visible()
    no_axe_findings(a)

    # A 16-year-old cannot open their DMs to everyone: the refusal in the API's words.
    t = new_page(viewport=PHONE, base_url=site.url)
    log_in(t, teen, "/settings")
    teen_audience = t.locator("section", has=t.get_by_role("heading", name="Who may message you"))
    expect(teen_audience).to_contain_text("You are 16\u201317")
    expect(t.get_by_test_id("dm-audience")).to_have_text("No one")
    teen_audience.get_by_label(re.compile("^Everyone")).check()
    teen_audience.get_by_role("button", name="Save").click()
    with api_as(site, teen) as http:
        refused = http.put("/account/messaging", json={"dm_audience": "everyone"})
    assert refused.status_code == 403
    expect(teen_audience.get_by_role("alert")).to_have_text(refused.json()["detail"])
    no_axe_findings(t)
    screenshot(t, "member-settings-teen-phone")
    # A notice that comes while signed in raises a toast; the one from before never showed.
    with api_as(site, teen) as http:
        assert http.delete(f"/guardian/links/{ann}").status_code == 204
    expect(a.locator(".toast")).to_have_count(1)
    expect(a.locator(".toast")).to_contain_text(f"{teen} ended a guardian link with you.")

    # Log out everywhere: every session ends, the API's included.
    with api_as(site, ann) as http:
        go(a, "Settings")
        a.get_by_role("button", name="Log out everywhere").click()
        expect(a.get_by_role("navigation", name="Account").get_by_role("link", name="Log in")).to_be_visible()
        assert http.get("/account").status_code == 401
    assert page_problems(a) == []
    assert page_problems(t) == []


def test_group_management_by_role(site: Site, new_page: NewPage) -> None:
    owner, dana, eve = register(site, "own"), register(site, "dana"), register(site, "eve")
    # Friends (mutual follows), so adds are not requests.
    for x, y in [(owner, dana), (owner, eve)]:
        with api_as(site, x) as http:
            assert http.put(f"/following/{y}").status_code == 204
        with api_as(site, y) as http:
            assert http.put(f"/following/{x}").status_code == 204
    a = new_page(viewport=PHONE, base_url=site.url)
    log_in(a, owner)
    a.get_by_label("Group", exact=True).check()
    a.get_by_label("Members (usernames, separated by commas or spaces)").fill(dana)
    a.get_by_label(re.compile("^Group title")).fill("Trip plans")
    a.get_by_role("button", name="Start", exact=True).click()
    expect(a.get_by_role("heading", name="Trip plans", level=1)).to_be_visible()
    a.get_by_role("button", name="Members & settings").click()
    panel = a.locator("#manage-panel")
    panel.get_by_label("Add members (usernames)").fill(eve)
    panel.get_by_role("button", name="Add", exact=True).click()
    expect(panel.locator(".member-list li")).to_have_count(3)
    panel.get_by_role("button", name=f"Make admin {dana}").click()
    expect(panel.locator(".member-list li", has_text=dana)).to_contain_text("admin")
    panel.get_by_label("Group title (not sealed)").fill("Trip plans 2")
    panel.get_by_role("button", name="Rename").click()
    expect(a.get_by_role("heading", name="Trip plans 2", level=1)).to_be_visible()
    panel.get_by_label("Disappearing messages").select_option(label="1 hour")
    panel.get_by_role("button", name="Set timer").click()
    expect(a.locator(".conv-sub")).to_contain_text("disappear after 1 hour")
    panel.get_by_role("button", name=f"Remove {eve}").click()
    expect(panel.locator(".member-list li")).to_have_count(2)
    no_axe_findings(a)
    screenshot(a, "member-group-phone")
    send(a, "a message that disappears")
    expect(delivered(a, "a message that disappears").locator(".msg-expiry")).to_contain_text("Disappears")

    # dana (an admin now, not the owner) may not remove the owner; eve is gone from the group.
    d = new_page(viewport=DESKTOP, base_url=site.url)
    log_in(d, dana)
    d.locator(".conv-item", has_text="Trip plans 2").click()
    d.get_by_role("button", name="Members & settings").click()
    expect(d.locator("#manage-panel").get_by_role("button", name=f"Remove {owner}")).to_have_count(0)
    expect(bubbles(d, "a message that disappears")).to_have_count(1)
    # dana leaves: the group is gone from her list.
    d.get_by_role("button", name="Leave group…").click()
    d.get_by_role("button", name="Leave the group").click()
    expect(d.get_by_role("heading", name="Chats", level=1)).to_be_visible()
    expect(d.locator(".conv-item", has_text="Trip plans 2")).to_have_count(0)
    expect(a.locator("#manage-panel .member-list li")).to_have_count(1)
    with api_as(site, eve) as http:
        assert http.get("/conversations").json()["items"] == []
    assert page_problems(a) == []
    assert page_problems(d) == []


def test_safety_verdicts_attachments_and_reports(site: Site, new_page: NewPage) -> None:
    ann, ben = register(site, "ann"), register(site, "ben")
    cid = conversation_between(site, ann, ben)
    a = new_page(viewport=DESKTOP, base_url=site.url)
    b = new_page(viewport=PHONE, base_url=site.url)
    log_in(a, ann, f"/c/{cid}")
    log_in(b, ben, f"/c/{cid}")

    # blocked: not sent, and the policy said in the API's words.
    send(a, "I will kill you tomorrow")
    refused = a.locator(".msg.pending-refused")
    expect(refused.get_by_role("alert")).to_contain_text(
        "blocked by the safety policy: violent threat. Keyhold does not deliver threats of violence."
    )
    refused.get_by_role("button", name="Discard").click()
    expect(a.locator(".msg.pending")).to_have_count(0)

    # support: delivered, and the sender (only) is told where to find help.
    send(a, "i want to kill myself")
    expect(delivered(a, "i want to kill myself")).to_have_count(1)
    help_box = a.get_by_role("complementary", name="Where to find help")
    expect(help_box.get_by_role("link")).to_have_attribute("href", "https://findahelpline.com")
    expect(bubbles(b, "i want to kill myself")).to_have_count(1)
    expect(b.get_by_role("complementary", name="Where to find help")).to_have_count(0)

    # held: shown to its sender as pending review, to no one else.
    send(a, "a purple elephant for sale")
    held = a.locator(".msg.held")
    expect(held).to_contain_text("Pending review")
    expect(held.locator(".msg-text")).to_have_text("a purple elephant for sale")

    # An image: uploaded with progress, previewed from a blob: URL, downloadable.
    a.get_by_label("Attach a file").set_input_files(
        {"name": "dot.png", "mimeType": "image/png", "buffer": PNG}
    )
    expect(a.locator(".composer-file")).to_contain_text("dot.png")
    with a.expect_request(re.compile(r"/attachments")) as upload_info:
        send(a, "a picture")
    # The file's name travels in a header, never in the URL (which proxies and logs keep).
    assert upload_info.value.url.endswith("/attachments"), upload_info.value.url
    assert upload_info.value.headers.get("keyhold-filename") == "dot.png"
    picture = delivered(a, "a picture")
    expect(picture.locator("img.preview")).to_have_attribute("src", re.compile(r"^blob:"))
    expect(picture.locator("img.preview")).to_have_attribute("alt", "Image: dot.png")
    with a.expect_download() as download_info:
        picture.get_by_role("button", name="Download dot.png").click()
    assert download_info.value.suggested_filename == "dot.png"
    assert Path(download_info.value.path()).read_bytes() == PNG
    theirs = b.locator(".msg.theirs").filter(has=b.locator(".msg-text", has_text="a picture"))
    expect(theirs.locator("img.preview")).to_have_attribute("src", re.compile(r"^blob:"))
    expect(bubbles(b, "a purple elephant for sale")).to_have_count(0)
    no_axe_findings(a)
    no_axe_findings(b)
    screenshot(a, "member-verdicts-and-attachment", full_page=False)

    # ben reports the picture from the conversation view.
    theirs.get_by_role("button", name="Report").click()
    form = b.get_by_role("form", name=f"Report the message from {ann}")
    form.get_by_label("Category").select_option("spam")
    form.get_by_label(re.compile("^Comment")).fill("not wanted")
    form.get_by_role("button", name="Send report").click()
    expect(form.get_by_role("status")).to_contain_text(re.compile(r"Reported \(case \d+\)"))
    no_axe_findings(b)
    assert page_problems(a) == []
    assert page_problems(b) == []


PASSPHRASE = "a long enough passphrase"
E2EE_WAIT_MS = 45_000


def unlock_e2ee(page: Page) -> None:
    """Set this browser's e2ee passphrase in the e2ee chunk's own dialog (first use)."""
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Passphrase", exact=True).fill(PASSPHRASE, timeout=E2EE_WAIT_MS)
    dialog.get_by_label("The same passphrase again").fill(PASSPHRASE)
    dialog.get_by_role("button", name="Set passphrase").click()
    expect(page.get_by_label("Message", exact=True)).to_be_enabled(timeout=E2EE_WAIT_MS)


def test_two_browsers_chat_in_e2ee_through_the_conversation_view(site: Site, new_page: NewPage) -> None:
    ann, ben = register(site, "ann"), register(site, "ben", region="eu")
    for x, y in [(ann, ben), (ben, ann)]:
        with api_as(site, x) as http:
            assert http.put(f"/following/{y}").status_code == 204
    a = new_page(viewport=DESKTOP, base_url=site.url)
    b = new_page(viewport=PHONE, base_url=site.url)
    log_in(a, ann)
    a.get_by_label("With (username)").fill(ben)
    a.get_by_label(re.compile("^e2ee:")).check()
    a.get_by_role("button", name="Start", exact=True).click()
    expect(a).to_have_url(re.compile(r"/c/\d+$"))
    cid = int(a.url.rsplit("/", 1)[1])
    unlock_e2ee(a)

    log_in(b, ben, f"/c/{cid}")
    unlock_e2ee(b)

    send(a, "only our devices read this")
    expect(delivered(a, "only our devices read this")).to_have_count(1, timeout=E2EE_WAIT_MS)
    expect(bubbles(b, "only our devices read this")).to_have_count(1, timeout=E2EE_WAIT_MS)
    send(b, "and this too")
    expect(bubbles(a, "and this too")).to_have_count(1, timeout=E2EE_WAIT_MS)
    # A file: encrypted in the browser, its name and type sealed in the message.
    a.get_by_label("Attach a file").set_input_files(
        {"name": "dot.png", "mimeType": "image/png", "buffer": PNG}
    )
    send(a, "a sealed picture")
    picture = b.locator(".msg.theirs").filter(has=b.locator(".msg-text", has_text="a sealed picture"))
    expect(picture.locator("img.preview")).to_have_attribute("alt", "Image: dot.png", timeout=E2EE_WAIT_MS)
    expect(picture.locator("img.preview")).to_have_attribute("src", re.compile(r"^blob:"))
    # The server holds ciphertext only.
    assert history_texts(site, ann, cid) == [None, None, None]

    with api_as(site, ann) as http:
        readable_by = http.get(f"/conversations/{cid}").json()["readable_by"]
    assert readable_by.startswith("only the participants' devices")
    for page in (a, b):
        expect(page.get_by_test_id("readable-by")).to_have_text(readable_by)
        expect(page.locator(".banner .badge")).to_have_text("e2ee")
        page.get_by_role("button", name="Which devices can read it").click()
        expect(page.get_by_test_id("e2ee-device-list")).to_be_visible()
        expect(page.get_by_test_id("e2ee-device-list")).to_contain_text(ben)
    # The Verify panel offers SAS (emoji or numbers) with the contact's devices.
    a.get_by_role("button", name="Verify", exact=True).click()
    a.get_by_role("button", name=f"Verify {ben} with emoji or numbers").click()
    expect(a.get_by_test_id("e2ee-verify-start")).to_have_count(1, timeout=E2EE_WAIT_MS)
    # In the list, an e2ee preview is never text the server could have read.
    go(a, "Chats")
    expect(a.locator(".conv-item", has_text=ben).locator(".conv-preview")).to_have_text(
        "You: encrypted message"
    )
    a.locator(".conv-item", has_text=ben).click()
    expect(bubbles(a, "and this too")).to_have_count(1, timeout=E2EE_WAIT_MS)
    no_axe_findings(a)
    no_axe_findings(b)
    screenshot(b, "member-e2ee-conversation-phone", full_page=False)

    # Deleting the account deletes this browser's e2ee store and device id for the member.
    stores = "async () => (await indexedDB.databases()).map((d) => d.name).filter((n) => n.startsWith('keyhold-e2ee:'))"
    assert b.evaluate(stores), "no e2ee store before"
    assert b.evaluate("(u) => localStorage.getItem('keyhold.device.' + u)", ben.lower())
    go(b, "Settings")
    danger = b.locator("section", has=b.get_by_role("heading", name="Delete your account"))
    danger.get_by_label("Password").fill(PASSWORD)
    danger.get_by_label("I understand that my account and what I sent will be deleted.").check()
    danger.get_by_role("button", name="Delete my account").click()
    expect(b).to_have_url(re.compile(r"/$"))
    b.wait_for_function(
        "async () => !(await indexedDB.databases()).some((d) => d.name.startsWith('keyhold-e2ee:'))"
    )
    assert b.evaluate("(u) => localStorage.getItem('keyhold.device.' + u)", ben.lower()) is None
    assert page_problems(a) == []
    assert page_problems(b) == []


def test_history_scrolls_up_page_by_page(site: Site, new_page: NewPage) -> None:
    ann, ben = register(site, "ann"), register(site, "ben")
    cid = conversation_between(site, ann, ben)
    with api_as(site, ben) as http:
        for n in range(75):
            sent = http.post(
                f"/conversations/{cid}/messages", json={"text": f"line {n}", "idempotency_key": f"h-{n}"}
            )
            assert sent.status_code == 201, sent.text
    a = new_page(viewport=PHONE, base_url=site.url)
    log_in(a, ann, f"/c/{cid}")
    # The newest page (50), at the bottom; the older ones come in when scrolling up.
    expect(a.locator(".msg-list .msg")).to_have_count(50)
    expect(bubbles(a, "line 74")).to_be_in_viewport()
    a.locator(".messages").evaluate("(el) => { el.scrollTop = 0; }")
    expect(a.locator(".msg-list .msg")).to_have_count(75)
    expect(a.get_by_text("This is the start of the conversation.")).to_be_visible()
    texts = a.locator(".msg-list .msg-text").all_inner_texts()
    assert texts == [f"line {n}" for n in range(75)]
    assert page_problems(a) == []


def test_requests_inbox_report_then_block(site: Site, new_page: NewPage) -> None:
    ann, carl, dora = register(site, "ann"), register(site, "carl"), register(site, "dora")
    for sender, text in [(carl, "hello there, want to chat?"), (dora, "hi, we met at the conference")]:
        with api_as(site, sender) as http:
            started = http.post("/conversations", json={"members": [ann], "encryption": "standard"})
            assert started.status_code == 201, started.text
            cid = started.json()["id"]
            assert http.post(f"/conversations/{cid}/messages", json={"text": text}).status_code == 201
    a = new_page(viewport=DESKTOP, base_url=site.url)
    log_in(a, ann, "/requests")
    expect(a.locator(".request")).to_have_count(2)
    from_carl = a.locator(".request", has_text=carl)
    from_carl.get_by_role("button", name="Report").click()
    report = from_carl.get_by_role("form", name="Report this request")
    report.get_by_label("Category").select_option("spam")
    report.get_by_role("button", name="Send report").click()
    expect(report.get_by_role("status")).to_contain_text(re.compile(r"Reported 1 message \(case \d+\)"))
    no_axe_findings(a)
    from_carl.get_by_role("button", name="Block").click()
    expect(a.locator(".request")).to_have_count(1)
    with api_as(site, ann) as http:
        assert [b["username"] for b in http.get("/blocks").json()["items"]] == [carl]
    # Reading a request first, then deleting it from its own view: the sender is not told.
    a.locator(".request", has_text=dora).get_by_role("link", name="Read").click()
    expect(bubbles(a, "hi, we met at the conference")).to_have_count(1)
    expect(a.get_by_label("Message", exact=True)).to_be_disabled()
    expect(a.locator(".composer-note")).to_have_text("This is a message request: accept it to answer.")
    a.get_by_role("region", name="Message request").get_by_role("button", name="Delete").click()
    expect(a).to_have_url(re.compile("/requests$"))
    expect(a.get_by_text("No message requests.")).to_be_visible()
    assert page_problems(a) == []


def tab_to(page: Page, target: Locator, limit: int = 80) -> None:
    """Press Tab until `target` (a Locator) has the focus, as a keyboard-only member would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("(el) => el === document.activeElement"):
            assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") != "none", (
                "the focus is not visible"
            )
            return
    raise AssertionError(f"{target} cannot be reached with Tab")


def test_keyboard_only(site: Site, new_page: NewPage) -> None:
    ann, ben = register(site, "ann"), register(site, "ben")
    cid = conversation_between(site, ann, ben)
    a = new_page(viewport=DESKTOP, base_url=site.url)
    a.goto("/login")
    tab_to(a, a.get_by_label("Username"))
    a.keyboard.type(ann)
    a.keyboard.press("Tab")
    a.keyboard.type(PASSWORD)
    a.keyboard.press("Enter")
    expect(a.get_by_role("heading", name="Chats", level=1)).to_be_visible()
    tab_to(a, a.locator(".conv-item", has_text=ben))
    a.keyboard.press("Enter")
    expect(a).to_have_url(re.compile(f"/c/{cid}$"))
    tab_to(a, a.get_by_label("Message", exact=True))
    a.keyboard.type("typed with the keyboard only")
    a.keyboard.press("Enter")
    expect(delivered(a, "typed with the keyboard only")).to_have_count(1)
    a.keyboard.press("Shift+Tab")  # back up to the banner's toggle from the page's top
    tab_to(a, a.get_by_role("button", name="What Keyhold can and cannot see"))
    a.keyboard.press("Enter")
    expect(a.locator(".explain")).to_be_visible()
    tab_to(a, a.get_by_role("navigation", name="Main").get_by_role("link", name="Settings"))
    a.keyboard.press("Enter")
    expect(a.get_by_role("heading", name="Settings", level=1)).to_be_visible()
    assert page_problems(a) == []
