"""Every route of the API, tried by those who may not use it.

The routes are read from the app itself (`app_routes`, as test_text_types.py reads their
validators), so a route added later is tried too, or this module fails: each route is public
(named in `PUBLIC`, with what it shows), public with more for some staff (`STAFF_SEE_MORE`), a
member's, or staff's, by the dependency that says who it acts for. Against a real server, on
SQLite and PostgreSQL, with ids of real things (a conversation, a message, an attachment, a
device, a report case, a held message's case, a legal case):

- every member and staff route answers 401 problem+json to no credentials, a malformed bearer,
  a token never issued, a member's token after sign-out, a staff token after sign-out, and the
  token of the other kind (a member's on staff routes, staff's on member routes); a public
  route where staff see more answers 401 to a staff token never issued or signed out;
- every staff route answers 403 problem+json to each role that may not use it, and to the
  right role of another region 403 or 404 on a case (which the same role of the case's region
  is shown), or a list without the case;
- every member route and stream frame on a group's things answers 403 or 404 to a former
  member and to a member of another conversation;
- all of it at once, concurrently, and the database and blob store are exactly as before.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from app_routes import app_routes
from conftest import PASSWORD, Server, new_member
from db_snapshot import snapshot
from hostile_helpers import API, PROBLEM_JSON, http, login_token, open_stream
from keyhold.governance.roles import ROLES
from keyhold.sdk.staff import LegalRequest
from staff_helpers import signed_in, staff_server_fixture

# Routes anyone may call, and why that is safe: they show nothing of a member.
PUBLIC = {
    ("GET", "/health"),  # "ok" and whether storage answers
    ("POST", "/accounts"),  # registration
    ("POST", "/sessions"),  # sign-in (throttled)
    ("POST", "/staff/sessions"),  # staff sign-in: password and TOTP (throttled)
    ("GET", "/e2ee/transparency/sth"),  # the device-key log's signed head: hashes only
    ("GET", "/e2ee/transparency/consistency"),  # its proofs: hashes only
    ("GET", "/transparency/sth"),  # the access log's signed head: hashes only
    ("GET", "/transparency/key"),  # the key that signs it
    ("GET", "/transparency/proof/inclusion"),  # hashes only
    ("GET", "/transparency/proof/consistency"),  # hashes only
    ("GET", "/docs"),  # the API reference page
    ("GET", "/docs-init.js"),  # its script
}
MEMBER_DEPENDENCIES = {"current_member", "reading_member", "restricted_member"}
STAFF_DEPENDENCIES = {"current_staff"}
OPTIONAL_STAFF_DEPENDENCIES = {"optional_staff"}

# Who may use each staff route (governance.staff: SEE_REPORTS, TAKE_REPORTS, HANDLE_LEGAL, AUDIT).
# Every staff route is here or in ANY_STAFF; a role not named is refused with a 403.
SEE, TAKE, LEGAL, AUDIT = ("moderator", "admin"), ("moderator",), ("legal",), ("auditor", "admin")
ANY_STAFF = {("DELETE", "/staff/sessions/current"), ("GET", "/staff/me")}
STAFF_ROUTES: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/staff/reports"): SEE,
    ("GET", "/staff/reports/{case_id}"): SEE,
    ("POST", "/staff/reports/{case_id}/claim"): TAKE,
    ("GET", "/staff/reports/{case_id}/content"): TAKE,
    ("POST", "/staff/cases/{case_id}/read"): TAKE,  # of a report case; of a legal case: LEGAL (below)
    ("POST", "/staff/reports/{case_id}/decision"): TAKE,
    ("POST", "/staff/reports/{case_id}/appeal-decision"): TAKE,
    ("POST", "/staff/legal"): LEGAL,
    ("GET", "/staff/legal"): LEGAL,
    ("GET", "/staff/legal/{case_id}"): LEGAL,
    ("POST", "/staff/legal/{case_id}/approve"): LEGAL,
    ("POST", "/staff/legal/{case_id}/refuse"): LEGAL,
    ("POST", "/staff/legal/{case_id}/extend"): LEGAL,
    ("POST", "/staff/legal/{case_id}/release"): LEGAL,
    ("POST", "/staff/legal/{case_id}/disclosure"): LEGAL,
    ("GET", "/staff/held"): SEE,
    ("GET", "/staff/held/{case_id}"): SEE,
    ("POST", "/staff/held/{case_id}/release"): TAKE,
    ("POST", "/staff/held/{case_id}/refuse"): TAKE,
    ("GET", "/transparency/entries"): AUDIT,
}
# Public routes that show some staff more: the transparency report of a running period.
STAFF_SEE_MORE = {("GET", "/transparency/report"): AUDIT}
STAFF = {
    **{f"ev_{role}": (role, "us") for role in ROLES},
    **{f"ev_eu_{role}": (role, "eu") for role in ROLES},
    "ev_gone": ("moderator", "us"),  # signs in, then out: its token is revoked
}


# -- the routes, from the app -----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # relative to /api/v1, with its {parameters}
    dependencies: frozenset[str]
    fields: frozenset[str] = frozenset()  # what it is given: path and query parameters, body fields

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


def _dependency_names(dependant: Any) -> Iterator[str]:
    for sub in dependant.dependencies:
        yield sub.call.__name__
        yield from _dependency_names(sub)


def _field_names(dependant: Any) -> Iterator[str]:
    for param in dependant.path_params + dependant.query_params:
        yield param.name
    for param in dependant.body_params:
        annotation = param.field_info.annotation
        for model in (annotation, *get_args(annotation)):  # a model, or a model | None
            yield from getattr(model, "model_fields", {})


def api_routes(home: Path) -> list[Route]:
    """Every HTTP route under /api/v1 (the WebSocket's own tests are in test_revocation.py)."""
    found = []
    for prefix, route in app_routes(home):
        dependant = getattr(route, "dependant", None)
        path = prefix + getattr(route, "path", "")
        if dependant is None or not path.startswith(API) or not getattr(route, "methods", None):
            continue  # the WebSocket, the schema document, mounts
        for method in sorted(route.methods - {"HEAD"}):
            names, fields = frozenset(_dependency_names(dependant)), frozenset(_field_names(dependant))
            found.append(Route(method, path.removeprefix(API), names, fields))
    return found


def test_every_route_says_who_may_call_it(tmp_path: Path) -> None:
    """Public by name, public with more for some staff, or behind a member's or staff's token
    (one of them); every staff route in the table."""
    routes = api_routes(tmp_path / "home")
    assert len(routes) > 80, len(routes)  # a broken walk would find few or none
    for route in routes:
        guarded = bool(route.dependencies & (MEMBER_DEPENDENCIES | STAFF_DEPENDENCIES))
        sees_more = bool(route.dependencies & OPTIONAL_STAFF_DEPENDENCIES)
        kinds = [route.key in PUBLIC, guarded, sees_more]
        assert kinds.count(True) == 1, f"{route.key}: {sorted(route.dependencies)}"
    staff = {r.key for r in routes if r.dependencies & STAFF_DEPENDENCIES}
    assert staff == set(STAFF_ROUTES) | ANY_STAFF
    assert {r.key for r in routes if r.dependencies & OPTIONAL_STAFF_DEPENDENCIES} == set(STAFF_SEE_MORE)
    assert {r.key for r in routes} >= PUBLIC  # no stale names


# -- the world: real ids for every path parameter ---------------------------------------------


@dataclass
class World:
    server: Server
    ids: dict[str, str]
    tokens: dict[str, str]  # staff name -> live token
    revoked_member: str
    revoked_staff: str
    member: str
    message_id: int
    report_case: int
    held_case: int
    legal_case: int
    outsiders: dict[str, str]  # members with no part in the group: who -> token
    elsewhere: int  # the conversation of "a member of another conversation"


HOLD_WORD = "zebrafruit"  # made up, so that only this rule holds it
RULES = f'[[rule]]\nname = "every-route-hold"\ncategory = "spam"\naction = "hold"\nterms = ["{HOLD_WORD}"]\n'
served = staff_server_fixture("every_route", STAFF, {"safety-rules.toml": RULES})


@pytest.fixture(scope="module")
async def world(served: tuple[Server, dict[str, str]]) -> AsyncIterator[World]:
    server, totp_secrets = served
    async with signed_in(server, totp_secrets) as staff:
        alice, bob, carol, dave, erin = [await new_member(server) for _ in range(5)]
        chat = await alice.start_conversation([bob.username, carol.username], title="a group", kind="group")
        # A former member who was an admin, and whose message it is: what an admin or a sender
        # may do, only leaving the group refuses.
        await alice.set_role(chat.id, carol.username, "admin")
        said = await carol.send(chat.id, "a message to report")
        attachment = await alice.upload(chat.id, b"file contents", "notes.txt", "text/plain")
        await alice.send(chat.id, "a file", attachment_id=attachment.id)
        await carol.leave(chat.id)
        elsewhere = await dave.start_conversation([erin.username])  # a member of another conversation
        case = await alice.report(chat.id, [said.id], "harassment")
        held = await bob.send((await bob.start_conversation([alice.username])).id, f"a deal on {HOLD_WORD}")
        assert held.status == "pending_review", held
        held_case = await _held_case(server, staff["ev_moderator"].token, held.id)
        legal = await staff["ev_legal"].create_legal_case(_legal_request([bob.username]))
        revoked = await login_token(server, alice.username)
        async with http(server, revoked) as client:
            assert (await client.delete("/sessions/current")).status_code == 204
        revoked_staff = staff["ev_gone"].token
        await staff["ev_gone"].logout()
        ids = {
            "conversation_id": str(chat.id),
            "message_id": str(said.id),
            "attachment_id": attachment.id,
            "device_id": str(alice.device_id),
            "username": bob.username,
            "event_type": "m.room_key_request",
            "txn_id": uuid.uuid4().hex,
        }
        yield World(
            server, ids, {name: client.token for name, client in staff.items() if name != "ev_gone"},
            revoked, revoked_staff, alice.token, said.id, int(case["id"]), held_case, int(legal["id"]),
            {"a former member": carol.token, "a member of another conversation": dave.token},
            elsewhere.id,
        )  # fmt: skip
        for client in (alice, bob, carol, dave, erin):
            await client.close()


async def _held_case(server: Server, moderator: str, message_id: int) -> int:
    async with http(server, moderator) as client:
        page = (await client.get("/staff/held", params={"limit": 200})).json()
    [case] = [c["id"] for c in page["items"] if c["reported_messages"] == [message_id]]
    return int(case)


def _legal_request(targets: list[str]) -> LegalRequest:
    today = dt.date.today()
    return LegalRequest(
        agency="An agency", officer="An officer", contact="officer@agency.example", country="US",
        process="subpoena", targets=targets, date_from=str(today - dt.timedelta(days=1)),
        date_to=str(today + dt.timedelta(days=1)), categories=["subscriber_info"], document=b"%PDF-1.4 subpoena",
    )  # fmt: skip


def _target(world: World, route: Route, case_id: int | None = None) -> str:
    if case_id is None:
        kinds = {"/staff/legal/": world.legal_case, "/staff/held/": world.held_case}
        case_id = next((c for p, c in kinds.items() if route.path.startswith(p)), world.report_case)
    ids = {**world.ids, "case_id": str(case_id)}
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], route.path)


# What a staff route is sent: a body and a query it accepts, so that only the role can refuse it.
def _staff_request(world: World, route: Route) -> dict[str, Any]:
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/staff/cases/{case_id}/read"): {"message_ids": [world.message_id], "reason": "a review"},
        ("POST", "/staff/reports/{case_id}/decision"): {"action": "no_violation"},
        ("POST", "/staff/reports/{case_id}/appeal-decision"): {"uphold": True},
        ("POST", "/staff/legal/{case_id}/refuse"): {"reason": "not valid"},
        ("POST", "/staff/legal"): _legal_request([world.ids["username"]]).to_json(),
    }
    body = bodies.get(route.key)
    request: dict[str, Any] = {"json": body} if body is not None else {}
    if route.key == ("GET", "/staff/reports/{case_id}/content"):
        request["params"] = {"reason": "a review"}
    return request


# -- the checks -------------------------------------------------------------------------------


def _items(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    return list(body["items"] if isinstance(body, dict) else body)


def _refused(response: httpx.Response, statuses: tuple[int, ...], what: str) -> str | None:
    """None if `response` is a problem+json refusal with one of `statuses`, else what is wrong."""
    if response.status_code not in statuses:
        return f"{what}: {response.status_code} {response.text[:200]}"
    if not response.headers.get("content-type", "").startswith(PROBLEM_JSON):
        return f"{what}: {response.headers.get('content-type')}"
    problem = response.json()
    if problem.get("status") != response.status_code or not problem.get("detail"):
        return f"{what}: {problem}"
    if "Traceback" in response.text:
        return f"{what}: a traceback"
    return None


@dataclass(frozen=True)
class Attempt:
    method: str
    target: str
    authorization: str | None  # the whole header
    request: dict[str, Any]  # json=, params=, content=, headers=
    statuses: tuple[int, ...]  # the refusals expected
    what: str


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def _all_at_once(world: World, attempts: list[Attempt]) -> list[str]:
    """Send every attempt concurrently (24 at a time, each on a connection of its own); what
    was not refused as it should have been."""
    gate = asyncio.Semaphore(24)

    async def attempt(a: Attempt) -> str | None:
        request = dict(a.request)
        headers = {
            **request.pop("headers", {}),
            **({"Authorization": a.authorization} if a.authorization else {}),
        }
        async with gate, http(world.server) as client:
            response = await client.request(a.method, a.target, headers=headers, **request)
        return _refused(response, a.statuses, a.what)

    found = await asyncio.gather(*(attempt(a) for a in attempts))
    return [f for f in found if f is not None]


async def _all_refused_writing_nothing(world: World, attempts: list[Attempt]) -> None:
    before = await asyncio.to_thread(snapshot, world.server)
    wrong = await _all_at_once(world, attempts)
    assert not wrong, f"{len(wrong)} of {len(attempts)} not refused as they should be:\n" + "\n".join(wrong)
    assert await asyncio.to_thread(snapshot, world.server) == before, "a refused request wrote something"
    assert "Traceback" not in world.server.log()


async def test_every_guarded_route_refuses_outsiders_and_revoked_tokens(world: World, tmp_path: Path) -> None:
    outsiders = {
        "no credentials": None,
        "a Basic header": "Basic dXNlcjpwYXNz",
        "a malformed bearer": "Bearer !!not a token!!",
        "a member's token after sign-out": bearer(world.revoked_member),
        "a staff token after sign-out": bearer(world.revoked_staff),
    }
    attempts = []
    for route in api_routes(tmp_path / "home"):
        if route.key in STAFF_SEE_MORE:  # public, but a bad staff credential is not the public
            bad = {"a staff token never issued": "ks_" + secrets.token_urlsafe(32)}
            for who, token in {**bad, "a staff token after sign-out": world.revoked_staff}.items():
                what = f"{route.method} {route.path} with {who}"
                request = _see_more_request(route)
                attempts.append(Attempt(route.method, route.path, bearer(token), request, (401,), what))
            continue
        if route.key in PUBLIC:
            continue
        is_staff = bool(route.dependencies & STAFF_DEPENDENCIES)
        # A token never issued, shaped as this route's kind (`ks_` staff, `kh_` members), and
        # the live token of the other kind.
        never_issued = ("ks_" if is_staff else "kh_") + secrets.token_urlsafe(32)
        other_kind = world.member if is_staff else world.tokens["ev_admin"]
        request = _staff_request(world, route) if is_staff else {}
        tokens = {"a token never issued": bearer(never_issued), "the other kind's token": bearer(other_kind)}
        for who, authorization in {**outsiders, **tokens}.items():
            what = f"{route.method} {route.path} with {who}"
            attempts.append(
                Attempt(route.method, _target(world, route), authorization, request, (401,), what)
            )
    assert len(attempts) > 500, len(attempts)
    await _all_refused_writing_nothing(world, attempts)


def _see_more_request(route: Route) -> dict[str, Any]:
    """What shows more to staff: the transparency report of the running half-year."""
    assert route.key == ("GET", "/transparency/report"), route
    today = dt.date.today()
    return {"params": {"period": f"{today.year}-H{1 if today.month <= 6 else 2}"}}


async def test_every_staff_route_refuses_the_wrong_role_and_region(world: World) -> None:
    # The ids are real and the same role of their region is shown them: a 404 below is the
    # region's, not a wrong id's.
    moderator, legal = world.tokens["ev_moderator"], world.tokens["ev_legal"]
    async with http(world.server, moderator) as us_moderator, http(world.server, legal) as us_legal:
        for path in (f"/staff/reports/{world.report_case}", f"/staff/held/{world.held_case}"):
            assert (await us_moderator.get(path)).status_code == 200, path
        assert (await us_legal.get(f"/staff/legal/{world.legal_case}")).status_code == 200
    # A list is of the staff member's own region: another region's lists leave these cases out.
    lists = {
        "/staff/reports": ("moderator", "admin"),
        "/staff/held": ("moderator", "admin"),
        "/staff/legal": ("legal",),
    }
    ours = {world.report_case, world.held_case, world.legal_case}
    for path, roles in lists.items():
        for role in roles:
            async with (
                http(world.server, world.tokens[f"ev_eu_{role}"]) as eu,
                http(world.server, world.tokens[f"ev_{role}"]) as us,
            ):
                theirs, here = (
                    await eu.get(path, params={"limit": 200}),
                    await us.get(path, params={"limit": 200}),
                )
            assert theirs.status_code == here.status_code == 200, (path, role, theirs.text)
            assert not {c["id"] for c in _items(theirs)} & ours, (path, role)
            assert {c["id"] for c in _items(here)} & ours, (path, role)  # the control: shown in region
    attempts = []
    for (method, path), allowed in STAFF_ROUTES.items():
        route = Route(method, path, frozenset())
        targets = [(_target(world, route), allowed)]
        if path == "/staff/cases/{case_id}/read":
            targets.append((_target(world, route, world.legal_case), LEGAL))
        for target, may in targets:
            request = _staff_request(world, route)
            for role in ROLES:
                if role not in may:
                    token, statuses, who = world.tokens[f"ev_{role}"], (403,), role
                elif "{case_id}" in path:  # the right role, another region: not their case
                    token, statuses, who = world.tokens[f"ev_eu_{role}"], (403, 404), f"{role} of eu"
                else:  # a list: of their own region
                    continue
                attempts.append(
                    Attempt(method, target, bearer(token), request, statuses, f"{method} {target} as {who}")
                )
    for (method, path), may in STAFF_SEE_MORE.items():
        request = _see_more_request(Route(method, path, frozenset()))
        async with http(world.server, world.tokens["ev_auditor"]) as auditor:  # the control
            assert (await auditor.request(method, path, **request)).status_code == 200
        for role in set(ROLES) - set(may):
            token = world.tokens[f"ev_{role}"]
            attempts.append(
                Attempt(method, path, bearer(token), request, (403,), f"{method} {path} as {role}")
            )
    assert len(attempts) > 60, len(attempts)
    await _all_refused_writing_nothing(world, attempts)


# What a member route on the group's things is sent: what a member of it could send, so that
# only not being one refuses it. Every member route with such an id is here (checked below).
def _member_request(world: World) -> dict[tuple[str, str], dict[str, Any]]:
    cid, mid = int(world.ids["conversation_id"]), world.message_id
    file = {"content": b"a file", "headers": {"Keyhold-Filename": "x.txt", "Content-Type": "text/plain"}}
    return {
        ("GET", "/conversations/{conversation_id}"): {},
        ("PATCH", "/conversations/{conversation_id}"): {"json": {"title": "taken over"}},
        ("POST", "/conversations/{conversation_id}/members"): {"json": {"members": [world.ids["username"]]}},
        ("DELETE", "/conversations/{conversation_id}/members/me"): {},
        ("DELETE", "/conversations/{conversation_id}/members/{username}"): {},
        ("PUT", "/conversations/{conversation_id}/timer"): {"json": {"seconds": 60}},
        ("PUT", "/conversations/{conversation_id}/members/{username}/role"): {"json": {"role": "admin"}},
        ("GET", "/conversations/{conversation_id}/messages"): {},
        ("POST", "/conversations/{conversation_id}/messages"): {"json": {"text": "let me in"}},
        ("DELETE", "/messages/{message_id}"): {},
        ("POST", "/conversations/{conversation_id}/receipts"): {"json": {"type": "read", "message_id": mid}},
        ("POST", "/conversations/{conversation_id}/attachments"): file,
        ("GET", "/attachments/{attachment_id}"): {},
        ("POST", "/requests/{conversation_id}/accept"): {},
        ("DELETE", "/requests/{conversation_id}"): {},
        ("POST", "/requests/{conversation_id}/block"): {},
        ("PATCH", "/devices/{device_id}"): {"json": {"display_name": "mine now"}},
        ("DELETE", "/devices/{device_id}"): {"json": {"password": PASSWORD}},
        ("POST", "/reports"): {"json": {"conversation_id": cid, "message_ids": [mid], "category": "spam"}},
    }


THINGS = {"conversation_id", "message_id", "attachment_id", "device_id"}


async def test_every_route_on_a_groups_things_refuses_those_outside_it(world: World, tmp_path: Path) -> None:
    """A former member and a member of another conversation get 403 or 404 from every route
    that names the group, one of its messages or attachments, or a device of a member of it."""
    requests = _member_request(world)
    routes = api_routes(tmp_path / "home")
    named = {r.key for r in routes if r.dependencies & MEMBER_DEPENDENCIES and THINGS & r.fields}
    assert ("POST", "/reports") in named  # the walk sees body fields (conversation_id there)
    assert named == set(requests)
    attempts = [
        Attempt(method, _target(world, Route(method, path, frozenset())), bearer(token), request, (403, 404),
                f"{method} {path} by {who}")
        for (method, path), request in requests.items()
        for who, token in world.outsiders.items()
    ]  # fmt: skip
    await _all_refused_writing_nothing(world, attempts)


async def test_every_frame_on_a_groups_things_refuses_those_outside_it(world: World) -> None:
    """Over the stream: a send to the group and a receipt of its message, from a former member
    and a member of another conversation; and from the latter, its own conversation named with
    the group's attachment or message. Each gets an error frame with its ref (403 or 404), the
    socket stays open, and nothing is written; the same smuggling over REST is refused too."""
    cid, mid, attachment = int(world.ids["conversation_id"]), world.message_id, world.ids["attachment_id"]
    into_group = [
        {"type": "send", "conversation_id": cid, "text": "let me in"},
        {"type": "receipt", "conversation_id": cid, "receipt": "read", "message_id": mid},
    ]
    smuggled = [
        {"type": "send", "conversation_id": world.elsewhere, "text": "look", "attachment_id": attachment},
        {"type": "receipt", "conversation_id": world.elsewhere, "receipt": "read", "message_id": mid},
    ]
    dave = world.outsiders["a member of another conversation"]
    before = await asyncio.to_thread(snapshot, world.server)
    for who, token in world.outsiders.items():
        frames = into_group + (smuggled if token == dave else [])
        stream = await open_stream(world.server, token)
        try:
            for i, frame in enumerate(frames):
                await stream.send({**frame, "ref": f"r{i}"})
            errors = {}
            for _ in frames:
                error = await stream.next_frame("error")
                errors[error["ref"]] = error["problem"]["status"]
            assert sorted(errors) == sorted(f"r{i}" for i in range(len(frames))), (who, errors)
            assert set(errors.values()) <= {403, 404}, (who, errors)
            await stream.send({"type": "ping", "ref": "still-there"})
            assert (await stream.next_frame("pong"))["ref"] == "still-there"
        finally:
            await stream.close()
    async with http(world.server, dave) as client:
        sent = await client.post(
            f"/conversations/{world.elsewhere}/messages", json={"text": "look", "attachment_id": attachment}
        )
        marked = await client.post(
            f"/conversations/{world.elsewhere}/receipts", json={"type": "read", "message_id": mid}
        )
    for response in (sent, marked):
        assert response.status_code in (403, 404), response.text
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert await asyncio.to_thread(snapshot, world.server) == before, "a refused frame wrote something"
