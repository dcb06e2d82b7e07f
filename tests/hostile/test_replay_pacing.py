"""A stream's replay goes at its client's pace: `Delivery.deliver` pushes each frame of a member's
history only once `room` says there is room (the stream's outbox is down to `REPLAY_AHEAD`
frames and bytes), and so reads the next page only as the client takes the last.
Before, a stream connecting with `?since=0` read the whole history into memory at once, for a
client that read none of it too (12 MB of history: the server grew by ~26 MB per socket).

In-process, on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from conftest import PASSWORD, unique
from hostile_helpers import service_in_process
from keyhold.api.stream import REPLAY_AHEAD_BYTES, Connection
from keyhold.app import Keyhold
from keyhold.bus.local import MAX_PENDING_BYTES
from keyhold.core.accounts import Member
from keyhold.core.messages import SendRequest

PAGE = 5
MESSAGES = 12


@pytest.fixture(params=["sqlite", "postgres"])
async def keyhold(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Keyhold]:
    async with service_in_process(tmp_path / "kh", request.param, replay_page_size=str(PAGE)) as svc:
        yield svc


async def member(svc: Keyhold) -> Member:
    username = unique("pace")
    await svc.accounts.register(username, PASSWORD, "1990-05-17", "us")
    token = (await svc.accounts.login(username, PASSWORD, address="in-process"))["token"]
    return await svc.accounts.authenticate(token)


async def a_reader_with_history(svc: Keyhold) -> Member:
    """A member with more than two pages of history (a conversation and its messages)."""
    alice, bob = await member(svc), await member(svc)
    view, _ = await svc.conversations.start(alice, [bob.username], "standard", "", None)
    for i in range(MESSAGES):
        await svc.messages.send(
            SendRequest(alice.id, alice.username, int(view["id"]), f"message {i}", None, session=alice.session)
        )
    return bob


async def settle(condition: Callable[[], bool]) -> None:
    """Until `condition` holds; fails after 10 s (that bounds liveness, it times nothing)."""
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


async def test_the_replay_pushes_a_frame_only_as_room_is_made(keyhold: Keyhold) -> None:
    """Each frame waits for room, across the ends of pages: a stream holds what its client
    takes, not a page (500 frames, which can be 128 MB)."""
    bob = await a_reader_with_history(keyhold)
    pushed: list[bytes] = []
    made = asyncio.Event()
    asked = 0
    free = False

    async def room() -> bool:
        nonlocal asked
        asked += 1
        if not free:
            await made.wait()
            made.clear()
        return True

    delivery = asyncio.create_task(keyhold.delivery.deliver(bob, 0, 0, pushed.append, room))
    try:
        for step in range(2 * PAGE + 1):  # past the ends of two pages
            await settle(lambda step=step: asked == step + 1)  # type: ignore[misc]
            await asyncio.sleep(0.02)  # what a replay that did not wait would push meanwhile
            assert len(pushed) == step
            made.set()
        free = True
        made.set()
        await settle(lambda: any(orjson.loads(frame)["type"] == "ready" for frame in pushed))
        replayed = [orjson.loads(frame) for frame in pushed]
        kinds = [frame["type"] for frame in replayed]
        assert kinds.count("ready") == 1 and kinds.index("ready") > 2 * PAGE
        texts = [f["message"]["text"] for f in replayed if f["type"] == "message.new"]
        assert texts == [f"message {i}" for i in range(MESSAGES)]  # all of it, in order, once
        seqs = [f["seq"] for f in replayed if "seq" in f and f["type"] != "ready"]
        assert seqs == sorted(set(seqs))
    finally:
        delivery.cancel()
        await asyncio.gather(delivery, return_exceptions=True)


async def test_no_room_ends_the_replay(keyhold: Keyhold) -> None:
    """The connection is ending: nothing more is pushed, and the delivery returns."""
    bob = await a_reader_with_history(keyhold)
    pushed: list[bytes] = []

    async def ending() -> bool:
        return False

    await asyncio.wait_for(keyhold.delivery.deliver(bob, 0, 0, pushed.append, ending), 10)
    assert pushed == []


WIDE_TEXT = "".join(chr(0x20000 + i) for i in range(3990))  # ~16 KB a message event


class HeldSocket:
    """What `Connection` sends through, as a client that takes nothing until `gate` opens."""

    client = None

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[dict[str, object]] = []

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(orjson.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.sent.append({"type": "closed", "code": code})


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_events_waiting_behind_a_replay_never_cut_off_a_client_that_keeps_up(
    tmp_path: Path, backend: str
) -> None:
    """When a replay ends, what the bus kept for it meanwhile (up to `MAX_PENDING_BYTES`) goes to
    the stream at once, on top of what the replay keeps ahead (up to `REPLAY_AHEAD_BYTES`): a
    stream may hold that much, so a client that has only not yet read it is not cut off (4408).
    Before, the bus kept up to 4 MiB, and this hand-over cut the stream off (the outbox's bound)."""
    async with service_in_process(tmp_path / "kh", backend) as svc:
        alice, bob = await member(svc), await member(svc)
        view, _ = await svc.conversations.start(alice, [bob.username], "standard", "", None)
        conversation_id = int(view["id"])

        async def send(text: str) -> None:
            await svc.messages.send(
                SendRequest(alice.id, alice.username, conversation_id, text, None, session=alice.session)
            )

        event_bytes = len(WIDE_TEXT.encode()) + 512
        history = REPLAY_AHEAD_BYTES // event_bytes - 2  # one page, all of it kept ahead
        for i in range(history):
            await send(f"old {i} {WIDE_TEXT}")
        live = (MAX_PENDING_BYTES - 64 * 1024) // event_bytes  # just under the bus's bound
        socket = HeldSocket()
        stream = Connection(socket, svc, bob)  # type: ignore[arg-type]
        asked = False

        async def room() -> bool:
            nonlocal asked
            if not asked:  # the page is read: what is sent now waits behind the replay
                asked = True
                for i in range(live):
                    await send(f"new {i} {WIDE_TEXT}")
            return await stream.room()

        sender = asyncio.create_task(stream.sender())
        delivery = asyncio.create_task(svc.delivery.deliver(bob, 0, stream.origin, stream.push, room))
        try:
            await settle(lambda: stream.closed or len(stream.outbox) >= history + live)
            assert not stream.closed, "cut off at the hand-over"
            socket.gate.set()
            await settle(lambda: stream.closed or len(socket.sent) >= history + live + 1)
            texts = [f["message"]["text"] for f in socket.sent if f["type"] == "message.new"]  # type: ignore[index]
            expected = [f"old {i}" for i in range(history)] + [f"new {i}" for i in range(live)]
            assert [t.split(" ", 2)[0] + " " + t.split(" ", 2)[1] for t in texts] == expected
            assert not stream.closed
        finally:
            stream.end()
            for task in (delivery, sender):
                task.cancel()
            await asyncio.gather(delivery, sender, return_exceptions=True)
