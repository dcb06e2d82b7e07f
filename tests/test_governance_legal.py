"""Legal cases against a real server (staff made as `keyhold staff add` makes them).

The rules in code: content needs a search warrant (or MLAT) of the data's region; a request
from outside the region needs an MLAT; four eyes; emergencies are limited, need a second
approver and expire; preservation freezes deletion and shredding of the targets' data until
released, extendable once; disclosure packages hold only in-scope data and are signed; an
access under a non-disclosure order stays hidden from the member until the order expires.

Time: the last part runs a dedicated server that is restarted with its clock moved 31 days
ahead (a `sitecustomize` shim on PYTHONPATH shifts `time.time`/`time.time_ns` in the server
process only). Nothing in the database is edited: the non-disclosure order and the cases
expire by themselves, the way they would in production.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clock_shift import shifted_env
from conftest import PASSWORD, TLS, Server, keyhold_cli, new_member, start_server, stop_server
from keyhold.sdk import Client, KeyholdError, LegalRequest, StaffClient
from keyhold.sdk.verify import verify_tree_head
from staff_helpers import add_all_staff, cli_env, login_all

API = "/api/v1"
JUSTIFICATION = (
    "Caller reports the target threatened to kill a named person tonight; police need the account holder."
)
DAY = 24 * 3600


# -- helpers --------------------------------------------------------------------------------------


def day(offset_days: int = 0, shift_s: float = 0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(days=offset_days, seconds=shift_s)
    return moment.date().isoformat()


async def refused(awaitable: Any, status: int, *needles: str) -> dict[str, Any]:
    with pytest.raises(KeyholdError) as caught:
        await awaitable
    assert caught.value.status == status, caught.value.problem
    detail = str(caught.value.problem.get("detail", ""))
    for needle in needles:
        assert needle in detail, detail
    return caught.value.problem


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


async def sth(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(verify=TLS, base_url=server.url + API, timeout=30) as http:
        head = (await http.get("/transparency/sth")).json()
    assert verify_tree_head(head)
    return dict(head)


async def conversation(a: Client, b: Client, lines: list[tuple[Client, str]]) -> tuple[int, list[int]]:
    conv = await a.start_conversation([b.username])
    return conv.id, [(await sender.send(conv.id, text)).id for sender, text in lines]


@dataclass
class Legal:
    """Legal staff of one region and a helper to file requests."""

    first: StaffClient
    second: StaffClient

    async def file(
        self,
        process: str,
        targets: list[str],
        categories: list[str],
        country: str = "US",
        date_from: str | None = None,
        date_to: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        return await self.first.create_legal_case(
            LegalRequest(
                agency="Federal Bureau of Investigation",
                officer="Special Agent Dana Scully",
                contact="dscully@fbi.example",
                country=country,
                process=process,
                targets=targets,
                date_from=date_from or day(-1),
                date_to=date_to or day(1),
                categories=categories,
                document=f"%PDF-1.4 {process} for {targets}".encode(),
                **extra,
            )
        )

    async def approved(self, process: str, targets: list[str], categories: list[str], **extra: Any) -> int:
        case = await self.file(process, targets, categories, **extra)
        assert case["status"] == "pending", case
        approved = await self.second.approve(case["id"])
        assert approved["status"] == "approved" and approved["approved_by"] == self.second.id
        return int(case["id"])


STAFF = {
    "legal_a": ("legal", "us"),
    "legal_b": ("legal", "us"),
    "legal_eu": ("legal", "eu"),
    "mod_a": ("moderator", "us"),
    "audit": ("auditor", "us"),
}


@dataclass
class World:
    server: Server
    staff: dict[str, StaffClient]
    legal: Legal = field(init=False)

    def __post_init__(self) -> None:
        self.legal = Legal(self.staff["legal_a"], self.staff["legal_b"])

    async def log_size(self) -> int:
        return len(await self.staff["audit"].all_log_entries())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def legal_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, dict[str, str]]]:
    server = start_server(tmp_path_factory.mktemp("gov-legal") / "kh", request.param)
    try:
        yield server, add_all_staff(server, STAFF)
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
async def world(legal_server: tuple[Server, dict[str, str]]) -> AsyncIterator[World]:
    server, secrets = legal_server
    staff = await login_all(server, secrets)
    yield World(server, staff)
    for client in staff.values():
        await client.close()


# -- the rules ------------------------------------------------------------------------------------


async def test_content_under_a_subpoena_is_refused(world: World) -> None:
    a, b = await new_member(world.server), await new_member(world.server)
    _conv, ids = await conversation(a, b, [(b, "hello"), (a, "hi")])
    case = await world.legal.file("subpoena", [b.username], ["message_content"])
    assert case["status"] == "refused"
    assert "message_content needs a search_warrant" in case["details"]["ruling"]
    assert case["decision"]["refused"] == case["details"]["ruling"]
    await refused(world.legal.second.approve(case["id"]), 409, "refused")
    await refused(world.legal.first.read(case["id"], ids, "try anyway"), 403, "refused")

    # A subpoena does obtain subscriber info, approved; content is still refused under it.
    size = await world.log_size()
    case_id = await world.legal.approved("subpoena", [b.username], ["subscriber_info"])
    await refused(world.legal.first.read(case_id, ids, "content"), 403, "does not grant message_content")
    await refused(
        world.legal.second.read(case_id, [ids[0]], "content"), 403, "does not grant message_content"
    )
    package = await world.legal.second.disclosure(case_id)
    assert set(package["data"]) == {"subscriber_info"}
    assert [s["username"] for s in package["data"]["subscriber_info"]] == [b.username]
    types = [orjson.loads(e["entry"])["type"] for e in (await world.staff["audit"].all_log_entries())[size:]]
    assert "content_accessed" not in types and "disclosure_produced" in types
    # Strength: metadata needs a court order; a court order does not reach content either.
    assert (await world.legal.file("subpoena", [b.username], ["conversation_metadata"]))[
        "status"
    ] == "refused"
    assert (await world.legal.file("court_order", [b.username], ["conversation_metadata"]))[
        "status"
    ] == "pending"
    court = await world.legal.file("court_order", [b.username], ["message_content"])
    assert court["status"] == "refused" and "search_warrant" in court["details"]["ruling"]
    await a.close()
    await b.close()


async def test_a_warrant_from_outside_the_region_is_refused_unless_mlat(world: World) -> None:
    a, b = await new_member(world.server), await new_member(world.server)
    _conv, ids = await conversation(a, b, [(b, "bonjour"), (a, "salut")])
    foreign = await world.legal.file("search_warrant", [b.username], ["message_content"], country="FR")
    assert foreign["status"] == "refused" and "MLAT" in foreign["details"]["ruling"]
    await refused(world.legal.first.read(foreign["id"], ids, "foreign warrant"), 403, "refused")
    for country in ("DE", "BR", "CA"):
        assert (await world.legal.file("search_warrant", [b.username], ["message_content"], country=country))[
            "status"
        ] == "refused"
    # The same request through an MLAT is allowed (still four eyes).
    mlat = await world.legal.approved("mlat", [b.username], ["message_content"], country="FR")
    assert [m["text"] for m in await world.legal.first.read(mlat, ids, "MLAT request")] == [
        "bonjour",
        "salut",
    ]
    # Legal staff of another region: cannot file against this region's members, nor read its cases.
    eu = world.staff["legal_eu"]
    await refused(
        eu.create_legal_case(
            LegalRequest(
                agency="Police nationale",
                officer="Cmdt. Maigret",
                contact="maigret@police.example",
                country="FR",
                process="search_warrant",
                targets=[b.username],
                date_from=day(-1),
                date_to=day(1),
                categories=["message_content"],
                document=b"%PDF mandat",
            )
        ),
        403,
        "region",
    )
    await refused(eu.read(mlat, ids, "curious"), 403, "region")
    await refused(eu.legal_case(mlat), 404)
    await refused(eu.approve(mlat), 404)
    assert mlat not in {c["id"] for c in await eu.legal_cases()}
    # A member of another region is out of reach of this region's legal staff.
    carol = await new_member(world.server, region="eu")
    await refused(world.legal.file("search_warrant", [carol.username], ["message_content"]), 403, "region")
    for client in (a, b, carol):
        await client.close()


async def test_four_eyes_the_creator_cannot_approve(world: World) -> None:
    a, b = await new_member(world.server), await new_member(world.server)
    _conv, ids = await conversation(a, b, [(b, "one")])
    case = await world.legal.file("search_warrant", [b.username], ["message_content"])
    await refused(world.legal.first.approve(case["id"]), 403, "four eyes")
    assert (await world.legal.first.legal_case(case["id"]))["status"] == "pending"
    await refused(world.legal.first.read(case["id"], ids, "before approval"), 403, "pending")
    await refused(world.legal.second.disclosure(case["id"]), 409)
    # Other roles neither file, approve nor read legal cases.
    moderator = world.staff["mod_a"]
    await refused(moderator.approve(case["id"]), 403, "legal staff")
    await refused(moderator.read(case["id"], ids, "not my job"), 403, "legal staff")
    await refused(world.staff["audit"].legal_cases(), 403)
    # Refusal carries a reason.
    await refused(world.legal.second.refuse(case["id"], "   "), 422, "reason")
    done = await world.legal.second.refuse(case["id"], "the warrant is unsigned")
    assert done["status"] == "refused" and done["decision"]["refused"] == "the warrant is unsigned"
    await refused(world.legal.second.approve(case["id"]), 409)
    await a.close()
    await b.close()


async def test_emergency_needs_a_second_approver_and_no_content(world: World) -> None:
    a, b = await new_member(world.server), await new_member(world.server)
    _conv, ids = await conversation(a, b, [(b, "help")])
    content = await world.legal.file(
        "emergency", [b.username], ["message_content"], justification=JUSTIFICATION
    )
    assert content["status"] == "refused" and "message_content" in content["details"]["ruling"]
    short = await world.legal.file("emergency", [b.username], ["subscriber_info"], justification="urgent")
    assert short["status"] == "refused" and "justification" in short["details"]["ruling"]

    pending = await world.legal.file(
        "emergency", [b.username], ["subscriber_info", "connection_logs"], justification=JUSTIFICATION
    )
    assert pending["status"] == "pending"
    size = await world.log_size()
    await refused(world.legal.first.read(pending["id"], ids, "emergency"), 403, "pending")
    await refused(world.legal.first.disclosure(pending["id"]), 409)
    await refused(world.legal.second.disclosure(pending["id"]), 409)
    await refused(world.legal.first.approve(pending["id"]), 403, "four eyes")
    types = [orjson.loads(e["entry"])["type"] for e in (await world.staff["audit"].all_log_entries())[size:]]
    assert "disclosure_produced" not in types and "content_accessed" not in types

    approved = await world.legal.second.approve(pending["id"])
    expires = dt.datetime.fromisoformat(approved["expires_at"].replace("Z", "+00:00"))
    hours = (expires - dt.datetime.now(dt.UTC)).total_seconds() / 3600
    assert 71.5 < hours <= 72.01, approved["expires_at"]  # time-boxed
    package = await world.legal.first.disclosure(pending["id"])
    assert set(package["data"]) == {"subscriber_info", "connection_logs"}
    await refused(
        world.legal.first.read(pending["id"], ids, "content"), 403, "does not grant message_content"
    )
    await a.close()
    await b.close()


# -- preservation ---------------------------------------------------------------------------------


def blob_path(server: Server, attachment_id: str) -> Path:
    return server.home / "blobs" / attachment_id[-2:] / attachment_id


def shred(server: Server, conversation_id: int) -> tuple[int, str]:
    done = keyhold_cli(
        "keys",
        "shred",
        "--conversation",
        str(conversation_id),
        "--yes",
        "--home",
        str(server.home),
        check=False,
        env=cli_env(server),
    )
    return done.returncode, done.stdout + done.stderr


async def test_preservation_freezes_deletion_and_shredding_until_released(world: World) -> None:
    a, b = await new_member(world.server), await new_member(world.server)
    lines = [(b, "b deletes this"), (b, "b keeps this"), (a, "a writes this"), (b, "b's last words")]
    conv, ids = await conversation(a, b, lines)
    refused_preservation = await world.legal.file("preservation", [b.username], ["message_content"])
    assert (
        refused_preservation["status"] == "refused"
        and "discloses nothing" in refused_preservation["details"]["ruling"]
    )
    hold = await world.legal.file("preservation", [b.username], [])
    await refused(world.legal.first.approve(hold["id"]), 403, "four eyes")
    held = await world.legal.second.approve(hold["id"])
    assert held["status"] == "approved"
    first_expiry = dt.datetime.fromisoformat(held["expires_at"].replace("Z", "+00:00"))
    assert 89.9 < (first_expiry - dt.datetime.now(dt.UTC)).total_seconds() / DAY <= 90.01
    await refused(world.legal.first.disclosure(hold["id"]), 409)  # preservation discloses nothing
    await refused(world.legal.first.read(hold["id"], ids, "peek"), 403, "does not grant message_content")
    warrant = await world.legal.approved("search_warrant", [b.username], ["message_content"])

    # b deletes a message: gone for members, still there for an approved warrant.
    await b.delete_message(ids[0])
    assert {m.id: m for m in await a.history(conv)}[ids[0]].deleted
    [kept] = await world.legal.first.read(warrant, [ids[0]], "preserved message")
    assert kept["text"] == "b deletes this" and kept["deleted"] is True

    # b deletes the account: everything b sent is hidden, and preserved.
    await b.delete_account(PASSWORD)
    read = await world.legal.first.read(warrant, ids, "after account deletion")
    assert [m["text"] for m in read] == [text for _, text in lines]
    assert [m["deleted"] for m in read] == [True, True, False, True]
    assert [m.text for m in await a.history(conv)] == [None, None, "a writes this", None]

    # Extended once by 90 days, not twice.
    extended = await world.legal.second.extend(hold["id"])
    second_expiry = dt.datetime.fromisoformat(extended["expires_at"].replace("Z", "+00:00"))
    assert abs((second_expiry - first_expiry).total_seconds() - 90 * DAY) < 5
    await refused(world.legal.second.extend(hold["id"]), 409, "once")

    # Released: what the hold kept is destroyed now; shredding works again.
    released = await world.legal.first.release(hold["id"])
    assert released["status"] == "closed"
    await refused(world.legal.first.release(hold["id"]), 409)
    await refused(world.legal.first.extend(hold["id"]), 409)
    read = await world.legal.first.read(warrant, ids, "after release")
    assert [m["text"] for m in read] == [None, None, "a writes this", None]
    await a.close()


async def test_release_destroys_everything_the_hold_kept(world: World) -> None:
    """The hold on target b also kept what b's conversation partner a deleted, and b's deleted
    attachment: once released, those must be destroyed as well."""
    a, b = await new_member(world.server), await new_member(world.server)
    conv, ids = await conversation(a, b, [(a, "a deletes this"), (b, "b answers")])
    hold = await world.legal.approved("preservation", [b.username], [])
    warrant = await world.legal.approved("search_warrant", [b.username], ["message_content"])
    await a.delete_message(ids[0])
    [kept] = await world.legal.first.read(warrant, [ids[0]], "held")
    assert kept["text"] == "a deletes this"  # kept: it is in a conversation of the target
    sent = await b.send_file(conv, b"%PDF evidence", "evidence.pdf", "application/pdf", text="see file")
    assert sent.attachment is not None
    await b.delete_message(sent.id)
    assert blob_path(world.server, sent.attachment.id).exists()  # kept under the hold

    await world.legal.first.release(hold)
    [after] = await world.legal.first.read(warrant, [ids[0]], "released")
    problems = []
    if after["text"] is not None:
        problems.append(f"a's deleted message {ids[0]} is still readable after the release")
    if blob_path(world.server, sent.attachment.id).exists():
        problems.append(f"b's deleted attachment {sent.attachment.id} is still stored after the release")
    assert not problems, problems
    await a.close()
    await b.close()


# -- disclosure packages --------------------------------------------------------------------------


def check_package(package: dict[str, Any], public_key_hex: str) -> None:
    """Signature over the sha256 of the canonical {manifest, data}, with the log's key."""
    signature = package["signature"]
    digest = hashlib.sha256(canonical({"manifest": package["manifest"], "data": package["data"]})).hexdigest()
    assert digest == signature["sha256"]
    assert signature["public_key"] == public_key_hex and signature["algorithm"] == "Ed25519"
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex)).verify(
        bytes.fromhex(signature["value"]), bytes.fromhex(digest)
    )
    manifest = package["manifest"]
    assert set(manifest["sections"]) == set(package["data"]) == set(manifest["counts"])
    for name, section in package["data"].items():
        assert manifest["sections"][name] == hashlib.sha256(canonical(section)).hexdigest()
        if isinstance(section, list):
            assert manifest["counts"][name] == len(section)


async def test_disclosure_package_is_signed_and_holds_only_in_scope_data(world: World) -> None:
    a, b, c = [await new_member(world.server) for _ in range(3)]
    ab, ab_ids = await conversation(a, b, [(a, "ab 1"), (b, "ab 2"), (b, "ab 3")])
    ac, ac_ids = await conversation(a, c, [(a, "ac 1"), (c, "ac 2")])  # not the target's
    case_id = await world.legal.approved(
        "search_warrant",
        [b.username],
        ["subscriber_info", "connection_logs", "conversation_metadata", "message_content"],
        date_from=day(0),
        date_to=day(0),
    )
    before = await world.log_size()
    package = await world.legal.first.disclosure(case_id)
    head = await sth(world.server)
    check_package(package, head["public_key"])

    data, manifest = package["data"], package["manifest"]
    assert manifest["case"] == case_id and manifest["process"] == "search_warrant"
    assert (
        manifest["document_sha256"]
        == hashlib.sha256(b"%PDF-1.4 search_warrant for ['" + b.username.encode() + b"']").hexdigest()
    )
    assert [m["id"] for m in data["message_content"]] == ab_ids
    assert [m["text"] for m in data["message_content"]] == ["ab 1", "ab 2", "ab 3"]
    assert [c_["id"] for c_ in data["conversation_metadata"]["conversations"]] == [ab]
    assert [m["id"] for m in data["conversation_metadata"]["messages"]] == ab_ids
    assert [s["username"] for s in data["subscriber_info"]] == [b.username]
    assert len(data["connection_logs"]) == 1 and len({r["user_id"] for r in data["connection_logs"]}) == 1
    text = orjson.dumps(package).decode()
    for foreign in ac_ids:
        assert str(foreign) not in text
    assert "ac 1" not in text and "ac 2" not in text
    assert a.username in text  # as b's conversation partner, in the metadata
    assert c.username not in text and ac != ab

    # The package is logged: one content access (the messages) and its hash.
    new = [orjson.loads(e["entry"]) for e in (await world.staff["audit"].all_log_entries())[before:]]
    accessed = [e for e in new if e["type"] == "content_accessed"]
    produced = [e for e in new if e["type"] == "disclosure_produced"]
    assert len(accessed) == 1 and accessed[0]["details"]["messages"] == len(ab_ids)
    [seen] = [i for i in await a.access_events() if i["index"] == accessed[0]["idx"]]
    assert seen["messages"] == ab_ids  # the partner's view: only their conversation's messages
    assert [p["details"]["package_sha256"] for p in produced] == [package["signature"]["sha256"]]

    # A date range with none of the target's messages: no content, no message metadata.
    earlier = await world.legal.approved(
        "search_warrant",
        [b.username],
        ["conversation_metadata", "message_content"],
        date_from=day(-9),
        date_to=day(-2),
    )
    empty = await world.legal.first.disclosure(earlier)
    check_package(empty, head["public_key"])
    assert empty["data"]["message_content"] == []
    assert empty["data"]["conversation_metadata"]["messages"] == []
    # Tampering with the package breaks the signature check.
    tampered = {**package, "data": {**data, "message_content": data["message_content"][:1]}}
    with pytest.raises(AssertionError):
        check_package(tampered, head["public_key"])
    for client in (a, b, c):
        await client.close()


def legal_export(server: Server, case_id: int, out: Path, acting: str = "legal_a") -> tuple[int, str]:
    done = keyhold_cli(
        "legal", "export", str(case_id), "--out", str(out), "--as", acting, "--home", str(server.home),
        check=False, env=cli_env(server),
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


async def test_cli_export_beside_the_running_server_keeps_its_log_whole(world: World, tmp_path: Path) -> None:
    """`keyhold legal export` next to a running server either refuses (the data dir is in use)
    or writes a verifiable package; either way the server's access log stays whole: it keeps
    appending and `keyhold audit verify` passes. (The export of a stopped data dir is checked
    with the dedicated server below.)"""
    a, b = await new_member(world.server), await new_member(world.server)
    _conv, ids = await conversation(a, b, [(b, "exported")])
    case_id = await world.legal.approved("search_warrant", [b.username], ["message_content"])
    out = tmp_path / "package.json"
    code, output = legal_export(world.server, case_id, out)
    if code != 0:
        assert "in use" in output, output
        assert not out.exists()
    else:
        package = orjson.loads(out.read_bytes())
        check_package(package, (await sth(world.server))["public_key"])
        assert [m["text"] for m in package["data"]["message_content"]] == ["exported"]
    read = await world.legal.first.read(case_id, ids, "after the CLI export")
    assert read[0]["text"] == "exported"
    entries = await world.staff["audit"].all_log_entries()
    assert [e["index"] for e in entries] == list(range(len(entries)))
    assert (await sth(world.server))["size"] == len(entries)
    audited = keyhold_cli(
        "audit", "verify", "--home", str(world.server.home), check=False, env=cli_env(world.server)
    )
    assert audited.returncode == 0, audited.stdout + audited.stderr
    await a.close()
    await b.close()


# -- time passes: a dedicated server restarted 31 days later ---------------------------------------

SHIFT_S = 31 * DAY
LATER_STAFF = {"legal_a": ("legal", "us"), "legal_b": ("legal", "us"), "audit": ("auditor", "us")}


@dataclass
class Later:
    """What was done and seen before the restart, and the restarted server."""

    home: Path
    shim: Path
    server: Server
    secrets: dict[str, str]
    staff: dict[str, StaffClient]
    a: Client
    b: Client
    conversation_id: int
    ids: list[int]
    ndo_case: int
    ndo_indexes: set[int]
    plain_case: int
    emergency_case: int
    hold_case: int
    seen_before: dict[str, Any]

    async def reconnect(self) -> None:
        for name, old in list(self.staff.items()):
            await old.close()
            self.staff[name] = StaffClient(
                self.server.url, old.token, old.username, old.role, old.region, old.id
            )
        for attr in ("a", "b"):
            member: Client = getattr(self, attr)
            await member.close()
            setattr(self, attr, Client(self.server.url, member.username, member.token))

    async def close(self) -> None:
        for client in self.staff.values():
            await client.close()
        await self.a.close()
        await self.b.close()
        stop_server(self.server)


async def stored_events(client: Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with await client.connect(0) as stream:
        await asyncio.wait_for(stream.ready.wait(), 10)
        while True:
            try:
                out.append((await stream.next_event(0.1)).data)
            except TimeoutError:
                return out


@pytest.fixture(scope="module")
async def later(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Later]:
    root = tmp_path_factory.mktemp("gov-later")
    shim = root / "shim"
    shim.mkdir()
    home = root / "kh"
    server = start_server(home)
    secrets = add_all_staff(server, LATER_STAFF)
    staff = await login_all(server, secrets)
    legal = Legal(staff["legal_a"], staff["legal_b"])
    a, b = await new_member(server), await new_member(server)
    conv, ids = await conversation(a, b, [(b, "one"), (a, "two"), (b, "three")])
    seen: dict[str, Any] = {}
    try:
        # A warrant under a non-disclosure order until tomorrow, and a content read under it.
        ndo_case = await legal.approved(
            "search_warrant", [b.username], ["message_content"], nondisclosure_until=day(1)
        )
        size = len(await staff["audit"].all_log_entries())
        await legal.first.read(ndo_case, ids[:2], "under a non-disclosure order")
        new = [orjson.loads(e["entry"]) for e in (await staff["audit"].all_log_entries())[size:]]
        seen["ndo_types"] = [e["type"] for e in new]
        ndo_indexes = {e["idx"] for e in new if e["type"] == "content_accessed"}
        seen["b_view"] = await b.access_events()
        seen["a_view"] = await a.access_events()
        seen["b_events"] = await stored_events(b)
        # A plain warrant (no order): its access is visible at once.
        plain_case = await legal.approved("search_warrant", [b.username], ["message_content"])
        await legal.first.read(plain_case, ids[2:], "no order")
        seen["b_view_after_plain"] = await b.access_events()
        # An emergency request, approved (72 hours).
        emergency = await legal.file(
            "emergency", [b.username], ["subscriber_info"], justification=JUSTIFICATION
        )
        await legal.second.approve(emergency["id"])
        seen["emergency_package"] = await legal.first.disclosure(emergency["id"])
        # A preservation hold on b (90 days: it outlives the month that passes).
        hold_case = await legal.approved("preservation", [b.username], [])
    finally:
        for staff_client in staff.values():
            await staff_client.close()
        await a.close()
        await b.close()
        stop_server(server)

    # While the server is stopped: shredding b's conversation is refused (held), and a
    # disclosure package is exported from the command line.
    seen["shred_held"] = shred(server, conv)
    seen["export"] = legal_export(server, plain_case, root / "package.json")
    seen["export_package"] = (
        orjson.loads((root / "package.json").read_bytes()) if seen["export"][0] == 0 else None
    )

    # 31 days later: the order has expired, so have the cases (30 days; emergency 72 hours),
    # and so have the members' 30-day tokens.
    server = start_server(home, env=shifted_env(shim, SHIFT_S))
    state = Later(
        home, shim, server, secrets, {}, a, b, conv, ids, ndo_case, ndo_indexes, plain_case,
        emergency["id"], hold_case, seen,
    )  # fmt: skip
    try:
        state.staff = await login_all(server, secrets, SHIFT_S)
        state.a = await Client.login(server.url, a.username, PASSWORD)
        state.b = await Client.login(server.url, b.username, PASSWORD)
        yield state
    finally:
        await state.close()


async def test_an_access_under_a_nondisclosure_order_appears_when_it_expires(later: Later) -> None:
    seen = later.seen_before
    # Before: the access is logged (with its notification deferred) but hidden from the members
    # and no `access.visible` event was sent.
    assert seen["ndo_types"] == ["content_accessed", "notification_deferred"]
    assert len(later.ndo_indexes) == 1
    assert seen["b_view"] == [] and seen["a_view"] == []
    assert not [e for e in seen["b_events"] if e["type"] == "access.visible"]
    # The plain warrant's access showed at once, alone.
    assert [i["index"] for i in seen["b_view_after_plain"] if i["type"] == "content_accessed"] != []
    assert not later.ndo_indexes & {i["index"] for i in seen["b_view_after_plain"]}

    # After: the server announces it by itself (checked every 5 s) and the members see it.
    [ndo_index] = later.ndo_indexes
    deadline = time.monotonic() + 15
    announced: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not announced:
        announced = [
            e
            for e in await stored_events(later.b)
            if e["type"] == "access.visible" and e["index"] == ndo_index
        ]
        if not announced:
            await asyncio.sleep(0.5)
    assert len(announced) == 1, "no access.visible event after the order expired"
    for member in (later.a, later.b):
        view = await member.access_events()  # every proof verifies
        [item] = [i for i in view if i["index"] == ndo_index]
        assert item["type"] == "content_accessed" and item["messages"] == later.ids[:2]
        assert item["case"] == {"id": later.ndo_case, "kind": "legal"}


async def test_an_expired_case_reads_nothing(later: Later) -> None:
    legal = later.staff["legal_a"]
    size = len(await later.staff["audit"].all_log_entries())
    for case_id in (later.plain_case, later.ndo_case):
        assert (await legal.legal_case(case_id))["status"] == "approved"
        await refused(legal.read(case_id, later.ids, "a month later"), 403, "expired")
        await refused(legal.disclosure(case_id), 403, "expired")
    assert len(await later.staff["audit"].all_log_entries()) == size


async def test_an_expired_emergency_case_discloses_nothing(later: Later) -> None:
    assert later.seen_before["emergency_package"]["data"]["subscriber_info"]  # worked while live
    legal = later.staff["legal_a"]
    size = len(await later.staff["audit"].all_log_entries())
    problem = await refused(legal.disclosure(later.emergency_case), 403, "expired")
    assert problem
    assert len(await later.staff["audit"].all_log_entries()) == size


async def test_a_disclosure_holds_only_the_date_range(later: Later) -> None:
    """Messages from before the restart are a month old now: a warrant for today holds only
    today's (shifted) messages."""
    conv = await later.a.start_conversation([later.b.username])
    fresh = [(await later.b.send(conv.id, f"a month later {i}")).id for i in range(2)]
    legal = Legal(later.staff["legal_a"], later.staff["legal_b"])
    today = day(0, SHIFT_S)
    case_id = await legal.approved(
        "search_warrant", [later.b.username], ["message_content"], date_from=today, date_to=today
    )
    package = await legal.first.disclosure(case_id)
    check_package(package, (await sth(later.server))["public_key"])
    assert [m["id"] for m in package["data"]["message_content"]] == fresh
    await refused(legal.first.read(case_id, later.ids[:1], "old message"), 403, "outside the scope")


async def test_shredding_is_refused_while_a_preservation_hold_runs(later: Later) -> None:
    code, output = later.seen_before["shred_held"]
    assert code != 0 and "preservation hold" in output, output
    # The content is intact a month later: a new warrant over both dates reads it.
    legal = Legal(later.staff["legal_a"], later.staff["legal_b"])
    case_id = await legal.approved(
        "search_warrant", [later.b.username], ["message_content"], date_from=day(-1), date_to=day(1, SHIFT_S)
    )
    read = await legal.first.read(case_id, later.ids, "preserved content")
    assert [m["text"] for m in read] == ["one", "two", "three"]


async def test_an_export_made_while_the_server_was_stopped_is_signed_and_logged(later: Later) -> None:
    code, output = later.seen_before["export"]
    assert code == 0, output
    package = later.seen_before["export_package"]
    check_package(package, (await sth(later.server))["public_key"])
    assert [m["id"] for m in package["data"]["message_content"]] == later.ids
    assert [m["text"] for m in package["data"]["message_content"]] == ["one", "two", "three"]
    # The restarted server took the command's entries into its tree and keeps appending.
    entries = [orjson.loads(e["entry"]) for e in await later.staff["audit"].all_log_entries()]
    produced = [e for e in entries if e["type"] == "disclosure_produced"]
    assert package["signature"]["sha256"] in {e["details"]["package_sha256"] for e in produced}
    assert [e["idx"] for e in entries] == list(range(len(entries)))
    audited = keyhold_cli(
        "audit", "verify", "--home", str(later.home), check=False, env=cli_env(later.server)
    )
    assert audited.returncode == 0, audited.stdout + audited.stderr


async def test_shredding_works_once_the_hold_is_released(later: Later) -> None:
    """(Restarts the dedicated server: keep it last.)"""
    legal = Legal(later.staff["legal_a"], later.staff["legal_b"])
    case_id = await legal.approved(
        "search_warrant", [later.b.username], ["message_content"], date_from=day(-1), date_to=day(1, SHIFT_S)
    )
    released = await legal.first.release(later.hold_case)
    assert released["status"] == "closed"
    stop_server(later.server)
    code, output = shred(later.server, later.conversation_id)
    assert code == 0 and "shredded" in output, output
    later.server = start_server(later.home, env=shifted_env(later.shim, SHIFT_S))
    await later.reconnect()
    legal = Legal(later.staff["legal_a"], later.staff["legal_b"])
    await refused(legal.first.read(case_id, later.ids, "after shredding"), 403, "not readable")
    for message in await later.a.history(later.conversation_id):
        assert message.text is None


async def test_disappearing_messages_under_a_hold_vanish_for_members_and_stay_for_the_case(world: World) -> None:
    """A preservation hold keeps what disappears, invisibly: members see it disappear on time
    as without a hold; an approved warrant still reads it until the hold is released."""
    a, b = await new_member(world.server), await new_member(world.server)
    conv = (await a.start_conversation([b.username])).id
    hold = await world.legal.approved("preservation", [b.username], [])
    warrant = await world.legal.approved("search_warrant", [b.username], ["message_content"])
    await a.set_timer(conv, 1)
    sent = await b.send(conv, "b's fleeting words")
    deadline = time.monotonic() + 15
    while not {m.id: m for m in await a.history(conv)}[sent.id].deleted:
        assert time.monotonic() < deadline, "the message did not disappear"
        await asyncio.sleep(0.2)
    [kept] = await world.legal.first.read(warrant, [sent.id], "preserved disappearing message")
    assert kept["text"] == "b's fleeting words" and kept["deleted"] is True
    await world.legal.first.release(hold)
    [after] = await world.legal.first.read(warrant, [sent.id], "after release")
    assert after["text"] is None
    await a.close()
    await b.close()


async def test_a_disclosure_reaches_e2ee_metadata_and_no_e2ee_content(world: World) -> None:
    """An e2ee conversation in scope: the package holds its membership, devices, timestamps
    and sizes; its content is not in the package, for the service holds no key to it."""
    a, b = await new_member(world.server, e2ee=True), await new_member(world.server, e2ee=True)
    private = (await a.start_conversation([b.username], encryption="e2ee")).id
    sent = [await b.send(private, "private 1"), await a.send(private, "private 2")]
    plain, plain_ids = await conversation(a, b, [(b, "standard words")])
    case_id = await world.legal.approved(
        "search_warrant",
        [b.username],
        ["subscriber_info", "connection_logs", "conversation_metadata", "message_content"],
        date_from=day(0),
        date_to=day(0),
    )
    data = (await world.legal.first.disclosure(case_id))["data"]
    assert [m["id"] for m in data["message_content"]] == plain_ids  # e2ee messages: no content
    by_id = {c_["id"]: c_ for c_ in data["conversation_metadata"]["conversations"]}
    assert by_id[private]["encryption"] == "e2ee" and by_id[plain]["encryption"] == "standard"
    e2ee_rows = [m for m in data["conversation_metadata"]["messages"] if m["conversation_id"] == private]
    assert [m["id"] for m in e2ee_rows] == [m.id for m in sent]
    assert [m["sender_device"] for m in e2ee_rows] == [b.device_id, a.device_id]
    assert all(m["size"] > 0 for m in e2ee_rows)
    [subscriber] = data["subscriber_info"]
    assert [d["device_id"] for d in subscriber["devices"]] == [b.device_id]
    assert subscriber["devices"][0]["e2ee_keys"] is True
    assert {r["device_id"] for r in data["connection_logs"]} == {b.device_id}
    assert "private 1" not in orjson.dumps(data).decode()
    await a.close()
    await b.close()
