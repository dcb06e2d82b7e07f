"""What one member's streams may hold of a server: at most `max_streams_per_member` open at once
(the next is refused with a 429 error frame and close code 4429), and a stream whose client does
not keep up with live events is cut off once it holds more than `MAX_OUTBOX_BYTES` of them (4408:
it reconnects with `since` and gets the rest from storage, nothing lost). Before, a member could
open streams without end, and a stream kept up to 20,000 frames for a client that read a trickle:
of 16 KB texts, 320 MB; of end-to-end encrypted ones (up to 256 KiB a frame), gigabytes.

On both databases. This module's server does not scan (`KEYHOLD_SCANNING=off`): the limits are
the stream's, and the long texts below would only make each send slower."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from conftest import Server, new_member, start_server, stop_server
from hostile_helpers import RawStream, http, login_token, open_stream, ws_url
from keyhold.api.stream import MAX_OUTBOX_BYTES
from keyhold.sdk import Client

MAX_STREAMS = 3
# Live messages of ~16 KB each (3,990 four-byte characters, about the longest a text may be),
# more in all than the cap and the kernel's buffers between the server and a client that reads
# little: its receive buffer is 64 KiB, the server's send buffer grows to the largest
# `net.ipv4.tcp_wmem` allows (4 MB by default).
WIDE_TEXT = "".join(chr(0x20000 + i) for i in range(3990))
SEND_BUFFER_MOST = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
BIG_MESSAGES = (MAX_OUTBOX_BYTES + SEND_BUFFER_MOST + 2 * 1024 * 1024) // len(WIDE_TEXT.encode()) + 1


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"KEYHOLD_MAX_STREAMS_PER_MEMBER": str(MAX_STREAMS), "KEYHOLD_SCANNING": "off"}
    srv = start_server(tmp_path_factory.mktemp("home") / "kh", request.param, env=env)
    yield srv
    stop_server(srv)


async def opened(server: Server, token: str) -> RawStream | tuple[int, dict[str, Any]]:
    """A stream that reached `ready`, or how it was refused: its close code and error frame."""
    ws = await websockets.connect(ws_url(server), additional_headers={"Authorization": f"Bearer {token}"})
    stream = RawStream(ws)
    async with asyncio.timeout(10):
        first = orjson.loads(await stream.ws.recv())
    if first["type"] == "ready":
        return stream
    assert first["type"] == "error", first
    code, _reason = await stream.closed()
    return code, first["problem"]


def assert_too_many(refusal: RawStream | tuple[int, dict[str, Any]]) -> None:
    assert isinstance(refusal, tuple), "a stream over the cap was opened"
    code, problem = refusal
    assert code == 4429
    assert problem["status"] == 429 and problem["title"] == "Too many open streams"
    assert f"at most {MAX_STREAMS} streams" in problem["detail"], problem


async def once_a_place_frees(server: Server, token: str) -> RawStream:
    """A stream opened as soon as the server has seen one of the member's streams end (refused
    with 4429 until then; bounds liveness: 10 s)."""
    async with asyncio.timeout(10):
        while not isinstance(again := await opened(server, token), RawStream):
            assert_too_many(again)
            await asyncio.sleep(0.05)
    return again


async def test_a_member_may_keep_only_so_many_streams_open(server: Server) -> None:
    """The cap is per member, whichever of their sessions opens them; another member is not
    touched by it; a stream closed makes room for a new one."""
    alice, bob = await new_member(server), await new_member(server)
    second_session = await login_token(server, alice.username)
    streams = [await open_stream(server, alice.token) for _ in range(MAX_STREAMS - 1)]
    streams.append(await open_stream(server, second_session))
    try:
        assert_too_many(await opened(server, alice.token))
        assert_too_many(await opened(server, second_session))
        bobs = await open_stream(server, bob.token)  # another member: their own streams
        await bobs.close()
        await streams.pop().close()
        streams.append(await once_a_place_frees(server, alice.token))
    finally:
        for stream in streams:
            await stream.close()
        await alice.close()
        await bob.close()


async def test_streams_closed_by_a_logout_free_their_places_once(server: Server) -> None:
    """A logout's streams are closed by the revocation watch, then their routes end: each frees
    one place, not two. Before, both counted, and each round of opening streams on a new session
    and logging it out made room for that many more, without end."""
    alice = await new_member(server)
    other_session = await login_token(server, alice.username)
    kept = [await open_stream(server, alice.token) for _ in range(MAX_STREAMS - 1)]
    ending = await open_stream(server, other_session)
    try:
        async with http(server, other_session) as client:
            assert (await client.delete("/sessions/current")).status_code == 204
        assert (await ending.closed())[0] == 4401
        # Time for the route of the closed stream to end too (where the second count was).
        await asyncio.sleep(0.5)
        again = await opened(server, alice.token)
        assert isinstance(again, RawStream), "the place of the stream logged out did not free"
        kept.append(again)
        assert_too_many(await opened(server, alice.token))
    finally:
        for stream in kept:
            await stream.close()
        await alice.close()


async def test_a_revoked_stream_counts_until_its_connection_ends(server: Server) -> None:
    """A logout closes its streams, but one whose client takes nothing stays connected until the
    client goes or the stall rule drops it, holding what is queued for it: it keeps its place
    until then. Before, the watch freed the place at the logout, so logging in, filling streams
    and logging out again held ever more of them."""
    alice, bob, conversation_id = await two_members(server)
    await send_big_messages(alice, conversation_id)  # Bob's history: more than a stream sends at once
    doomed_session = await login_token(server, bob.username)
    stuck = await a_client_that_reads_little(server, doomed_session, "since=0")  # a replay it never reads
    kept = [await open_stream(server, bob.token) for _ in range(MAX_STREAMS - 1)]
    try:
        async with http(server, doomed_session) as client:
            assert (await client.delete("/sessions/current")).status_code == 204
        await asyncio.sleep(1.0)  # the watch's sweep (every 0.25 s) has closed it by now
        assert_too_many(await opened(server, bob.token))
        stuck.transport.abort()  # the client goes
        kept.append(await once_a_place_frees(server, bob.token))
    finally:
        for stream in kept:
            await stream.close()
        await asyncio.gather(alice.close(), bob.close())


async def test_streams_opened_at_once_never_pass_the_cap(server: Server) -> None:
    alice = await new_member(server)
    results = await asyncio.gather(*(opened(server, alice.token) for _ in range(40)))
    streams = [r for r in results if isinstance(r, RawStream)]
    try:
        assert len(streams) == MAX_STREAMS
        for refusal in results:
            if not isinstance(refusal, RawStream):
                assert_too_many(refusal)
    finally:
        for stream in streams:
            await stream.close()
        await alice.close()
    assert "Traceback" not in server.log()


async def test_the_sdk_events_wait_for_a_free_stream(server: Server) -> None:
    """`events()` refused with 4429 keeps trying and, once a stream closes, replays from where
    it was: the message sent meanwhile comes."""
    alice, bob, conversation_id = await two_members(server)
    streams = [await open_stream(server, bob.token) for _ in range(MAX_STREAMS)]
    events = bob.events(0)
    try:
        first = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.5)
        assert not first.done(), "an event came through a stream over the cap"
        sent = await alice.send(conversation_id, "while every stream was taken")
        await streams.pop().close()
        async with asyncio.timeout(30):  # bounds liveness: it retries every 5 s
            while True:
                event = await first
                if event.type == "message.new":
                    break
                first = asyncio.ensure_future(anext(events))
        assert event.message is not None and event.message.id == sent.id
    finally:
        first.cancel()
        with contextlib.suppress(BaseException):
            await first
        await events.aclose()
        for stream in streams:
            await stream.close()
        await alice.close()
        await bob.close()


async def a_client_that_reads_little(
    server: Server, token: str, query: str = "since=latest"
) -> ClientConnection:
    """A stream (live only unless `query` says otherwise) whose client stops taking frames: its
    library stops reading the socket once a frame waits (`max_queue=1`), and the socket's window
    is small."""
    parts = urlsplit(server.url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    ws = await websockets.connect(
        ws_url(server, query),
        sock=sock,
        additional_headers={"Authorization": f"Bearer {token}"},
        max_queue=1,
        max_size=2**22,
        compression=None,  # else the texts below, alike, would pass compressed to a fraction
    )
    if query == "since=latest":
        async with asyncio.timeout(10):
            assert orjson.loads(await ws.recv())["type"] == "ready"
    return ws


async def two_members(server: Server) -> tuple[Client, Client, int]:
    alice, bob = await new_member(server), await new_member(server)
    conversation = await alice.start_conversation([bob.username])
    return alice, bob, conversation.id


async def send_big_messages(alice: Client, conversation_id: int) -> list[str]:
    texts = [f"{i} {WIDE_TEXT}" for i in range(BIG_MESSAGES)]
    async with await alice.connect("latest") as stream:
        for text in texts:
            await stream.send(conversation_id, text)
    return texts


async def test_a_stream_that_does_not_keep_up_with_live_events_is_cut_off_and_loses_nothing(
    server: Server,
) -> None:
    alice, bob, conversation_id = await two_members(server)
    ws = await a_client_that_reads_little(server, bob.token)
    try:
        texts = await send_big_messages(alice, conversation_id)
        got: list[int] = []
        last_seq = 0
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(60):  # bounds liveness: before, the stream stayed open here
                while True:
                    frame = orjson.loads(await ws.recv())
                    if frame["type"] == "message.new":
                        got.append(int(frame["message"]["text"].split()[0]))
                        last_seq = frame["seq"]
        assert (ws.close_code, ws.close_reason) == (4408, "fell behind; reconnect with since")
        assert len(got) < len(texts)
        async with await bob.connect(last_seq) as again:  # as a client does on 4408
            async with asyncio.timeout(60):
                while len(got) < len(texts):
                    event = await again.next_event()
                    if event.type == "message.new":
                        assert event.message is not None
                        got.append(int(event.message.text.split()[0]))
        assert got == list(range(len(texts))), "lost, doubled or out of order"
    finally:
        await ws.close()
        await alice.close()
        await bob.close()


async def test_a_stream_whose_client_keeps_up_gets_every_big_message(server: Server) -> None:
    """The control: the same messages to a client that reads as usual; never cut off."""
    alice, bob, conversation_id = await two_members(server)
    async with websockets.connect(
        ws_url(server), additional_headers={"Authorization": f"Bearer {bob.token}"}, max_size=2**22
    ) as ws:
        async with asyncio.timeout(10):
            assert orjson.loads(await ws.recv())["type"] == "ready"

        async def read() -> list[int]:  # while they are sent, as a client keeping up does
            got: list[int] = []
            async with asyncio.timeout(60):
                while len(got) < BIG_MESSAGES:
                    frame = orjson.loads(await ws.recv())
                    if frame["type"] == "message.new":
                        got.append(int(frame["message"]["text"].split()[0]))
            return got

        got, _texts = await asyncio.gather(read(), send_big_messages(alice, conversation_id))
        assert got == list(range(BIG_MESSAGES))
    await alice.close()
    await bob.close()
