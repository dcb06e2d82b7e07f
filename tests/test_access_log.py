"""The access log against a real server and on disk.

- every successful staff read appends exactly one `content_accessed` entry (counted through the
  auditor API), whose inclusion proof verifies against the current signed tree head (with the
  SDK's verifier); refused reads append nothing;
- a member sees the entries about their own data, with proofs, and no one else's;
- inclusion and consistency proofs verify between tree heads fetched at different times;
- `keyhold demo seed` then `keyhold audit verify` exits 0, and any stored byte of the log that
  is changed, removed or reordered makes it exit non-zero naming the entry.
(The RFC 9162 vectors are in tests/test_merkle.py.)
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import TLS, Server, keyhold_cli, new_member, raw
from keyhold.crypto.merkle import leaf_hash, verify_inclusion
from keyhold.governance.audit import verify_log
from keyhold.sdk import Client, KeyholdError, LegalRequest, StaffClient, VerificationError
from keyhold.sdk.verify import (
    verify_access_event,
    verify_consistency_between,
    verify_tree_head,
)
from keyhold.store.db import create_engine
from staff_helpers import signed_in, staff_server_fixture

API = "/api/v1"
STAFF = {
    "mod_a": ("moderator", "us"),
    "mod_b": ("moderator", "us"),
    "legal_a": ("legal", "us"),
    "legal_b": ("legal", "us"),
    "audit": ("auditor", "us"),
}


# -- helpers --------------------------------------------------------------------------------------


async def public(server: Server, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(verify=TLS, base_url=server.url + API, timeout=30) as http:
        return await http.get(path, params=params)


async def proven_included(server: Server, entry: dict[str, Any], head: dict[str, Any]) -> bool:
    """The server's inclusion proof for `entry` verifies against `head`."""
    got = (
        await public(server, "/transparency/proof/inclusion", index=entry["index"], size=head["size"])
    ).json()
    return verify_inclusion(
        leaf_hash(entry["entry"].encode()),
        entry["index"],
        head["size"],
        [bytes.fromhex(p) for p in got["proof"]],
        bytes.fromhex(head["root"]),
    )


async def sth(server: Server) -> dict[str, Any]:
    head = (await public(server, "/transparency/sth")).json()
    assert verify_tree_head(head), head
    return dict(head)


async def report(client: Client, conversation_id: int, message_ids: list[int]) -> int:
    return int((await client.report(conversation_id, message_ids, "spam"))["id"])


async def conversation_with(a: Client, b: Client, count: int, prefix: str) -> tuple[int, list[int]]:
    conv = await a.start_conversation([b.username])
    ids = []
    for i in range(count):
        ids.append((await (b if i % 2 == 0 else a).send(conv.id, f"{prefix} {i}")).id)
    return conv.id, ids


def parsed(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [orjson.loads(e["entry"]) for e in entries]


# -- fixtures -------------------------------------------------------------------------------------


@dataclass
class World:
    server: Server
    staff: dict[str, StaffClient]

    @property
    def auditor(self) -> StaffClient:
        return self.staff["audit"]

    def assignee(self, case: dict[str, Any]) -> StaffClient:
        return next(s for s in self.staff.values() if s.id == case["assigned_to"])

    async def entries(self) -> list[dict[str, Any]]:
        return await self.auditor.all_log_entries()

    async def accesses_since(self, before: int) -> list[dict[str, Any]]:
        return [e for e in parsed((await self.entries())[before:]) if e["type"] == "content_accessed"]


log_server = staff_server_fixture("access-log", STAFF)


@pytest.fixture(scope="module")
async def world(log_server: tuple[Server, dict[str, str]]) -> AsyncIterator[World]:
    server, secrets = log_server
    async with signed_in(server, secrets) as staff:
        yield World(server, staff)


async def warrant(world: World, targets: list[str], **extra: Any) -> int:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    case = await world.staff["legal_a"].create_legal_case(
        LegalRequest(
                agency="FBI",
            officer="Agent Smith",
            contact="smith@fbi.example",
            country="US",
            process="search_warrant",
            targets=targets,
            date_from=today,
            date_to=today,
            categories=["message_content"],
            document=b"%PDF-1.4 warrant",
            **extra,
        )
    )
    assert case["status"] == "pending", case
    return int((await world.staff["legal_b"].approve(case["id"]))["id"])


# -- one entry per read ---------------------------------------------------------------------------


async def test_every_successful_read_leaves_exactly_one_entry(world: World) -> None:
    a, b = await new_member(world.server), await new_member(world.server)
    conv, ids = await conversation_with(a, b, 12, "line")
    case_id = await report(a, conv, [ids[5]])
    moderator = world.assignee(await world.staff["mod_a"].report(case_id))

    reads: list[tuple[list[int], str]] = [([ids[5]], "the reported line"), ([ids[0], ids[11]], "context")]
    for message_ids, reason in reads:
        before = len(await world.entries())
        items = await moderator.read(case_id, message_ids, reason)
        assert [m["id"] for m in items] == sorted(message_ids)
        accessed = await world.accesses_since(before)
        assert len(accessed) == 1, accessed
        details = accessed[0]["details"]
        # The entry counts the messages; which ones is in each member's block (below).
        assert details["messages"] == len(message_ids)
        [seen] = [i for i in await a.access_events() if i["index"] == accessed[0]["idx"]]
        assert seen["messages"] == sorted(message_ids)
        assert details["case"] == {"id": case_id, "kind": "report"}
        assert details["staff"] == moderator.id and details["role"] == "moderator"
        assert details["reason"] == reason
        assert accessed[0]["idx"] >= before

    # The whole window is one read, one entry.
    before = len(await world.entries())
    window = await moderator.report_content(case_id, "whole window")
    accessed = await world.accesses_since(before)
    assert len(accessed) == 1 and accessed[0]["details"]["messages"] == len(window) == len(ids)
    [seen] = [i for i in await b.access_events() if i["index"] == accessed[0]["idx"]]
    assert seen["messages"] == [m["id"] for m in window] == ids

    # Concurrent reads: one entry each, none lost, none merged.
    before = len(await world.entries())
    await asyncio.gather(*(moderator.read(case_id, [i], f"concurrent {i}") for i in ids[:6]))
    accessed = await world.accesses_since(before)
    assert sorted(e["details"]["reason"] for e in accessed) == sorted(f"concurrent {i}" for i in ids[:6])
    assert all(e["details"]["messages"] == 1 for e in accessed)
    by_index = {i["index"]: i["messages"] for i in await a.access_events()}
    assert sorted(by_index[e["idx"]][0] for e in accessed) == ids[:6]

    # Each entry's inclusion proof verifies against the current signed tree head: as an auditor
    # fetches it, and as the member sees it through the SDK.
    head = await sth(world.server)
    all_entries = await world.entries()
    assert len(all_entries) == head["size"]
    for entry in all_entries:
        if orjson.loads(entry["entry"])["type"] != "content_accessed":
            continue
        assert await proven_included(world.server, entry, head)
    mine = await a.access_events(pinned_key=head["public_key"])
    accessed_indexes = {
        e["idx"]
        for e in parsed(all_entries)
        if e["type"] == "content_accessed" and e["details"]["case"]["id"] == case_id
    }
    assert {i["index"] for i in mine if i["type"] == "content_accessed"} == accessed_indexes
    assert len(accessed_indexes) == 2 + 1 + 6
    await moderator.decide(case_id, "no_violation")
    await a.close()
    await b.close()


async def test_refused_reads_leave_no_entry(world: World) -> None:
    a, b, c = [await new_member(world.server) for _ in range(3)]
    conv, ids = await conversation_with(a, b, 30, "line")
    other_conv, other_ids = await conversation_with(a, c, 2, "other")
    case_id = await report(a, conv, [ids[15]])
    moderator = world.assignee(await world.staff["mod_a"].report(case_id))
    stranger = next(s for n, s in world.staff.items() if n.startswith("mod_") and s.id != moderator.id)
    before_entries = len(await world.entries())
    before_head = await sth(world.server)

    attempts = [
        moderator.read(case_id, [ids[0]], "out of the window"),
        moderator.read(case_id, [ids[15], ids[29]], "partly out of the window"),
        moderator.read(case_id, other_ids, "another conversation"),
        moderator.read(case_id, [2**52], "no such message"),
        stranger.read(case_id, [ids[15]], "not mine"),
        world.staff["legal_a"].read(case_id, [ids[15]], "wrong role"),
        world.auditor.read(case_id, [ids[15]], "wrong role"),
        moderator.read(999_999, [ids[15]], "no such case"),
    ]
    for attempt in attempts:
        with pytest.raises(KeyholdError) as caught:
            await attempt
        assert caught.value.status in (403, 404), caught.value.problem
    await moderator.decide(case_id, "warn")
    decided_at = len(await world.entries())  # the decision is logged (case_decided)
    with pytest.raises(KeyholdError):
        await moderator.read(case_id, [ids[15]], "after the decision")
    after = await world.entries()
    assert len(after) == decided_at
    new = parsed(after[before_entries:])
    assert [e["type"] for e in new] == ["case_decided"], new
    assert (await sth(world.server))["size"] == before_head["size"] + 1
    assert other_conv != conv
    for client in (a, b, c):
        await client.close()


# -- what a member sees ---------------------------------------------------------------------------


async def test_a_member_sees_their_entries_and_no_one_elses(world: World) -> None:
    a, b, c, d = [await new_member(world.server) for _ in range(4)]
    ab, ab_ids = await conversation_with(a, b, 4, "ab")  # accessed (report by a)
    ac, ac_ids = await conversation_with(a, c, 4, "ac")  # never accessed
    cd, cd_ids = await conversation_with(c, d, 4, "cd")  # accessed (report by c)
    ab_case = await report(a, ab, [ab_ids[1]])
    cd_case = await report(c, cd, [cd_ids[1]])
    for case_id in (ab_case, cd_case):
        moderator = world.assignee(await world.staff["mod_a"].report(case_id))
        await moderator.report_content(case_id, "review")
        await moderator.decide(case_id, "no_violation")

    views = {
        name: await client.access_events() for name, client in (("a", a), ("b", b), ("c", c), ("d", d))
    }
    for name, expected in (("a", ab_ids), ("b", ab_ids), ("c", cd_ids), ("d", cd_ids)):
        items = views[name]
        assert [i["type"] for i in items] == ["content_accessed"], (name, items)
        assert items[0]["messages"] == expected, name
    assert (
        views["a"][0]["index"] == views["b"][0]["index"] != views["c"][0]["index"] == views["d"][0]["index"]
    )
    # a's view holds nothing of c and d's conversation, nor of a and c's (never accessed).
    shown_to_a = orjson.dumps(views["a"]).decode()
    for message_id in cd_ids + ac_ids:
        assert str(message_id) not in shown_to_a
    # Each member's block is theirs: a and b see the same entry but different blocks.
    assert views["a"][0]["block"] != views["b"][0]["block"]
    assert orjson.loads(views["a"][0]["block"])["user"] != orjson.loads(views["b"][0]["block"])["user"]
    assert ac
    for client in (a, b, c, d):
        await client.close()


async def test_a_conversation_partner_does_not_learn_about_the_targets_other_conversations(
    world: World,
) -> None:
    """One legal read over target b's conversations with a and with c: a's entry must not reveal
    which messages of b and c's conversation were read (only their own block lists messages)."""
    a, b, c = [await new_member(world.server) for _ in range(3)]
    _ab, ab_ids = await conversation_with(a, b, 2, "ab")
    _bc, bc_ids = await conversation_with(b, c, 2, "bc")
    case_id = await warrant(world, [b.username])
    await world.staff["legal_a"].read(case_id, ab_ids + bc_ids, "warrant review")
    [item] = [i for i in await a.access_events() if i["type"] == "content_accessed"]
    assert item["messages"] == ab_ids
    leaked = [m for m in bc_ids if str(m) in item["entry"]]
    assert not leaked, f"a's entry names messages of b and c's conversation: {leaked} in {item['entry']}"
    for client in (a, b, c):
        await client.close()


class Tampering(httpx.AsyncBaseTransport):
    """A transport that answers `/account/access-events` with `body` and passes the rest on."""

    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body
        self._real = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/account/access-events"):
            return httpx.Response(200, json=self._body, request=request)
        return await self._real.handle_async_request(request)

    async def aclose(self) -> None:
        await self._real.aclose()


async def test_the_sdk_rejects_tampered_access_events(world: World) -> None:
    a, b = await new_member(world.server), await new_member(world.server)
    conv, ids = await conversation_with(a, b, 3, "x")
    case_id = await report(a, conv, [ids[0]])
    moderator = world.assignee(await world.staff["mod_a"].report(case_id))
    await moderator.report_content(case_id, "review")
    data = (await raw(a, "GET", "/account/access-events")).json()
    head, [item] = data["tree_head"], data["items"]
    user = orjson.loads(item["block"])["user"]
    assert verify_tree_head(head, head["public_key"])
    assert verify_access_event(item, head)
    assert verify_access_event(item, head, user_id=user, pinned_key=head["public_key"])

    assert not verify_access_event(item, head, user_id=user + 1)  # someone else's block
    assert not verify_access_event(item, head, pinned_key="00" * 32)  # not the pinned key
    assert not verify_tree_head(head, bytes(32))
    assert not verify_tree_head({**head, "size": head["size"] + 1})
    assert not verify_tree_head({**head, "signature": "00" * 64})
    assert not verify_tree_head({"size": 0, "root": None, "public_key": head["public_key"]})
    block = orjson.loads(item["block"])
    forged_block = orjson.dumps({**block, "messages": block["messages"][:1]}).decode()
    entry = orjson.loads(item["entry"])
    forged_entry = orjson.dumps({**entry, "details": {**entry["details"], "reason": "routine"}}).decode()
    bad_proof = [("ff" + p[2:]) for p in item["inclusion_proof"]]
    for forged in (
        {**item, "block": forged_block},
        {**item, "entry": forged_entry},
        {**item, "inclusion_proof": bad_proof},
        {**item, "inclusion_proof": item["inclusion_proof"][:-1]},
        {**item, "index": item["index"] + 1},
        {**item, "messages": []},
        {**item, "type": "case_opened"},
        {**item, "entry": "not json"},
    ):
        assert not verify_access_event(forged, head), forged
    # A head signed by someone else (consistent in itself) is refused when a key is pinned.
    other_head = {**head, "public_key": "11" * 32}
    assert not verify_access_event(item, other_head)

    # A server that alters what it shows: through the SDK's transport seam, the forged block
    # replaces the real one in the answer; everything else goes to the real server.
    forged = {"tree_head": head, "items": [{**item, "block": forged_block}]}
    tampering = Client(a.base_url, a.username, a.token, transport=Tampering(forged))
    with pytest.raises(VerificationError):
        await tampering.access_events()
    await tampering.close()
    assert len(await a.access_events()) == 1
    await moderator.decide(case_id, "no_violation")
    await a.close()
    await b.close()


# -- proofs between heads -------------------------------------------------------------------------


async def test_inclusion_and_consistency_proofs_between_heads(world: World) -> None:
    first = await sth(world.server)
    a, b = await new_member(world.server), await new_member(world.server)
    conv, ids = await conversation_with(a, b, 2, "p")
    case_id = await report(a, conv, [ids[0]])
    moderator = world.assignee(await world.staff["mod_a"].report(case_id))
    await moderator.read(case_id, ids, "proofs")
    await moderator.decide(case_id, "no_violation")
    second = await sth(world.server)
    assert second["size"] >= first["size"] + 4  # opened, accessed, notification, decided
    assert second["timestamp_ms"] >= first["timestamp_ms"]

    proof = (
        await public(
            world.server, "/transparency/proof/consistency", first=first["size"], second=second["size"]
        )
    ).json()
    assert verify_consistency_between(first, second, proof["proof"])
    assert not verify_consistency_between(second, first, proof["proof"])
    if proof["proof"]:
        assert not verify_consistency_between(first, second, ["00" * 32, *proof["proof"][1:]])
    forged_first = {**first, "root": "00" * 32}
    assert not verify_consistency_between(forged_first, second, proof["proof"])

    entries = await world.entries()
    for head in (first, second):
        for entry in entries[: head["size"]]:
            assert await proven_included(world.server, entry, head), (entry["index"], head["size"])
    # Proofs are only given for committed sizes.
    too_big = await public(world.server, "/transparency/proof/inclusion", index=0, size=second["size"] + 1000)
    assert too_big.status_code == 422
    backwards = await public(
        world.server, "/transparency/proof/consistency", first=second["size"], second=first["size"]
    )
    assert backwards.status_code == 422
    key = (await public(world.server, "/transparency/key")).json()
    assert key["public_key"] == second["public_key"]
    await a.close()
    await b.close()


# -- audit verify on disk -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("seeded") / "kh"
    keyhold_cli("demo", "seed", "--init", "--home", str(home))
    return home


def audit(home: Path) -> tuple[int, str]:
    done = keyhold_cli("audit", "verify", "--home", str(home), check=False, env={"COLUMNS": "300"})
    return done.returncode, done.stdout + done.stderr


def audit_many(homes: list[Path]) -> list[tuple[int, str]]:
    """`keyhold audit verify` on several data dirs at once (each is its own process)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(audit, homes))


def names_entry(output: str, index: int) -> bool:
    """Whether the first problem names entry `index` (alone, or in the range of one append)."""
    first = output.split("first bad:", 1)[-1].splitlines()[0] if "first bad:" in output else output
    single = re.search(r"\bentry (\d+)\b", first)
    if single and int(single.group(1)) == index:
        return True
    span = re.search(r"\bentries (\d+)\.\.(\d+)", first)
    return bool(span and int(span.group(1)) <= index <= int(span.group(2)))


class LogDb:
    """Direct access to a stopped data dir's SQLite file, to tamper with the log."""

    def __init__(self, home: Path) -> None:
        self.path = home / "keyhold.db"

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as conn:
            return conn.execute(sql, args).fetchall()

    def execute(self, sql: str, *args: Any) -> None:
        with sqlite3.connect(self.path) as conn:
            conn.execute(sql, args)
            conn.commit()

    def entries(self) -> list[tuple[int, bytes]]:
        return [(int(i), bytes(e)) for i, e in self.query("SELECT idx, entry FROM access_log ORDER BY idx")]

    def set_entry(self, idx: int, entry: bytes) -> None:
        self.execute("UPDATE access_log SET entry = ? WHERE idx = ?", entry, idx)


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


def test_demo_seed_verifies_and_every_changed_entry_is_named(seeded_home: Path, tmp_path: Path) -> None:
    code, output = audit(seeded_home)
    assert code == 0, output
    assert "access log verified" in output
    entries = LogDb(seeded_home).entries()
    types = {orjson.loads(e)["type"] for _, e in entries}
    assert {"case_opened", "case_approved", "content_accessed", "preservation_set"} <= types, types
    # One copy of the data dir per entry, with one byte of that entry flipped.
    homes = []
    for idx, entry in entries:
        home, db = fresh_copy(seeded_home, tmp_path, f"flip-{idx}")
        db.set_entry(idx, flip(entry, len(entry) // 2))
        homes.append(home)
    for (idx, _entry), (code, output) in zip(entries, audit_many(homes), strict=True):
        assert code != 0, f"entry {idx} changed but audit verify passed:\n{output}"
        assert names_entry(output, idx), (idx, output)


async def test_any_single_byte_of_any_entry_is_caught(seeded_home: Path, tmp_path: Path) -> None:
    """In-process sweep of many byte positions of every entry (the CLI test above runs one
    position per entry; this one covers the rest at in-process speed)."""
    home = tmp_path / "kh"
    shutil.copytree(seeded_home, home)
    db = LogDb(home)
    public_key = _public_key(home)
    engine = create_engine(f"sqlite+aiosqlite:///{db.path}")
    try:
        assert (await verify_log(engine, public_key)).ok
        checked = 0
        for idx, entry in db.entries():
            positions = sorted({0, len(entry) - 1, *range(idx % 5, len(entry), 5)})
            for position in positions:
                db.set_entry(idx, flip(entry, position))
                result = await verify_log(engine, public_key)
                assert not result.ok, (idx, position)
                assert names_entry(result.problems[0], idx), (idx, position, result.problems)
                checked += 1
            db.set_entry(idx, entry)
        assert checked > 100
        assert (await verify_log(engine, public_key)).ok
    finally:
        await engine.dispose()


def _public_key(home: Path) -> bytes:
    key = serialization.load_pem_private_key((home / "signing-key.pem").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fresh_copy(seeded: Path, tmp_path: Path, name: str) -> tuple[Path, LogDb]:
    home = tmp_path / name / "kh"
    shutil.copytree(seeded, home)
    return home, LogDb(home)


async def verify_dir(home: Path) -> tuple[int, str]:
    """What `keyhold audit verify` runs (governance.audit.verify_log), in-process: (0 or 1, text)."""
    engine = create_engine(f"sqlite+aiosqlite:///{home / 'keyhold.db'}")
    try:
        result = await verify_log(engine, _public_key(home))
    finally:
        await engine.dispose()
    return (0 if result.ok else 1), "\n".join(f"first bad: {p}" for p in result.problems)


async def tamper_all(
    seeded: Path, tmp_path: Path, changes: dict[str, Callable[[LogDb], None]], through_cli: set[str]
) -> dict[str, tuple[int, str]]:
    """Apply each change to its own copy of the data dir, then audit each copy: in-process, and
    also with the `keyhold audit verify` command for the names in `through_cli`."""
    homes: dict[str, Path] = {}
    for name, change in changes.items():
        home, db = fresh_copy(seeded, tmp_path, name)
        change(db)
        homes[name] = home
    results = {name: await verify_dir(home) for name, home in homes.items()}
    cli_names = sorted(through_cli)
    for name, (code, output) in zip(cli_names, audit_many([homes[n] for n in cli_names]), strict=True):
        assert code != 0 and results[name][1].removeprefix("first bad: ") in output, (name, output)
    return results


async def test_removed_reordered_forged_and_other_changed_bytes_are_named(
    seeded_home: Path, tmp_path: Path
) -> None:
    seeded = LogDb(seeded_home)
    entries = seeded.entries()
    last, middle = len(entries) - 1, len(entries) // 2
    (i, first), (j, second) = entries[1], entries[middle]
    forged = orjson.dumps({**orjson.loads(entries[last][1]), "idx": last + 1}, option=orjson.OPT_SORT_KEYS)
    block_idx, user_id, block = seeded.query(
        "SELECT idx, user_id, block FROM access_log_subjects ORDER BY idx"
    )[0]
    heads = seeded.query("SELECT size, signature, root FROM tree_heads ORDER BY size")
    size, signature, root = heads[len(heads) // 2]

    def swap(db: LogDb) -> None:
        db.set_entry(i, second)
        db.set_entry(j, first)

    where = "WHERE idx = ? AND user_id = ?"
    changes: dict[str, Callable[[LogDb], None]] = {
        "deleted-middle": lambda db: db.execute("DELETE FROM access_log WHERE idx = ?", middle),
        "deleted-last": lambda db: db.execute("DELETE FROM access_log WHERE idx = ?", last),
        "swapped": swap,
        "appended": lambda db: db.execute(
            "INSERT INTO access_log (idx, entry) VALUES (?, ?)", last + 1, forged
        ),
        "block-byte": lambda db: db.execute(
            f"UPDATE access_log_subjects SET block = ? {where}",
            flip(bytes(block), len(block) // 2),
            block_idx,
            user_id,
        ),
        # Hiding an entry from its member by moving its visibility to the far future.
        "block-visibility": lambda db: db.execute(
            f"UPDATE access_log_subjects SET visible_from_ms = ? {where}", 2**62, block_idx, user_id
        ),
        "block-moved": lambda db: db.execute(
            f"UPDATE access_log_subjects SET user_id = (SELECT MAX(id) FROM users) {where}",
            block_idx,
            user_id,
        ),
        "head-signature": lambda db: db.execute(
            "UPDATE tree_heads SET signature = ? WHERE size = ?", flip(bytes(signature), 10), size
        ),
        "head-root": lambda db: db.execute(
            "UPDATE tree_heads SET root = ? WHERE size = ?", flip(bytes(root), 0), size
        ),
    }
    expected_entry = {
        "deleted-middle": middle,
        "deleted-last": last,
        "swapped": i,
        "appended": last + 1,
        "block-byte": block_idx,
        "block-visibility": block_idx,
        "block-moved": block_idx,
    }
    results = await tamper_all(
        seeded_home, tmp_path, changes, {"deleted-middle", "swapped", "head-signature"}
    )
    for name, (code, output) in results.items():
        assert code != 0, f"{name}: audit verify passed:\n{output}"
        if name in expected_entry:
            assert names_entry(output, expected_entry[name]), (name, output)
        else:
            assert f"size {size}" in output, (name, output)
    assert "signature does not verify" in results["head-signature"][1]


def test_a_removed_member_block_is_caught(seeded_home: Path, tmp_path: Path) -> None:
    """Deleting a member's block silently hides an access from that member: the audit must see
    that an entry commits to a block that storage no longer has."""
    home, db = fresh_copy(seeded_home, tmp_path, "block-removed")
    idx, user_id = db.query("SELECT idx, user_id FROM access_log_subjects ORDER BY idx")[0]
    db.execute("DELETE FROM access_log_subjects WHERE idx = ? AND user_id = ?", idx, user_id)
    code, output = audit(home)
    assert code != 0, f"a member block of entry {idx} was deleted and audit verify passed:\n{output}"
    assert names_entry(output, idx), output
