"""Key transparency (issue 8, item 8), on both databases: every publication and removal of e2ee
keys is an entry of a signed Merkle log; `keys/query` answers prove each key's entry against a
signed head; consistency proofs show the log only grew. The SDK checks all of it before it
encrypts, and refuses to send, saying why, when a server substitutes a key or forks its log.

The malicious servers here are the real server behind an in-process HTTP transport that
rewrites its answers (the SDK's `transport` seam): one swaps a device's keys, one strips the
proofs, one re-signs heads with another key, and one — holding the service's real signing
key, as a compromised operator would — rewrites the log's history for one client."""

from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import PASSWORD, TLS, Server, keyhold_cli, new_member, start_server, stop_server, unique
from db_snapshot import stored
from e2ee_helpers import published, sharing
from keyhold.crypto.merkle import KEY_STH_PREFIX, MerkleTree, leaf_hash, sth_message
from keyhold.crypto.signed_json import signing_bytes
from keyhold.sdk import Client
from keyhold.sdk.e2ee.cross_signing import CrossSigningKeys
from keyhold.sdk.e2ee.device import OlmDevice
from keyhold.sdk.e2ee.transparency import TRANSPARENCY_FIELD, KeyLogView, KeyTransparencyError, key_digest
from keyhold.sdk.verify import verify_consistency_between, verify_tree_head

pytestmark = pytest.mark.postgres

PROBLEM_JSON = "application/problem+json"


async def log_entries(server: Server, user_id: str | None = None) -> list[dict[str, Any]]:
    rows = await stored(server, "SELECT idx, entry FROM key_log ORDER BY idx")
    entries = [orjson.loads(bytes(entry)) for _, entry in rows]
    return [e for e in entries if user_id is None or e["user_id"] == user_id]


async def key_head(client: Client) -> dict[str, Any]:
    return dict(await client._request("GET", "/e2ee/transparency/sth"))


# -- the server's log ------------------------------------------------------------------------


async def test_every_key_served_comes_with_a_proof_that_verifies(server: Server) -> None:
    alice, bob = await sharing(server, 2)
    cross = CrossSigningKeys(alice.user_id)
    reply = await alice.post("keys/device_signing/upload", cross.upload_body())
    assert reply.status_code == 200, reply.text
    answer = await bob.query(alice.user_id)
    proofs = answer[TRANSPARENCY_FIELD]["proofs"][alice.user_id]
    assert set(proofs) == {
        f"device:{alice.client.device_id}",
        "master",
        "self_signing",
    }  # user-signing: hers only
    assert await KeyLogView().check_answer(answer) == {}
    mine = await alice.query(alice.user_id)
    assert "user_signing" in mine[TRANSPARENCY_FIELD]["proofs"][alice.user_id]
    assert await KeyLogView().check_answer(mine) == {}
    # The check is not vacuous: one altered byte of the served key fails it.
    served = answer["device_keys"][alice.user_id][alice.client.device_id]
    served["keys"][f"curve25519:{alice.client.device_id}"] = "A" * 43
    problems = await KeyLogView().check_answer(answer)
    assert set(problems) == {(alice.user_id, f"device:{alice.client.device_id}")}


async def test_publications_and_removals_are_entries_of_the_log(server: Server) -> None:
    member = await published(server)
    uid, device = member.user_id, member.client.device_id
    [entry] = await log_entries(server, uid)
    assert (entry["op"], entry["key"]) == ("publish", f"device:{device}")
    assert entry["sha256"] == key_digest(member.device.device_keys())
    again = await member.upload()  # the same keys again: nothing new to log
    assert again.status_code == 200
    decorated = dict(member.device.device_keys(), unsigned={"note": "the same key, other unsigned data"})
    assert (await member.post("keys/upload", {"device_keys": decorated})).status_code == 200
    assert len(await log_entries(server, uid)) == 1

    cross = CrossSigningKeys(uid)
    assert (await member.post("keys/device_signing/upload", cross.upload_body())).status_code == 200
    logged = await log_entries(server, uid)
    assert [(e["op"], e["key"]) for e in logged[1:]] == [
        ("publish", "master"),
        ("publish", "self_signing"),
        ("publish", "user_signing"),
    ]
    assert logged[1]["sha256"] == key_digest(cross.key_object("master"))

    laptop = await Client.login(server.url, member.client.username, PASSWORD, device_id="LAPTOP", e2ee=False)
    laptop_device = OlmDevice(uid, "LAPTOP")
    reply = await laptop._request(
        "POST", "/e2ee/keys/upload", json={"device_keys": laptop_device.device_keys()}
    )
    assert reply["one_time_key_counts"] is not None
    await member.client.remove_device("LAPTOP", PASSWORD)
    logged = await log_entries(server, uid)
    assert [(e["op"], e["key"]) for e in logged[-2:]] == [
        ("publish", "device:LAPTOP"),
        ("remove", "device:LAPTOP"),
    ]
    assert logged[-1]["sha256"] == logged[-2]["sha256"] == key_digest(laptop_device.device_keys())

    await member.client.delete_account(PASSWORD)
    removed = [(e["op"], e["key"]) for e in (await log_entries(server, uid))[-4:]]
    assert sorted(removed) == sorted(
        [
            ("remove", f"device:{device}"),
            ("remove", "master"),
            ("remove", "self_signing"),
            ("remove", "user_signing"),
        ]
    )
    account = (await stored(server, "SELECT id FROM users WHERE username = ?", member.client.username))[0][0]
    assert await stored(server, "SELECT usage FROM e2ee_cross_signing_keys WHERE user_id = ?", account) == []
    indexes = [e["idx"] for e in await log_entries(server)]
    assert indexes == list(range(len(indexes)))  # every entry names its own place


async def test_heads_are_signed_under_the_key_log_prefix_only(server: Server) -> None:
    member = await published(server)
    head = await key_head(member.client)
    assert head["size"] >= 1
    assert verify_tree_head(head, prefix=KEY_STH_PREFIX)
    assert not verify_tree_head(head)  # never passes for a head of the access log
    service_key = (await member.client._request("GET", "/transparency/key"))["public_key"]
    assert head["public_key"] == service_key


async def test_consistency_proofs_show_the_log_only_grew(server: Server) -> None:
    member = await published(server)
    before = await key_head(member.client)
    await published(server)
    after = await key_head(member.client)
    assert after["size"] > before["size"]
    # Public, like the access log's proofs: hashes only. No token needed.
    async with httpx.AsyncClient(verify=TLS, base_url=server.url + "/api/v1") as anonymous:
        reply = await anonymous.get(
            "/e2ee/transparency/consistency", params={"from": before["size"], "to": after["size"]}
        )
        assert reply.status_code == 200, reply.text
        proof = reply.json()["proof"]
        assert verify_consistency_between(before, after, proof, KEY_STH_PREFIX)
        tampered = dict(before, root="00" * 32)
        assert not verify_consistency_between(tampered, after, proof, KEY_STH_PREFIX)
        for params in (
            {"from": after["size"], "to": before["size"]},
            {"from": 0, "to": after["size"] + 10_000},
            {"from": -1, "to": 1},
            {"from": "one", "to": 2},
            {"from": 1},
            {"from": "1\x00", "to": 2},
        ):
            bad = await anonymous.get("/e2ee/transparency/consistency", params=params)
            assert bad.status_code in (400, 422), (params, bad.text)
            assert bad.headers["content-type"].startswith(PROBLEM_JSON), params


# -- the SDK's checks, against honest and dishonest servers ----------------------------------


class TamperingServer(httpx.AsyncBaseTransport):
    """The real server, with `keys/query` answers (and consistency proofs) rewritten."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.rewrite: Callable[[dict[str, Any]], Any] | None = None  # returns the answer, or awaits it
        self.consistency: Callable[[int, int], list[str]] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if self.consistency is not None and path.endswith("/e2ee/transparency/consistency"):
            first, second = int(request.url.params["from"]), int(request.url.params["to"])
            return httpx.Response(
                200, json={"from": first, "to": second, "proof": self.consistency(first, second)}
            )
        response = await self._inner.handle_async_request(request)
        if self.rewrite is not None and path.endswith("/e2ee/keys/query") and response.status_code == 200:
            await response.aread()
            rewritten = self.rewrite(json.loads(response.content))
            if inspect.isawaitable(rewritten):
                rewritten = await rewritten
            return httpx.Response(200, json=rewritten)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def tampered_member(server: Server, proxy: TamperingServer, **kwargs: Any) -> Client:
    return await Client.register(
        server.url, unique(), PASSWORD, birthdate="1990-05-17", transport=proxy, **kwargs
    )


def substitute(victim: Client, impostor: OlmDevice) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Serve the impostor's (validly self-signed) keys as the victim's device."""

    def rewrite(answer: dict[str, Any]) -> dict[str, Any]:
        devices = answer["device_keys"].get(victim.user_id)
        if devices and victim.device_id in devices:
            devices[victim.device_id] = impostor.device_keys()
        return answer

    return rewrite


async def test_an_honest_server_passes_and_the_newest_head_outlives_a_restart(
    server: Server, tmp_path: Path
) -> None:
    bob = await new_member(server, e2ee=True)
    name = unique()
    state = tmp_path / "alice.e2ee"
    alice = await Client.register(
        server.url, name, PASSWORD, birthdate="1990-05-17", state_path=state, passphrase="pp"
    )
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    await alice.send(conversation.id, "checked against the log")
    assert alice.crypto is not None and alice.crypto.key_log.newest is not None
    newest = alice.crypto.key_log.newest
    await alice.close()
    again = await Client.login(server.url, name, PASSWORD, state_path=state, passphrase="pp")
    assert again.crypto is not None and again.crypto.key_log.newest == newest
    assert again.crypto.key_log.pinned_key == newest["public_key"]
    await again.send(conversation.id, "still checked")  # its new head is consistent with the saved one
    assert [m.text for m in await bob.history(conversation.id)] == [
        "checked against the log",
        "still checked",
    ]


async def test_a_substituted_device_key_is_caught_and_nothing_is_sent(server: Server) -> None:
    proxy = TamperingServer()
    bob = await new_member(server, e2ee=True)
    alice = await tampered_member(server, proxy)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    assert bob.user_id is not None and bob.device_id is not None
    proxy.rewrite = substitute(bob, OlmDevice(bob.user_id, bob.device_id))
    with pytest.raises(KeyTransparencyError) as caught:
        await alice.send(conversation.id, "for bob's eyes only")
    assert "substituted" in caught.value.reason and bob.device_id in caught.value.reason
    assert await bob.history(conversation.id) == []  # refused before anything was sent

    def strip_proofs(answer: dict[str, Any]) -> dict[str, Any]:
        answer[TRANSPARENCY_FIELD]["proofs"] = {}
        return answer

    proxy.rewrite = strip_proofs
    with pytest.raises(KeyTransparencyError) as caught:
        await alice.send(conversation.id, "for bob's eyes only")
    assert "not in the key-transparency log" in caught.value.reason
    proxy.rewrite = None  # the honest answer again: sending works
    await alice.send(conversation.id, "now it goes")
    assert [m.text for m in await bob.history(conversation.id)] == ["now it goes"]


async def test_a_head_signed_by_another_key_is_refused_once_a_key_is_pinned(server: Server) -> None:
    proxy = TamperingServer()
    bob = await new_member(server, e2ee=True)
    alice = await tampered_member(server, proxy)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    await alice.send(conversation.id, "pins the service key")
    other = Ed25519PrivateKey.generate()
    other_public = other.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def resign(answer: dict[str, Any]) -> dict[str, Any]:
        head = answer[TRANSPARENCY_FIELD]["tree_head"]
        message = sth_message(head["size"], bytes.fromhex(head["root"]), head["timestamp_ms"], KEY_STH_PREFIX)
        head.update(signature=other.sign(message).hex(), public_key=other_public.hex())
        return answer

    proxy.rewrite = resign
    with pytest.raises(KeyTransparencyError) as caught:
        await alice.send(conversation.id, "never sent")
    assert "another key than the one this device pinned" in caught.value.reason
    assert [m.text for m in await bob.history(conversation.id)] == ["pins the service key"]


def stolen_signing_key(server: Server) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key((server.home / "signing-key.pem").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


async def test_a_log_forked_for_one_client_is_caught(server: Server) -> None:
    """A compromised operator (with the real signing key) shows Alice a history in which Bob's
    device published the impostor's keys. It is a valid log, signed by the pinned key, with
    valid proofs — but it does not extend the head Alice saw before, and no consistency proof
    can make it."""
    proxy = TamperingServer()
    bob = await new_member(server, e2ee=True)
    alice = await tampered_member(server, proxy)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    await alice.send(conversation.id, "before the fork")
    assert alice.crypto is not None and alice.crypto.key_log.newest is not None
    seen = alice.crypto.key_log.newest
    await new_member(server, e2ee=True)  # the real log grows meanwhile
    assert bob.user_id is not None and bob.device_id is not None
    impostor = OlmDevice(bob.user_id, bob.device_id)
    signer = stolen_signing_key(server)
    real = [
        (int(idx), bytes(entry))
        for idx, entry in await stored(server, "SELECT idx, entry FROM key_log ORDER BY idx")
    ]
    [bobs] = [
        idx
        for idx, entry in real
        if orjson.loads(entry)["user_id"] == bob.user_id
        and orjson.loads(entry)["key"] == f"device:{bob.device_id}"
    ]
    assert bobs < seen["size"]  # the rewritten entry is in the history Alice already saw
    forged_entries = [entry for _, entry in real]
    fake = dict(orjson.loads(real[bobs][1]), sha256=key_digest(impostor.device_keys()))
    forged_entries[bobs] = signing_bytes(fake)
    tree = MerkleTree.from_leaf_hashes(leaf_hash(e) for e in forged_entries)
    size, root, timestamp = tree.size, tree.root(), int(seen["timestamp_ms"]) + 1
    head = {
        "size": size,
        "root": root.hex(),
        "timestamp_ms": timestamp,
        "signature": signer.sign(sth_message(size, root, timestamp, KEY_STH_PREFIX)).hex(),
        "public_key": seen["public_key"],
    }

    def fork(answer: dict[str, Any]) -> dict[str, Any]:
        answer = substitute(bob, impostor)(answer)
        transparency = answer[TRANSPARENCY_FIELD]
        transparency["tree_head"] = head
        for proofs in transparency["proofs"].values():
            for proof in proofs.values():
                index = proof["index"]
                proof["entry"] = forged_entries[index].decode()
                proof["inclusion_proof"] = [h.hex() for h in tree.inclusion_proof(index, size)]
        return answer

    proxy.rewrite = fork
    proxy.consistency = lambda first, second: [h.hex() for h in tree.consistency_proof(first, second)]
    # A device that never saw the real log accepts the forged one: the fork is only visible
    # against an earlier head (what the module docstring of the SDK's check says).
    assert await KeyLogView().check_answer(fork(await _query_as(alice, bob.user_id))) == {}
    with pytest.raises(KeyTransparencyError) as caught:
        await alice.send(conversation.id, "after the fork")
    assert "forked" in caught.value.reason
    assert alice.crypto.key_log.newest == seen  # the forged head was not taken as the newest
    assert [m.text for m in await bob.history(conversation.id)] == ["before the fork"]


async def _query_as(client: Client, user_id: str) -> dict[str, Any]:
    """An honest keys/query answer (straight from the server, not through the proxy)."""
    headers = {"authorization": f"Bearer {client.token}"}
    async with httpx.AsyncClient(verify=TLS, base_url=client.base_url + "/api/v1", headers=headers) as http:
        reply = await http.post("/e2ee/keys/query", json={"device_keys": {user_id: []}})
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


@pytest.mark.parametrize(
    "transparency",
    [
        None,
        "not an object",
        {"tree_head": None, "proofs": {}},
        {"tree_head": {"size": True, "root": "00", "timestamp_ms": 1, "signature": "00", "public_key": "00"}},
        {
            "tree_head": {
                "size": 1,
                "root": "zz" * 32,
                "timestamp_ms": 1,
                "signature": "00" * 64,
                "public_key": "00" * 32,
            }
        },
    ],
)
async def test_garbage_in_place_of_the_log_fails_each_key_without_raising(transparency: Any) -> None:
    device = OlmDevice("@a:keyhold.local", "PHONE")
    answer = {
        "device_keys": {"@a:keyhold.local": {"PHONE": device.device_keys()}},
        TRANSPARENCY_FIELD: transparency,
    }
    problems = await KeyLogView().check_answer(answer)
    assert list(problems) == [("@a:keyhold.local", "device:PHONE")]


@pytest.mark.parametrize(
    "proof",
    [
        None,
        "x",
        {"index": True, "entry": "{}", "inclusion_proof": []},
        {"index": 0, "entry": "{", "inclusion_proof": []},
        {"index": 0, "entry": "[]", "inclusion_proof": []},
        {"index": 0, "entry": "{}", "inclusion_proof": ["zz"]},
    ],
)
async def test_garbage_proofs_fail_their_key_without_raising(proof: Any) -> None:
    signer = Ed25519PrivateKey.generate()
    public = signer.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    root = MerkleTree.from_leaf_hashes([leaf_hash(b"x")]).root()
    head = {
        "size": 1,
        "root": root.hex(),
        "timestamp_ms": 5,
        "signature": signer.sign(sth_message(1, root, 5, KEY_STH_PREFIX)).hex(),
        "public_key": public.hex(),
    }
    device = OlmDevice("@a:keyhold.local", "PHONE")
    answer = {
        "device_keys": {"@a:keyhold.local": {"PHONE": device.device_keys()}},
        TRANSPARENCY_FIELD: {"tree_head": head, "proofs": {"@a:keyhold.local": {"device:PHONE": proof}}},
    }
    assert list(await KeyLogView().check_answer(answer)) == [("@a:keyhold.local", "device:PHONE")]


def test_entries_hash_what_signatures_cover() -> None:
    """The digest ignores added signatures and `unsigned` (they change without the key)."""
    device = OlmDevice("@a:keyhold.local", "PHONE")
    keys = device.device_keys()
    decorated = dict(keys, unsigned={"device_display_name": "phone"})
    decorated["signatures"] = {
        **keys["signatures"],
        "@a:keyhold.local": {**keys["signatures"]["@a:keyhold.local"], "ed25519:x": "y"},
    }
    assert key_digest(decorated) == key_digest(keys)
    assert key_digest(OlmDevice("@a:keyhold.local", "PHONE").device_keys()) != key_digest(keys)


async def test_concurrent_publications_make_one_log_whose_every_head_verifies(server: Server) -> None:
    members = await asyncio.gather(*(published(server) for _ in range(12)))
    entries = [bytes(e) for _, e in await stored(server, "SELECT idx, entry FROM key_log ORDER BY idx")]
    assert [orjson.loads(e)["idx"] for e in entries] == list(range(len(entries)))
    mine = {m.user_id for m in members}
    assert len([e for e in entries if orjson.loads(e)["user_id"] in mine]) == 12
    tree = MerkleTree.from_leaf_hashes(leaf_hash(e) for e in entries)
    heads = await stored(
        server, "SELECT size, root, timestamp_ms, signature FROM key_log_heads ORDER BY size"
    )
    sizes = [h[0] for h in heads]
    assert sizes == sorted(set(sizes)) and sizes[-1] == len(entries)  # a signed head per append
    public_key = bytes.fromhex((await key_head(members[0].client))["public_key"])
    for size, root, timestamp, signature in heads:
        assert bytes(root) == tree.root(size)
        head = {
            "size": size,
            "root": bytes(root).hex(),
            "timestamp_ms": timestamp,
            "signature": bytes(signature).hex(),
            "public_key": public_key.hex(),
        }
        assert verify_tree_head(head, public_key, KEY_STH_PREFIX)


async def test_no_entry_reaches_someone_who_may_not_see_the_keys(server: Server) -> None:
    alice = await published(server)
    stranger = await published(server)
    answer = await stranger.query(alice.user_id)
    assert answer["device_keys"] == {alice.user_id: {}}
    assert answer[TRANSPARENCY_FIELD]["proofs"] == {}
    assert alice.user_id not in json.dumps(answer[TRANSPARENCY_FIELD])


async def test_a_bad_cross_signing_key_of_a_member_stops_sends_to_them(server: Server) -> None:
    """Even a key no device uses: it must not make the SDK skip what it remembers of the member."""
    proxy = TamperingServer()
    bob = await new_member(server, e2ee=True)
    alice = await tampered_member(server, proxy)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")

    def junk(answer: dict[str, Any]) -> dict[str, Any]:
        answer["user_signing_keys"][bob.user_id] = {
            "user_id": bob.user_id,
            "usage": ["user_signing"],
            "keys": {},
        }
        return answer

    proxy.rewrite = junk
    with pytest.raises(KeyTransparencyError) as caught:
        await alice.send(conversation.id, "not while bob's keys do not check out")
    assert bob.user_id is not None and bob.user_id in caught.value.reason
    assert await bob.history(conversation.id) == []


async def test_concurrent_checks_never_move_the_newest_head_back() -> None:
    signer = Ed25519PrivateKey.generate()
    public = signer.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    tree = MerkleTree.from_leaf_hashes(leaf_hash(bytes([i])) for i in range(10))

    def head(size: int) -> dict[str, Any]:
        root = tree.root(size)
        signature = signer.sign(sth_message(size, root, size, KEY_STH_PREFIX))
        return {
            "size": size,
            "root": root.hex(),
            "timestamp_ms": size,
            "signature": signature.hex(),
            "public_key": public.hex(),
        }

    view = KeyLogView(public.hex(), head(5))

    async def slow_for_eight(first: int, second: int) -> list[str]:
        await asyncio.sleep(0.2 if second == 8 else 0)  # the answer with the smaller head ends last
        return [h.hex() for h in tree.consistency_proof(first, second)]

    view.fetch_consistency = slow_for_eight
    device = OlmDevice("@a:keyhold.local", "PHONE")

    def answer(size: int) -> dict[str, Any]:
        return {
            "device_keys": {"@a:keyhold.local": {"PHONE": device.device_keys()}},
            TRANSPARENCY_FIELD: {"tree_head": head(size), "proofs": {}},
        }

    await asyncio.gather(view.check_answer(answer(8)), view.check_answer(answer(10)))
    assert view.newest is not None and view.newest["size"] == 10


async def test_audit_verify_rederives_the_key_log_and_names_what_was_changed(tmp_path: Path) -> None:
    own = start_server(tmp_path / "kh")
    try:
        alice, bob = await sharing(own, 2)
        assert (
            await alice.post("keys/device_signing/upload", CrossSigningKeys(alice.user_id).upload_body())
        ).status_code == 200
        await alice.client.close()
        await bob.client.close()
    finally:
        stop_server(own)

    def audit() -> tuple[int, str]:
        done = keyhold_cli("audit", "verify", "--home", str(own.home), check=False, env={"COLUMNS": "300"})
        return done.returncode, done.stdout + done.stderr

    code, output = audit()
    assert (
        code == 0
        and "key-transparency log verified: 5 entries, 3 signed tree heads, 5 published keys" in output
    ), output
    db = sqlite3.connect(own.home / "keyhold.db")
    try:
        (entry,) = db.execute("SELECT entry FROM key_log WHERE idx = 1").fetchone()
        db.execute(
            "UPDATE key_log SET entry = ? WHERE idx = 1", (bytes(entry).replace(b'"publish"', b'"remove"'),)
        )
        db.commit()
        code, output = audit()
        assert code == 1 and "key-transparency log does NOT verify" in output
        assert "first bad: entry 1: changed" in output, output
        db.execute("UPDATE key_log SET entry = ? WHERE idx = 1", (entry,))
        # A key swapped in storage, its entry left alone: served without being logged.
        impostor = OlmDevice(bob.user_id, str(bob.client.device_id)).device_keys()
        db.execute(
            "UPDATE e2ee_device_keys SET key_json = ? WHERE device_id = ?",
            (json.dumps(impostor), bob.client.device_id),
        )
        db.commit()
        code, output = audit()
        assert (
            code == 1
            and f"{bob.user_id}'s device:{bob.client.device_id} key: differs from what entry" in output
        ), output
    finally:
        db.close()


def test_a_remembered_self_signature_never_vouches_for_other_keys() -> None:
    """The SDK remembers checked self-signatures by what they sign: the same signature on
    altered keys is checked afresh, and fails."""
    from keyhold.sdk.e2ee.machine import _checked_device

    valid: set[tuple[str, bytes]] = set()
    device = OlmDevice("@a:keyhold.local", "PHONE")
    keys = device.device_keys()
    assert _checked_device("@a:keyhold.local", "PHONE", keys, valid) is not None
    assert len(valid) == 1
    altered = json.loads(json.dumps(keys))
    altered["keys"]["curve25519:PHONE"] = OlmDevice("@a:keyhold.local", "PHONE").curve25519
    assert _checked_device("@a:keyhold.local", "PHONE", altered, valid) is None
    assert _checked_device("@a:keyhold.local", "PHONE", keys, valid) is not None


async def test_a_log_forked_for_one_member_from_the_start_is_caught_by_the_others(server: Server) -> None:
    """Alice never sees the real log: from her first query on, the server (with its real
    signing key) shows her one where Bob's device published an impostor's keys. She cannot
    tell. But every room key she sends carries the newest head she accepted, and Carol, who
    sees the real log, cannot get a proof that the two are one log: she stops sending."""
    bob, carol = await new_member(server, e2ee=True), await new_member(server, e2ee=True)
    assert bob.user_id is not None and bob.device_id is not None
    impostor = OlmDevice(bob.user_id, bob.device_id)
    signer = stolen_signing_key(server)
    forged: dict[str, Any] = {}

    async def fork(answer: dict[str, Any]) -> dict[str, Any]:
        rows = await stored(server, "SELECT idx, entry FROM key_log ORDER BY idx")
        entries = [bytes(entry) for _, entry in rows]
        for i, entry in enumerate(entries):
            parsed = orjson.loads(entry)
            if parsed["user_id"] == bob.user_id and parsed["key"] == f"device:{bob.device_id}":
                entries[i] = signing_bytes(dict(parsed, sha256=key_digest(impostor.device_keys())))
        tree = MerkleTree.from_leaf_hashes(leaf_hash(e) for e in entries)
        forged["tree"] = tree
        root = tree.root()
        head = {
            "size": tree.size,
            "root": root.hex(),
            "timestamp_ms": tree.size,
            "signature": signer.sign(sth_message(tree.size, root, tree.size, KEY_STH_PREFIX)).hex(),
            "public_key": signer.public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            .hex(),
        }
        answer = substitute(bob, impostor)(answer)
        transparency = answer[TRANSPARENCY_FIELD]
        transparency["tree_head"] = head
        for proofs in transparency["proofs"].values():
            for proof in proofs.values():
                proof["entry"] = entries[proof["index"]].decode()
                proof["inclusion_proof"] = [h.hex() for h in tree.inclusion_proof(proof["index"], tree.size)]
        return answer

    proxy = TamperingServer()
    proxy.rewrite = fork
    proxy.consistency = lambda first, second: [
        h.hex() for h in forged["tree"].consistency_proof(first, second)
    ]
    alice = await tampered_member(server, proxy)
    group = await alice.start_conversation([bob.username, carol.username], encryption="e2ee", kind="group")
    await alice.send(group.id, "to bob's impostor and to carol")  # Alice's own view checks out
    assert alice.crypto is not None and alice.crypto.key_log.fork is None
    assert [m.text for m in await carol.history(group.id)] == ["to bob's impostor and to carol"]
    assert carol.crypto is not None and carol.crypto.key_log.fork is not None
    fork = carol.crypto.key_log.fork
    assert alice.user_id is not None and alice.user_id in fork["reason"]
    mine, theirs = fork[
        "heads"
    ]  # the evidence: two heads the service signed, of one size or joined by no proof
    assert verify_tree_head(mine, prefix=KEY_STH_PREFIX) and verify_tree_head(theirs, prefix=KEY_STH_PREFIX)
    assert mine["public_key"] == theirs["public_key"] and mine["root"] != theirs["root"]
    with pytest.raises(KeyTransparencyError) as caught:
        await carol.send(group.id, "not while the server shows members different logs")
    assert "different logs" in caught.value.reason
    assert [m.undecryptable is not None for m in await bob.history(group.id)] == [
        True
    ]  # sent to the impostor


async def test_a_head_a_contact_makes_up_proves_nothing(server: Server) -> None:
    """A gossiped head counts only when the service signed it: a contact's own fake one is
    ignored (else any contact could stop anyone from sending)."""
    bob = await new_member(server, e2ee=True)
    alice = await new_member(server, e2ee=True)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    await alice.send(conversation.id, "bob now knows the real head")
    await bob.history(conversation.id)
    assert bob.crypto is not None and bob.crypto.key_log.newest is not None
    other = Ed25519PrivateKey.generate()
    root = b"\x11" * 32
    fake = {
        "size": 1,
        "root": root.hex(),
        "timestamp_ms": 1,
        "signature": other.sign(sth_message(1, root, 1, KEY_STH_PREFIX)).hex(),
        "public_key": other.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex(),
    }
    assert await bob.crypto.key_log.check_gossip(fake, "@mallory:keyhold.local") is False
    unsigned = dict(bob.crypto.key_log.newest, root="22" * 32)  # the pinned key, but not its signature
    assert await bob.crypto.key_log.check_gossip(unsigned, "@mallory:keyhold.local") is False
    assert bob.crypto.key_log.fork is None
    await bob.send(conversation.id, "still sending")


# -- KeyLogView against a log made here (no server): proofs, gossip, forks ---------------------


class LocalLog:
    """A key log and its signing key, as a server would keep them."""

    def __init__(self, entries: list[bytes]) -> None:
        self.signer = Ed25519PrivateKey.generate()
        self.public = self.signer.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.entries = entries
        self.tree = MerkleTree.from_leaf_hashes(leaf_hash(e) for e in entries)

    def head(self, size: int, tree: MerkleTree | None = None) -> dict[str, Any]:
        root = (tree or self.tree).root(size)
        signature = self.signer.sign(sth_message(size, root, size, KEY_STH_PREFIX))
        return {
            "size": size,
            "root": root.hex(),
            "timestamp_ms": size,
            "signature": signature.hex(),
            "public_key": self.public.hex(),
        }

    async def consistency(self, first: int, second: int) -> list[str]:
        return [h.hex() for h in self.tree.consistency_proof(first, second)]


def published_entry(index: int, user: str, slot: str, key: dict[str, Any]) -> bytes:
    entry = {
        "v": 1,
        "idx": index,
        "op": "publish",
        "user_id": user,
        "key": slot,
        "sha256": key_digest(key),
        "time_ms": 1,
    }
    return signing_bytes(entry)


async def test_a_wrong_inclusion_path_fails_even_for_an_entry_checked_under_another_root() -> None:
    device = OlmDevice("@a:keyhold.local", "PHONE")
    keys = device.device_keys()
    log = LocalLog([published_entry(0, "@a:keyhold.local", "device:PHONE", keys), b"1", b"2", b"3"])
    view = KeyLogView()
    view.fetch_consistency = log.consistency

    def answer(size: int, path: list[bytes]) -> dict[str, Any]:
        proof = {"index": 0, "entry": log.entries[0].decode(), "inclusion_proof": [h.hex() for h in path]}
        return {
            "device_keys": {"@a:keyhold.local": {"PHONE": keys}},
            TRANSPARENCY_FIELD: {
                "tree_head": log.head(size),
                "proofs": {"@a:keyhold.local": {"device:PHONE": proof}},
            },
        }

    assert await view.check_answer(answer(3, log.tree.inclusion_proof(0, 3))) == {}
    wrong = [bytes(32)] * len(log.tree.inclusion_proof(0, 4))
    problems = await view.check_answer(answer(4, wrong))  # a new root: the earlier check does not carry over
    assert "not in the log under its signed head" in problems["@a:keyhold.local", "device:PHONE"]
    assert await view.check_answer(answer(4, log.tree.inclusion_proof(0, 4))) == {}


async def test_gossiped_heads_move_the_newest_forward_only_and_keep_nothing_extra() -> None:
    log = LocalLog([bytes([i]) for i in range(8)])
    view = KeyLogView(log.public.hex(), log.head(4))
    view.fetch_consistency = log.consistency
    assert await view.check_gossip(log.head(2), "@b:keyhold.local") is False  # older, consistent: kept as is
    assert view.newest == log.head(4)
    padded = dict(log.head(6), pad="x" * 45_000)
    assert await view.check_gossip(padded, "@b:keyhold.local") is True
    assert view.newest == log.head(6) and "pad" not in view.newest  # the padding is not passed on
    assert view.fork is None and view.pending is None
    await view.settle()  # nothing stops a send


async def test_no_proof_is_not_a_fork_but_sends_wait_for_one() -> None:
    log = LocalLog([bytes([i]) for i in range(8)])
    view = KeyLogView(log.public.hex(), log.head(4))
    answers: list[list[str] | None] = [None, None]

    async def flaky(first: int, second: int) -> list[str] | None:
        return answers.pop(0) if answers else await log.consistency(first, second)

    view.fetch_consistency = flaky
    assert await view.check_gossip(log.head(7), "@b:keyhold.local") is True
    assert view.fork is None and view.pending == {"sender": "@b:keyhold.local", "head": log.head(7)}
    restored = KeyLogView.restore(json.loads(json.dumps(view.export())))
    assert restored.pending == view.pending  # waits across a restart too
    with pytest.raises(KeyTransparencyError) as caught:
        await view.settle()
    assert "not sending yet" in caught.value.reason
    await view.settle()  # the proof came: settled, and the newer head taken
    assert view.pending is None and view.fork is None and view.newest == log.head(7)


async def test_a_proven_fork_is_kept_with_its_evidence_until_forgotten() -> None:
    log = LocalLog([bytes([i]) for i in range(8)])
    other = MerkleTree.from_leaf_hashes(leaf_hash(bytes([i + 100])) for i in range(8))
    view = KeyLogView(log.public.hex(), log.head(4))
    view.fetch_consistency = log.consistency
    forked_same_size = log.head(4, other)
    assert await view.check_gossip(forked_same_size, "@b:keyhold.local") is True  # one size, two roots
    assert view.fork is not None and view.fork["heads"] == [log.head(4), forked_same_size]
    saved = json.loads(json.dumps(view.export()))
    restored = KeyLogView.restore(saved)
    with pytest.raises(KeyTransparencyError) as caught:
        await restored.settle()
    assert "@b:keyhold.local" in caught.value.reason and "different logs" in caught.value.reason
    restored.forget_fork()
    await restored.settle()

    later = KeyLogView(log.public.hex(), log.head(4))
    later.fetch_consistency = log.consistency  # the real log's proof cannot join the other tree
    assert await later.check_gossip(log.head(6, other), "@c:keyhold.local") is True
    assert later.fork is not None and "no consistency proof joins" in later.fork["reason"]
