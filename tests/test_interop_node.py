"""Interoperability with Matrix's own crypto core: devices built on OlmMachine
(@matrix-org/matrix-sdk-crypto-wasm 18.9.0, the crypto of Element, in Node; interop/device.mjs)
publish keys, set up Olm sessions, share Megolm room keys and exchange end-to-end-encrypted
messages through a real Keyhold server, on both databases. The server is a black box here:
only HTTP and the WebSocket stream. Each test asserts on the plaintexts the receiving devices
decrypt, so any break in the key directory, to-device delivery, the stream or e2ee messages
fails it.

Needs Node.js 20+ and npm: `npm ci` runs in interop/ when its node_modules is missing or older
than package-lock.json. Without Node the tests fail rather than skip (`make test` runs them)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from conftest import PASSWORD, Server, unique
from interop_helpers import NodeDevice, ensure_node_modules
from keyhold.sdk import Client

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="session")
def node() -> Iterator[str]:
    problem = None
    try:
        executable = ensure_node_modules()
    except RuntimeError as error:
        problem = str(error)
    if problem:  # a failure, not a skip: `make test` must run these tests
        pytest.fail(problem, pytrace=False)
    yield executable


async def register(server: Server, count: int) -> list[Client]:
    # e2ee=False: these SDK sessions only set things up; the members' devices here are the
    # Node ones, and they must be the only devices with keys.
    return [
        await Client.register(
            server.url, unique("n"), PASSWORD, birthdate="1990-05-17", region="us", e2ee=False
        )
        for _ in range(count)
    ]


@contextlib.asynccontextmanager
async def node_devices(
    node: str, server: Server, members: list[Client], trust: str
) -> AsyncIterator[list[NodeDevice]]:
    """One signed-in Node device per member, with its keys published; closed afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        devices = []
        for index, member in enumerate(members):
            device = await NodeDevice.start(node, f"{chr(ord('A') + index)}:{member.username}")
            stack.push_async_callback(device.close)
            login = await device.login(server.url, member.username, PASSWORD, f"NODE{index}", trust=trust)
            assert (
                login["user_id"] == f"@{member.username}:keyhold.local"
                and login["device_id"] == f"NODE{index}"
            )
            assert login["cross_signing"] is (trust == "cross-signed")
            devices.append(device)
        for member in members:
            stack.push_async_callback(member.close)
        yield devices


async def send(sender: NodeDevice, conversation_id: int, text: str, key_to: list[NodeDevice]) -> None:
    """Sends `text`; the Megolm room key must go, over Olm, to exactly the devices `key_to`:
    every other member's device for the sender's first message, nobody when the session is
    reused (the members' SDK sessions published no keys, so they never get one)."""
    sent = await sender.send(conversation_id, text)
    assert isinstance(sent["message_id"], int) and sent["event_id"] == f"${sent['message_id']}"
    assert sent["shared_with"] == sorted(f"{d.user_id}/{d.device_id}" for d in key_to), sent


@pytest.mark.parametrize("trust", ["untrusted", "cross-signed"])
async def test_two_node_devices_talk_one_to_one(server: Server, node: str, trust: str) -> None:
    alice, bob = await register(server, 2)
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    async with node_devices(node, server, [alice, bob], trust) as (a, b):
        await a.sync()
        await send(a, conversation.id, f"hello bob, from node A ({trust}) ✓", [b])
        synced = await b.sync()
        assert synced["room_keys"] == 1 and not synced["to_device_problems"], synced
        assert await b.texts(conversation.id) == [(a.user_id, f"hello bob, from node A ({trust}) ✓")]

        await send(b, conversation.id, "hi alice — node B here", [a])
        await a.sync()
        thread = [(a.user_id, f"hello bob, from node A ({trust}) ✓"), (b.user_id, "hi alice — node B here")]
        assert await a.texts(conversation.id) == thread
        assert await b.texts(conversation.id) == thread

        # Each message names its sender's device. Without cross-signing every device, this one
        # too, is unsigned (a red shield, though readable under Untrusted); with it, each device
        # is signed by its owner's identity, which is all CrossSignedOrLegacy asks for.
        shield = (
            {"color": "Red", "code": "UnsignedDevice"}
            if trust == "untrusted"
            else {"color": "None", "code": None}
        )
        for message, sender in zip(await a.read(conversation.id), (a, b), strict=True):
            assert message["sender_device"] == sender.device_id
            assert message["shield"] == shield, message
        known = await b.call("devices", user_id=a.user_id)
        assert [(d["device_id"], d["cross_signed_by_owner"]) for d in known["devices"]] == [
            (a.device_id, trust == "cross-signed")
        ], known

        # A second message each way, on the same Megolm sessions (shareRoomKey before each
        # encrypt reuses the session when nothing changed, so no room key goes out).
        await send(a, conversation.id, "second from A", [])
        await send(b, conversation.id, "second from B", [])
        await a.sync()
        await b.sync()
        thread += [(a.user_id, "second from A"), (b.user_id, "second from B")]
        assert await a.texts(conversation.id) == thread
        assert await b.texts(conversation.id) == thread


@pytest.mark.parametrize("trust", ["untrusted", "cross-signed"])
async def test_three_node_devices_in_a_group(server: Server, node: str, trust: str) -> None:
    members = await register(server, 3)
    conversation = await members[0].start_conversation(
        [m.username for m in members[1:]], encryption="e2ee", kind="group"
    )
    async with node_devices(node, server, members, trust) as devices:
        for device in devices:
            await device.sync()
        expected = []
        for index, sender in enumerate(devices):
            text = f"group message {index} from {sender.name}"
            await send(sender, conversation.id, text, [d for d in devices if d is not sender])
            expected.append((sender.user_id, text))
            for other in devices:
                if other is not sender:
                    synced = await other.sync()
                    assert not synced["to_device_problems"], synced
                    # Each reader sees everything sent so far, its own messages included.
                    assert await other.texts(conversation.id) == expected
        for device in devices:
            assert await device.texts(conversation.id) == expected


# -- Python SDK devices (vodozemac) and Node devices (OlmMachine) together ----------------------


async def test_a_node_device_and_a_python_device_talk_one_to_one(server: Server, node: str) -> None:
    (alice,) = await register(server, 1)
    bob = await Client.register(server.url, unique("p"), PASSWORD, birthdate="1990-05-17")  # a Python e2ee device
    conversation = await alice.start_conversation([bob.username], encryption="e2ee")
    async with node_devices(node, server, [alice], "untrusted") as (a,):
        await a.sync()
        assert bob.user_id is not None and bob.device_id is not None
        python_device = f"{bob.user_id}/{bob.device_id}"
        sent = await a.send(conversation.id, "from Element's crypto core to vodozemac ✓")
        assert sent["shared_with"] == [python_device], sent
        assert [m.text for m in await bob.history(conversation.id)] == ["from Element's crypto core to vodozemac ✓"]

        await bob.send(conversation.id, "and back, from vodozemac")
        synced = await a.sync()
        assert synced["room_keys"] == 1 and not synced["to_device_problems"], synced
        assert await a.texts(conversation.id) == [
            (a.user_id, "from Element's crypto core to vodozemac ✓"),
            (bob.user_id, "and back, from vodozemac"),
        ]
        # Both sides keep their sessions: a second message each way.
        await a.send(conversation.id, "again from node")
        await bob.send(conversation.id, "again from python")
        await a.sync()
        texts = [m.text for m in await bob.history(conversation.id)]
        assert texts == [
            "from Element's crypto core to vodozemac ✓", "and back, from vodozemac", "again from node", "again from python",
        ]  # fmt: skip
        assert [t for _, t in await a.texts(conversation.id)] == texts
    await bob.close()


async def test_a_group_of_one_node_and_two_python_devices(server: Server, node: str) -> None:
    (alice,) = await register(server, 1)
    pythons = [await Client.register(server.url, unique("p"), PASSWORD, birthdate="1990-05-17") for _ in range(2)]
    conversation = await alice.start_conversation([p.username for p in pythons], encryption="e2ee", kind="group")
    async with node_devices(node, server, [alice], "untrusted") as (a,):
        await a.sync()
        expected: list[str] = []
        await a.send(conversation.id, "node says hi to the group")
        expected.append("node says hi to the group")
        for index, member in enumerate(pythons):
            await member.send(conversation.id, f"python {index} says hi")
            expected.append(f"python {index} says hi")
        await a.sync()
        assert [t for _, t in await a.texts(conversation.id)] == expected
        for member in pythons:
            assert [m.text for m in await member.history(conversation.id)] == expected
    for member in pythons:
        await member.close()
