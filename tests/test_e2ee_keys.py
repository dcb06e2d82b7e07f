"""The key directory of end-to-end encryption (`/api/v1/e2ee/keys/...`), in Matrix's shapes,
on both databases: devices publish signed keys from a real vodozemac account; who may see
and claim them; one-time keys handed out once; cross-signing and added signatures."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from conftest import PASSWORD, Server, raw
from e2ee_helpers import member_with_device, published, sharing
from keyhold.crypto.signed_json import decode_base64, verify_signed_json
from keyhold.sdk import Client
from keyhold.sdk.e2ee.cross_signing import CrossSigningKeys

pytestmark = pytest.mark.postgres


def problem_type(response: Any) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["type"]).rsplit("/", 1)[-1]


async def test_a_device_publishes_signed_keys_and_learns_its_counts(server: Server) -> None:
    alice = await member_with_device(server)
    first = await alice.upload(one_time_keys=5, fallback=True)
    assert first.status_code == 200, first.text
    assert first.json() == {"one_time_key_counts": {"signed_curve25519": 5}}
    # Uploading the same device keys again (clients do) changes nothing.
    again = await alice.post("keys/upload", {"device_keys": alice.device.device_keys()})
    assert again.json() == {"one_time_key_counts": {"signed_curve25519": 5}}
    mine = (await alice.query(alice.user_id))["device_keys"][alice.user_id]
    keys = mine[alice.device.device_id]
    assert keys["keys"][f"ed25519:{alice.device.device_id}"] == alice.device.ed25519
    assert verify_signed_json(keys, alice.user_id, f"ed25519:{alice.device.device_id}", alice.device.ed25519)
    assert keys["unsigned"]["device_display_name"]  # my own devices' names are shown to me


@pytest.mark.parametrize(
    "tamper",
    ["signature", "other-device-id", "other-user", "short-key", "one-time-key-signature", "unsigned-one-time-key"],
)
async def test_bad_keys_are_refused_and_nothing_is_written(server: Server, tamper: str) -> None:
    alice = await member_with_device(server)
    body: dict[str, Any] = {"device_keys": alice.device.device_keys()}
    dk = body["device_keys"]
    if tamper == "signature":
        dk["algorithms"] = [*dk["algorithms"], "m.extra"]  # after signing: the signature no longer covers it
    elif tamper == "other-device-id":
        dk["device_id"] = "SOMEONEELSE"
    elif tamper == "other-user":
        dk["user_id"] = "@mallory:" + alice.user_id.split(":", 1)[1]
    elif tamper == "short-key":
        dk["keys"][f"curve25519:{alice.device.device_id}"] = "AAAA"
    elif tamper == "one-time-key-signature":
        otks = alice.device.new_one_time_keys(2)
        first = next(iter(otks))
        otks[first] = {**otks[first], "key": alice.device.curve25519}  # not the key that was signed
        body["one_time_keys"] = otks
    else:
        body["one_time_keys"] = {"signed_curve25519:AAAAAQ": alice.device.curve25519}
    response = await alice.post("keys/upload", body)
    assert response.status_code == 400, response.text
    assert problem_type(response) in ("invalid-keys", "invalid-signature")
    assert (await alice.query(alice.user_id))["device_keys"][alice.user_id] == {}


async def test_a_device_cannot_change_its_identity_keys(server: Server) -> None:
    alice = await published(server)
    from keyhold.sdk.e2ee.device import OlmDevice

    impostor = OlmDevice(alice.user_id, alice.device.device_id)  # same device id, new keys
    response = await alice.post("keys/upload", {"device_keys": impostor.device_keys()})
    assert response.status_code == 400, response.text
    keys = (await alice.query(alice.user_id))["device_keys"][alice.user_id][alice.device.device_id]
    assert keys["keys"][f"ed25519:{alice.device.device_id}"] == alice.device.ed25519


async def test_keys_are_shown_to_conversation_partners_and_friends_only(server: Server) -> None:
    alice, bob = await sharing(server, 2)
    carol = await published(server)  # shares nothing with alice
    dave = await published(server)  # alice's friend
    await alice.client.follow(dave.client.username)
    await dave.client.follow(alice.client.username)
    unknown = "@nobody_" + alice.user_id.split("_", 1)[1]
    seen_by_bob = await bob.query(alice.user_id)
    keys = seen_by_bob["device_keys"][alice.user_id][alice.device.device_id]
    assert keys["keys"][f"curve25519:{alice.device.device_id}"] == alice.device.curve25519
    assert "device_display_name" not in keys.get("unsigned", {})  # names stay with their owner
    assert (await dave.query(alice.user_id))["device_keys"][alice.user_id] != {}
    # A stranger gets exactly the answer an unknown user gets.
    by_carol = await carol.query(alice.user_id, unknown)
    assert by_carol["device_keys"] == {alice.user_id: {}, unknown: {}}
    assert by_carol["master_keys"] == {} and by_carol["failures"] == {}
    # Following one way is not friendship.
    await carol.client.follow(alice.client.username)
    assert (await carol.query(alice.user_id))["device_keys"][alice.user_id] == {}
    # Other servers: Keyhold does not federate, and says so in `failures`.
    elsewhere = await bob.query("@someone:elsewhere.example")
    assert elsewhere["device_keys"] == {"@someone:elsewhere.example": {}}
    assert "elsewhere.example" in elsewhere["failures"]


async def test_one_time_keys_are_handed_out_once_under_concurrent_claims(server: Server) -> None:
    """Twenty claims at once on a device with ten one-time keys: ten get distinct one-time
    keys, the other ten the fallback key, and nothing is handed out twice."""
    owner = await published(server, one_time_keys=10, fallback=True)
    claimers = [await published(server) for _ in range(20)]
    for claimer in claimers:
        await owner.client.follow(claimer.client.username)
        await claimer.client.follow(owner.client.username)
    wanted = {owner.user_id: {owner.device.device_id: "signed_curve25519"}}
    answers = await asyncio.gather(*(c.claim(wanted) for c in claimers))
    handed = [a["one_time_keys"][owner.user_id][owner.device.device_id] for a in answers]
    keys = [next(iter(h.values())) for h in handed]
    fallback = [k for k in keys if k.get("fallback")]
    one_time = [k["key"] for k in keys if not k.get("fallback")]
    assert len(one_time) == 10 and len(set(one_time)) == 10
    assert len(fallback) == 10 and len({k["key"] for k in fallback}) == 1
    for key in keys:
        assert verify_signed_json(key, owner.user_id, f"ed25519:{owner.device.device_id}", owner.device.ed25519)
    counts = await owner.post("keys/upload", {})
    assert counts.json()["one_time_key_counts"]["signed_curve25519"] == 0


async def test_a_stranger_claims_nothing_and_takes_nothing(server: Server) -> None:
    owner = await published(server, one_time_keys=3)
    stranger = await published(server)
    wanted = {owner.user_id: {owner.device.device_id: "signed_curve25519"}}
    assert (await stranger.claim(wanted))["one_time_keys"] == {}
    assert (await owner.post("keys/upload", {})).json()["one_time_key_counts"]["signed_curve25519"] == 3


async def test_too_many_one_time_keys_are_refused(server: Server) -> None:
    alice = await published(server, one_time_keys=50)
    more = await alice.post("keys/upload", {"one_time_keys": alice.device.new_one_time_keys(50)})
    assert more.status_code == 200
    over = await alice.post("keys/upload", {"one_time_keys": alice.device.new_one_time_keys(1)})
    assert over.status_code == 400, over.text
    assert (await alice.post("keys/upload", {})).json()["one_time_key_counts"]["signed_curve25519"] == 100


async def test_cross_signing_keys_are_published_and_replaced_only_with_the_password(server: Server) -> None:
    alice, bob = await sharing(server, 2)
    cross = CrossSigningKeys(alice.user_id)
    first = await alice.post("keys/device_signing/upload", cross.upload_body())
    assert first.status_code == 200, first.text
    by_bob = await bob.query(alice.user_id)
    assert by_bob["master_keys"][alice.user_id]["keys"] == {f"ed25519:{cross.public('master')}": cross.public("master")}
    assert alice.user_id in by_bob["self_signing_keys"]
    assert by_bob["user_signing_keys"] == {}  # a member's user-signing key is theirs alone
    assert alice.user_id in (await alice.query(alice.user_id))["user_signing_keys"]

    other = CrossSigningKeys(alice.user_id)
    refused = await alice.post("keys/device_signing/upload", other.upload_body())
    assert refused.status_code == 401, refused.text
    # Matrix's user-interactive authentication shape: a client knows to ask for the password.
    assert refused.json()["flows"] == [{"stages": ["m.login.password"]}] and refused.json()["session"]
    wrong = await alice.post(
        "keys/device_signing/upload", {**other.upload_body(), "auth": {"type": "m.login.password", "password": "not it at all"}}
    )
    assert wrong.status_code in (401, 403), wrong.text
    assert (await bob.query(alice.user_id))["master_keys"][alice.user_id]["keys"] == {
        f"ed25519:{cross.public('master')}": cross.public("master")
    }
    replaced = await alice.post(
        "keys/device_signing/upload", {**other.upload_body(), "auth": {"type": "m.login.password", "password": PASSWORD}}
    )
    assert replaced.status_code == 200, replaced.text
    assert cross.public("master") not in str((await bob.query(alice.user_id))["master_keys"])


async def test_a_self_signing_key_not_signed_by_the_master_key_is_refused(server: Server) -> None:
    alice = await published(server)
    cross, stray = CrossSigningKeys(alice.user_id), CrossSigningKeys(alice.user_id)
    body = {**cross.upload_body(), "self_signing_key": stray.key_object("self_signing")}
    response = await alice.post("keys/device_signing/upload", body)
    assert response.status_code == 400 and problem_type(response) == "invalid-signature", response.text
    assert (await alice.query(alice.user_id))["master_keys"] == {}


async def test_added_signatures_are_checked_and_shown_to_whom_they_concern(server: Server) -> None:
    alice, bob, carol = await sharing(server, 3)
    alice_cross, bob_cross = CrossSigningKeys(alice.user_id), CrossSigningKeys(bob.user_id)
    for member, cross in ((alice, alice_cross), (bob, bob_cross)):
        assert (await member.post("keys/device_signing/upload", cross.upload_body())).status_code == 200

    # Alice's self-signing key signs her device: everyone sharing a conversation sees it.
    device_keys = alice.device.device_keys()
    signed_device = alice_cross.sign_with("self_signing", device_keys)
    # Alice's user-signing key signs Bob's master key: only Alice sees that signature.
    bob_master = (await alice.query(bob.user_id))["master_keys"][bob.user_id]
    signed_master = alice_cross.sign_with("user_signing", bob_master)
    forged = copy.deepcopy(signed_master)
    forged["signatures"][alice.user_id][f"ed25519:{alice_cross.public('user_signing')}"] = "A" * 86
    response = await alice.post(
        "keys/signatures/upload",
        {alice.user_id: {alice.device.device_id: signed_device}, bob.user_id: {bob_cross.public("master"): signed_master}},
    )
    assert response.status_code == 200 and response.json() == {"failures": {}}, response.text

    ssk_id = f"ed25519:{alice_cross.public('self_signing')}"
    seen = (await carol.query(alice.user_id))["device_keys"][alice.user_id][alice.device.device_id]
    assert verify_signed_json(seen, alice.user_id, ssk_id, alice_cross.public("self_signing"))
    usk_id = f"ed25519:{alice_cross.public('user_signing')}"
    assert usk_id in str((await alice.query(bob.user_id))["master_keys"][bob.user_id]["signatures"])
    assert usk_id not in str((await carol.query(bob.user_id))["master_keys"][bob.user_id])
    assert usk_id not in str((await bob.query(bob.user_id))["master_keys"][bob.user_id])

    # A signature that does not verify is a failure for that object alone.
    bad = await carol.post("keys/signatures/upload", {bob.user_id: {bob_cross.public("master"): forged}})
    assert bad.status_code == 200
    assert bad.json()["failures"][bob.user_id][bob_cross.public("master")]["errcode"] == "M_INVALID_SIGNATURE"


async def test_removing_a_device_removes_its_keys(server: Server) -> None:
    alice, bob = await sharing(server, 2)
    phone = await Client.login(server.url, alice.client.username, PASSWORD, device_id="PHONE", e2ee=False)
    from keyhold.sdk.e2ee.device import OlmDevice

    phone_device = OlmDevice(alice.user_id, "PHONE")
    body = {"device_keys": phone_device.device_keys(), "one_time_keys": phone_device.new_one_time_keys(3)}
    assert (await raw(phone, "POST", "/e2ee/keys/upload", json=body)).status_code == 200
    assert set((await bob.query(alice.user_id))["device_keys"][alice.user_id]) == {alice.device.device_id, "PHONE"}
    await alice.client.remove_device("PHONE", PASSWORD)
    assert set((await bob.query(alice.user_id))["device_keys"][alice.user_id]) == {alice.device.device_id}
    assert (await bob.claim({alice.user_id: {"PHONE": "signed_curve25519"}}))["one_time_keys"] == {}
    await phone.close()


async def test_only_signed_in_members_with_a_live_token_reach_the_key_api(server: Server) -> None:
    alice = await published(server)
    await alice.client.logout()
    for path, body in (
        ("keys/upload", {}),
        ("keys/query", {"device_keys": {}}),
        ("keys/claim", {"one_time_keys": {}}),
        ("keys/device_signing/upload", {}),
        ("keys/signatures/upload", {}),
    ):
        revoked = await alice.post(path, body)
        assert revoked.status_code == 401, (path, revoked.text)
        anonymous = await raw(Client(server.url, "x", "not-a-token"), "POST", f"/e2ee/{path}", json=body)
        assert anonymous.status_code == 401, (path, anonymous.text)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("keys/query", {"device_keys": {"@a\x00b:keyhold.local": []}}),
        ("keys/query", {"device_keys": {"not-an-id": []}}),
        ("keys/query", {"device_keys": ["@a:keyhold.local"]}),
        ("keys/claim", {"one_time_keys": {"@abc:keyhold.local": {"DEV\x01": "signed_curve25519"}}}),
        ("keys/claim", {"one_time_keys": {"@abc:keyhold.local": {"DEV": "signed curve"}}}),
        ("keys/upload", {"device_keys": "nope"}),
        ("keys/upload", {"one_time_keys": {"\x00:AA": "x"}}),
        ("keys/upload", '{"one_time_keys": {"signed_curve25519:AA": {"key": "\\ud800"}}}'),
        ("keys/upload", '{"device_keys": {"user_id": "\\ud800"}}'),
        ("keys/upload", "{not json"),
        ("keys/device_signing/upload", {"master_key": {"user_id": "@x:keyhold.local", "usage": "master"}}),
        ("keys/signatures/upload", ["x"]),
    ],
)
async def test_hostile_bodies_get_a_clear_4xx(server: Server, path: str, body: Any) -> None:
    alice = await published(server, one_time_keys=1)
    if isinstance(body, str):  # JSON text as sent, such as a lone surrogate escaped
        headers = {"content-type": "application/json"}
        response = await raw(alice.client, "POST", f"/e2ee/{path}", content=body, headers=headers)
    else:
        response = await alice.post(path, body)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await alice.post("keys/upload", {})).json()["one_time_key_counts"]["signed_curve25519"] == 1


def test_unpadded_base64_round_trips() -> None:
    assert decode_base64("AAAA") == b"\x00\x00\x00"
    with pytest.raises(ValueError):
        decode_base64("A")
    with pytest.raises(ValueError):
        decode_base64("AA-_")




async def test_a_former_member_loses_sight_of_the_keys(server: Server) -> None:
    alice, bob, _carol = await sharing(server, 3)
    conversation = (await bob.client.conversations())[0]
    assert (await bob.query(alice.user_id))["device_keys"][alice.user_id] != {}
    await bob.client.leave(conversation.id)
    assert (await bob.query(alice.user_id))["device_keys"][alice.user_id] == {}
    assert (await bob.claim({alice.user_id: {alice.device.device_id: "signed_curve25519"}}))["one_time_keys"] == {}
