"""Devices (issue 8, item 1): each sign-in names a device, a token belongs to one; a member
lists, renames and removes their devices. Tried as the owner, as another member, without a
token, with a revoked one and with hostile ids and names, on both backends."""

from __future__ import annotations

import asyncio

import pytest

from conftest import PASSWORD, Server, new_member, raw, unique
from db_snapshot import query
from hostile_helpers import assert_problem, http, open_stream
from keyhold.sdk import Client, KeyholdError


async def test_a_sign_in_names_its_device_and_the_member_lists_them(server: Server) -> None:
    alice = await new_member(server)
    assert alice.device_id and alice.device_id.isalpha() and alice.device_id.isupper()  # made up
    assert alice.user_id == f"@{alice.username}:keyhold.local"
    phone = await Client.login(server.url, alice.username, PASSWORD, device_id="PHONE1", device_name="My phone")
    assert phone.device_id == "PHONE1"

    listed = await phone.devices()
    assert [d["device_id"] for d in listed] == [alice.device_id, "PHONE1"]
    assert [d["current"] for d in listed] == [False, True]
    assert listed[1]["display_name"] == "My phone"
    assert listed[0]["display_name"] == alice.device_id  # unnamed: its id
    assert all(d["created_at"] and d["last_seen_at"] for d in listed)
    # Each member sees only their own.
    bob = await new_member(server)
    assert [d["device_id"] for d in await bob.devices()] == [bob.device_id]
    for client in (alice, phone, bob):
        await client.close()


async def test_signing_in_again_on_a_device_ends_its_earlier_token(server: Server) -> None:
    alice = await new_member(server)
    first = await Client.login(server.url, alice.username, PASSWORD, device_id="LAPTOP")
    stream = await open_stream(server, first.token)

    again = await Client.login(server.url, alice.username, PASSWORD, device_id="LAPTOP", device_name="Laptop")

    code, _reason = await stream.closed()
    assert code == 4401
    with pytest.raises(KeyholdError) as refused:
        await first.me()
    assert refused.value.status == 401
    assert (await again.me())["username"] == alice.username
    laptops = [d for d in await again.devices() if d["device_id"] == "LAPTOP"]
    assert len(laptops) == 1 and laptops[0]["display_name"] == "Laptop"  # one device, renamed
    # The other device was not touched.
    assert (await alice.me())["username"] == alice.username
    for client in (alice, first, again):
        await client.close()


async def test_rename_and_remove_a_device(server: Server) -> None:
    alice = await new_member(server)
    tablet = await Client.login(server.url, alice.username, PASSWORD, device_id="TABLET")
    tablet_stream = await open_stream(server, tablet.token)
    kept_stream = await open_stream(server, alice.token)

    renamed = await alice.rename_device("TABLET", "  Kitchen tablet ")
    assert renamed["display_name"] == "Kitchen tablet" and renamed["current"] is False

    with pytest.raises(KeyholdError) as wrong:
        await alice.remove_device("TABLET", "not the password")
    assert wrong.value.status == 403
    assert (await tablet.me())["username"] == alice.username  # nothing happened

    await alice.remove_device("TABLET", PASSWORD)

    code, _reason = await tablet_stream.closed()
    assert code == 4401
    with pytest.raises(KeyholdError) as gone:
        await tablet.me()
    assert gone.value.status == 401
    assert [d["device_id"] for d in await alice.devices()] == [alice.device_id]
    # The device that removed it is still signed in, and its stream still open.
    await kept_stream.send({"type": "ping", "ref": "still-here"})
    assert (await kept_stream.next_frame("pong"))["ref"] == "still-here"
    await kept_stream.close()
    for client in (alice, tablet):
        await client.close()


async def test_removing_this_device_signs_it_out(server: Server) -> None:
    alice = await new_member(server)
    await alice.remove_device(alice.device_id or "", PASSWORD)
    with pytest.raises(KeyholdError) as signed_out:
        await alice.devices()
    assert signed_out.value.status == 401
    await alice.close()


async def test_another_members_device_is_not_found_and_untouched(server: Server) -> None:
    alice, mallory = await new_member(server), await new_member(server)
    target = alice.device_id or ""
    for method, body in (("PATCH", {"display_name": "pwned"}), ("DELETE", {"password": PASSWORD})):
        response = await raw(mallory, method, f"/devices/{target}", json=body)
        assert_problem(response, 404)
    response = await raw(mallory, "PATCH", "/devices/NOSUCHDEVICE", json={"display_name": "x"})
    assert assert_problem(response, 404)["detail"] == "no such device of yours"
    assert [d["display_name"] for d in await alice.devices()] == [target]
    assert (await alice.me())["username"] == alice.username
    await alice.close()
    await mallory.close()


async def test_device_routes_need_a_live_token(server: Server) -> None:
    alice = await new_member(server)
    async with http(server) as anonymous:
        assert_problem(await anonymous.get("/devices"), 401)
        assert_problem(await anonymous.patch(f"/devices/{alice.device_id}", json={"display_name": "x"}), 401)
    revoked = await Client.login(server.url, alice.username, PASSWORD)
    await revoked.logout()
    assert_problem(await raw(revoked, "GET", "/devices"), 401)
    assert_problem(await raw(revoked, "DELETE", f"/devices/{alice.device_id}", json={"password": PASSWORD}), 401)
    assert alice.device_id in [d["device_id"] for d in await alice.devices()]
    await alice.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"device_id": "a\u0000b"}, "device_id"),
        ({"device_id": "with space"}, "device_id"),
        ({"device_id": "../etc"}, "device_id"),
        ({"device_id": "x" * 65}, "device_id"),
        ({"device_id": ""}, "device_id"),
        ({"device_name": "a\u0000b"}, "device_name"),
        ({"device_name": "x" * 101}, "device_name"),
        ({"device_id": 12}, "device_id"),
    ],
)
async def test_hostile_device_ids_and_names_at_sign_in_are_refused(server: Server, body: dict[str, object], field: str) -> None:
    name = unique("dv")
    await Client.register(server.url, name, PASSWORD, "1990-05-17", "us")
    async with http(server) as anonymous:
        response = await anonymous.post("/sessions", json={"username": name, "password": PASSWORD, **body})
    problem = assert_problem(response, 422)
    assert field in problem["detail"] and "\x00" not in problem["detail"]


async def test_hostile_renames_are_refused_and_change_nothing(server: Server) -> None:
    alice = await new_member(server)
    for name in ("a\u0000b", "\u001b[31mred", "", "x" * 101):
        response = await raw(alice, "PATCH", f"/devices/{alice.device_id}", json={"display_name": name})
        assert_problem(response, 422)
    response = await raw(alice, "PATCH", f"/devices/{alice.device_id}", json={"display_name": "   "})
    assert_problem(response, 422)
    assert [d["display_name"] for d in await alice.devices()] == [alice.device_id]
    await alice.close()


async def test_concurrent_sign_ins_on_one_new_device_make_one_device(server: Server) -> None:
    alice = await new_member(server)
    clients = await asyncio.gather(
        *(Client.login(server.url, alice.username, PASSWORD, device_id="RACE") for _ in range(5)),
        return_exceptions=True,
    )
    signed_in = [c for c in clients if isinstance(c, Client)]
    assert signed_in, clients
    assert [d["device_id"] for d in await alice.devices()].count("RACE") == 1
    # A device holds one token: at most one of the racing sign-ins is still live.
    live = 0
    for client in signed_in:
        try:
            await client.me()
            live += 1
        except KeyholdError as exc:
            assert exc.status == 401
    assert live == 1, live
    for client in (alice, *signed_in):
        await client.close()


async def test_deleting_the_account_forgets_its_devices(server: Server) -> None:
    """What an account leaves behind (docs/data-paths.md) includes no device names: the rows
    go with it, read here from the database itself."""
    alice = await new_member(server)
    user_id = int((await alice.me())["id"])
    await Client.login(server.url, alice.username, PASSWORD, device_id="NAMED", device_name="Alice's phone")
    stored_names = await asyncio.to_thread(device_names_of, server, user_id)
    assert sorted(stored_names) == sorted(["Alice's phone", str(alice.device_id)])  # an unnamed device: its id
    await alice.delete_account(PASSWORD)
    assert await asyncio.to_thread(device_names_of, server, user_id) == []
    await alice.close()


def device_names_of(server: Server, user_id: int) -> list[str]:
    """The device names stored for a user, read from the database itself."""
    return [row[0] for row in query(server, "SELECT display_name FROM devices WHERE user_id = ?", user_id)]


async def test_forty_concurrent_removals_of_one_device_remove_it_once(server: Server) -> None:
    """Forty requests remove the same device at once: one succeeds, every other one is told
    it is gone (or, past the bounded password queue, to retry), and no request fails with an
    error of the server's own."""
    alice = await new_member(server)
    target = await Client.login(server.url, alice.username, PASSWORD, device_id="TARGET")
    results = await asyncio.gather(
        *(raw(alice, "DELETE", "/devices/TARGET", json={"password": PASSWORD}) for _ in range(40))
    )
    statuses = [r.status_code for r in results]
    assert statuses.count(204) == 1, statuses
    assert set(statuses) <= {204, 404, 503}, statuses
    assert "TARGET" not in [d["device_id"] for d in await alice.devices()]
    assert (await raw(target, "GET", "/account")).status_code == 401
