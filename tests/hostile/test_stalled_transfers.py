"""Bodies that stop or trickle, and responses never read: the server gives up on them, answers
what it can, writes nothing, and logs no traceback.

A body may pause at most `transfer_stall_seconds` between reads and must average 500 bytes a
second beyond it; a response the client leaves unread that long is dropped. This module's
server has a stall of 1 s (the production default is 30 s). Heads: test_request_limits.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import websockets

from conftest import Server, new_member, stop_server
from db_snapshot import snapshot
from hostile_helpers import PROBLEM_JSON, http, ws_url
from keyhold.cli.serve import IDLE_CONNECTION_SECONDS
from raw_http import (
    STALL_SECONDS,
    closed_by_server,
    connect,
    head,
    read_response,
    short_deadline_server,
    websocket_upgrade,
)

BIG = 8 * 1024 * 1024  # more than the socket buffers between server and a client that reads little
# One chunk of a streamed file (Starlette's are 64 KiB): written at once, so the response is
# complete for uvicorn and all of it in the kernel's buffers, yet more than a client that reads
# nothing lets through.
ONE_CHUNK = 60 * 1024
# A member's history replayed to a stream (`?since=0`): more than the socket buffers between the
# server and a client that reads little hold (the server's side grew to 2.8 MB here), in
# messages of about 4,000 three-byte characters.
HISTORY_MESSAGES = 400
REPLAY_PAGE = 100  # 1.2 MB a page: more than a stream keeps ahead (1 MiB), so each page waits
WIDE_TEXT = "".join(chr(0x4E00 + i) for i in range(3990))


@pytest.fixture(scope="module")
def web_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A web app of one big asset, served the way the real one is (a streamed file)."""
    root = tmp_path_factory.mktemp("web")
    (root / "index.html").write_text("<!doctype html><title>k</title>")
    (root / "assets").mkdir()
    (root / "assets" / "big.wasm").write_bytes(bytes(range(256)) * (BIG // 256))
    (root / "assets" / "one-chunk.wasm").write_bytes(bytes(range(256)) * (ONE_CHUNK // 256))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, web_dir: Path) -> Iterator[Server]:
    srv = short_deadline_server(
        tmp_path_factory.mktemp("home") / "kh",
        KEYHOLD_WEB_DIR=str(web_dir),
        KEYHOLD_REPLAY_PAGE_SIZE=str(REPLAY_PAGE),  # the replays below wait for room between pages
    )
    yield srv
    stop_server(srv)


async def a_conversation(server: Server) -> tuple[str, int]:
    alice, bob = await new_member(server), await new_member(server)
    conversation = await alice.start_conversation([bob.username])
    token = alice.token
    await alice.close()
    await bob.close()
    return token, conversation.id


async def a_member_with_history(server: Server, messages: int = HISTORY_MESSAGES) -> str:
    """The token of a member with `messages` messages of `WIDE_TEXT` to replay."""
    alice, bob = await new_member(server), await new_member(server)
    conversation = await alice.start_conversation([bob.username])
    sending = asyncio.Semaphore(16)
    # Over a stream: this server gives a request body 1 s between reads, which 16 uploads at a
    # time of texts scanned on its loop outran on a loaded machine (a 408 in CI).
    async with await alice.connect("latest") as stream:

        async def send(i: int) -> None:
            async with sending:
                await stream.send(conversation.id, f"{i} {WIDE_TEXT}")

        await asyncio.gather(*(send(i) for i in range(messages)))
    token = bob.token
    await alice.close()
    await bob.close()
    return token


async def take_a_little_at_a_time(reader: asyncio.StreamReader) -> None:
    """8 KiB every 0.2 s for four stalls, the connection open all the while."""
    received = 0
    for _ in range(round(STALL_SECONDS * 4 / 0.2)):
        chunk = await asyncio.wait_for(reader.read(8192), 10)
        assert chunk, f"closed after {received} bytes"
        received += len(chunk)
        await asyncio.sleep(0.2)


async def read_file_slowly(reader: asyncio.StreamReader, bytes_per_second: int) -> int:
    """Read a 200 response to its end at about this pace; how many body bytes came."""
    response_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert response_head.startswith(b"HTTP/1.1 200"), response_head
    received = 0
    while received < BIG:
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, f"closed after {received} bytes"
        received += len(chunk)
        await asyncio.sleep(len(chunk) / bytes_per_second)
    return received


def problem_of(headers: dict[str, str], body: bytes) -> dict[str, object]:
    assert headers["content-type"].startswith(PROBLEM_JSON), headers
    return dict(orjson.loads(body))


@pytest.mark.parametrize("what", ["message", "attachment"])
@pytest.mark.parametrize("how", ["stops", "trickles"])
async def test_a_body_that_stops_or_trickles_gets_408_and_writes_nothing(server: Server, what: str, how: str) -> None:
    token, conversation = await a_conversation(server)
    if what == "message":
        body = orjson.dumps({"text": "this never arrives whole"})
        request = head("POST", f"/conversations/{conversation}/messages", token, len(body))
    else:
        body = b"\x89PNG" + b"\0" * 4000
        request = head("POST", f"/conversations/{conversation}/attachments", token, len(body), "image/png")
        request = request.replace(b"\r\n\r\n", b"\r\nKeyhold-Filename: x.png\r\n\r\n")
    before = await asyncio.to_thread(snapshot, server)
    reader, writer = await connect(server)
    writer.write(request + body[:10])

    async def trickle() -> None:  # a byte well within every pause: only the average rate fails
        for byte in body[10:]:
            await asyncio.sleep(STALL_SECONDS / 3)
            writer.write(bytes([byte]))

    trickling = asyncio.create_task(trickle()) if how == "trickles" else None
    status, headers, answer = await read_response(reader)
    if trickling:
        trickling.cancel()
    assert status == 408 and "arrived too slowly" in str(problem_of(headers, answer)["detail"]), answer
    assert headers.get("connection") == "close"
    assert await closed_by_server(reader) == b""
    writer.close()
    assert await asyncio.to_thread(snapshot, server) == before, "a stopped body wrote something"
    # The same request, sent whole, is served: the 408 was the pace's.
    reader, writer = await connect(server)
    writer.write(request + body)
    assert (await read_response(reader))[0] == 201
    writer.close()


async def test_a_client_that_stops_reading_a_response_is_dropped(server: Server) -> None:
    """Dropped with a reset (the kernel does not go on feeding it), and with a request pipelined
    behind the file (which uvicorn alone left writing to a closed connection: two tracebacks)."""
    reader, writer = await connect(server, receive_buffer=4096)
    writer.write(head("GET", "/assets/big.wasm") + head("GET", "/health"))
    # Never read: the response fills the socket buffers and the server's, and stays there.
    await asyncio.sleep(STALL_SECONDS * 3)
    received = bytearray()
    with pytest.raises(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            received += chunk
    assert len(received) < BIG, len(received)
    writer.close()
    assert "Traceback" not in server.log()
    # Whoever reads gets the whole file.
    reader, writer = await connect(server)
    writer.write(head("GET", "/assets/big.wasm"))
    status, _, body = await read_response(reader)
    assert status == 200 and len(body) == BIG
    writer.close()


@pytest.mark.parametrize("closed_by", ["keep-alive", "connection-close"])
async def test_a_response_left_unread_when_the_server_closes_is_dropped(
    server: Server, closed_by: str
) -> None:
    """A close hands what is still unsent to the kernel: the socket outlived the connection,
    holding the response, for as long as the client answered the kernel's probes (a client that
    read nothing kept 58 KiB of it for minutes). Closed after keep-alive's 20 s idle, or at
    once for a request that asked for it."""
    reader, writer = await connect(server, receive_buffer=2048)
    request = head("GET", "/assets/one-chunk.wasm")
    if closed_by == "connection-close":
        request = request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    writer.write(request)
    await asyncio.sleep((IDLE_CONNECTION_SECONDS if closed_by == "keep-alive" else 0) + STALL_SECONDS * 3)
    received = bytearray()
    with pytest.raises(ConnectionResetError):  # before: the rest of the file, then an orderly close
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            received += chunk
    assert len(received) < ONE_CHUNK, len(received)
    writer.close()
    assert "Traceback" not in server.log()


async def test_a_websocket_upgrade_behind_a_response_still_sent_is_refused(server: Server) -> None:
    """Switching protocols under a response would lose its flow control and the stall check:
    the whole file buffered in the server for a client that reads nothing."""
    reader, writer = await connect(server, receive_buffer=4096)
    writer.write(head("GET", "/assets/big.wasm") + websocket_upgrade("/stream?since=latest"))
    await asyncio.sleep(STALL_SECONDS * 3)
    received = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            received += chunk
    # The connection is closed rather than switched (before: a 101, then the whole file).
    assert b"101 Switching Protocols" not in received and len(received) < BIG, received[:100]
    writer.close()


async def test_a_websocket_upgrade_behind_a_response_not_yet_taken_is_refused(server: Server) -> None:
    """The response is complete for uvicorn (written at once) but still in the buffers. Switched,
    the connection lost the stall rule, and the handshake's refusal closed it with no limit on
    what it left: ~340 s for 60 KiB, and with a bigger file the server's own buffer held the rest."""
    reader, writer = await connect(server, receive_buffer=2048)
    writer.write(head("GET", "/assets/one-chunk.wasm"))
    await asyncio.sleep(0.5)  # written whole
    writer.write(websocket_upgrade("/nowhere"))  # refused: needs no account
    await asyncio.sleep(STALL_SECONDS * 3)
    received = bytearray()
    with pytest.raises(ConnectionResetError):  # before: the whole file, then the 403
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            received += chunk
    assert len(received) < ONE_CHUNK, len(received)
    writer.close()


async def test_a_reader_with_a_small_window_is_not_dropped(server: Server) -> None:
    """Its window never opens to a whole segment (64 KiB over loopback): the kernel's own timer
    (`TCP_USER_TIMEOUT`) does not count what it sends through such a window, and dropped this
    reader while it took 40 KB/s. On an open connection, the bytes acknowledged judge."""
    reader, writer = await connect(server, receive_buffer=8192)
    writer.write(head("GET", "/assets/big.wasm"))
    await take_a_little_at_a_time(reader)
    writer.close()


async def test_a_websocket_client_that_takes_nothing_is_dropped(server: Server) -> None:
    """A member's stream replaying their history to a client that reads none of it. uvicorn's
    ping went unanswered and its close waited for a buffer that never drained: the socket kept
    2.8 MB queued in the kernel and the replay in the server's memory for as long as the client
    answered the kernel's probes (190 s and counting, measured). Now dropped like an HTTP
    response left unread."""
    token = await a_member_with_history(server)
    reader, writer = await connect(server, receive_buffer=4096)
    writer.write(websocket_upgrade("/stream?since=0", token=token))
    # Room for a loaded machine to sign the client in and start the replay first: a client that
    # reads before the drop is one that takes something.
    await asyncio.sleep(STALL_SECONDS * 8)
    received = bytearray()
    with pytest.raises(ConnectionResetError):  # before: the whole history, then the open stream
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            received += chunk
    assert len(received) < HISTORY_MESSAGES * len(WIDE_TEXT.encode()), len(received)
    writer.close()
    assert "Traceback" not in server.log()


async def test_a_websocket_client_with_a_small_window_reading_steadily_is_not_dropped(server: Server) -> None:
    """The same replay to a client that takes 8 KiB every 0.2 s: never dropped."""
    token = await a_member_with_history(server)
    reader, writer = await connect(server, receive_buffer=8192)
    writer.write(websocket_upgrade("/stream?since=0", token=token))
    await take_a_little_at_a_time(reader)
    writer.close()


async def test_a_websocket_client_reading_as_usual_gets_the_whole_paced_replay(server: Server) -> None:
    """The replay waits for room between its pages (`REPLAY_PAGE` here): all of it, in order,
    once, then `ready`."""
    token = await a_member_with_history(server)
    async with websockets.connect(
        ws_url(server, "since=0"), additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        texts: list[str] = []
        seqs: list[int] = []
        async with asyncio.timeout(60):  # bounds liveness: a replay that stalls fails here
            while (frame := orjson.loads(await ws.recv()))["type"] != "ready":
                seqs.append(frame["seq"])
                if frame["type"] == "message.new":
                    texts.append(frame["message"]["text"])
    # Sent 16 at a time: stored in whatever order they were committed.
    assert sorted(int(text.split()[0]) for text in texts) == list(range(HISTORY_MESSAGES))
    assert seqs == sorted(set(seqs)), "out of order or twice"


async def test_a_session_revoked_during_a_paced_replay_stops_it(server: Server) -> None:
    """A member logs out while their stream replays a long history to a client that takes a
    little at a time: the replay, waiting for room, ends with the session; the socket closes
    with 4401 and the rest of the history is never sent (no `ready`). 9.6 MB of history: about
    twice what the stream and the buffers between hold."""
    messages = 2 * HISTORY_MESSAGES
    token = await a_member_with_history(server, messages)
    reader, writer = await connect(server, receive_buffer=8192)
    writer.write(websocket_upgrade("/stream?since=0", token=token))
    received = bytearray(await asyncio.wait_for(reader.read(8192), 10))
    async with http(server, token) as client:
        assert (await client.delete("/sessions/current")).status_code == 204
    for _ in range(8):  # a little at a time (the stall, 1 s, never passes) while the revocation lands
        received += await asyncio.wait_for(reader.read(8192), 10)
        await asyncio.sleep(0.2)
    closed = re.compile(rb"\x88[\x00-\x7d]\x11\x31")  # a close frame (unmasked), code 4401
    with contextlib.suppress(ConnectionResetError):
        # A reset ends the stream too: the close leaves the kernel the stall (1 s here), which a
        # loaded machine can keep this reader from meeting (seen once in make test).
        async with asyncio.timeout(30):  # bounds liveness: a stream left open fails here
            while not closed.search(received):
                chunk = await reader.read(65536)
                assert chunk, "closed without a close frame"
                received += chunk
    assert b'"type":"ready"' not in received
    assert len(received) < messages * len(WIDE_TEXT.encode()), len(received)
    writer.close()
    assert "Traceback" not in server.log()


async def test_a_stream_the_server_closes_leaves_the_kernel_the_stall_limit(server: Server) -> None:
    """The member logs out while a client that reads nothing has less queued than pauses
    writing: the close frame waits behind it, and what is unsent is the kernel's, which before
    kept it for as long as the client answered its probes. Now reset within the stall."""
    alice, bob = await new_member(server), await new_member(server)
    conversation = await alice.start_conversation([bob.username])
    for i in range(3):  # ~36 KB: less than the transport's high-water mark (64 KiB)
        await alice.send(conversation.id, f"{i} {WIDE_TEXT}")
    reader, writer = await connect(server, receive_buffer=2048)
    writer.write(websocket_upgrade("/stream?since=0", token=bob.token))
    await asyncio.sleep(STALL_SECONDS)
    await bob.logout()  # the stream is closed within a second (4401)
    await asyncio.sleep(STALL_SECONDS * 5)
    received = bytearray()
    with pytest.raises(ConnectionResetError):  # before: all of it, the close frame, then EOF
        while chunk := await asyncio.wait_for(reader.read(65536), 15):
            received += chunk
    writer.close()
    await alice.close()
    await bob.close()
    assert "Traceback" not in server.log()


async def test_a_slow_but_steady_reader_gets_the_whole_file(server: Server) -> None:
    """About 800 KB/s: slower than the kernel lets the server write again within the stall (it
    wakes a writer only once a third of its buffer is free), but reading all the while."""
    reader, writer = await connect(server, receive_buffer=65536)
    writer.write(head("GET", "/assets/big.wasm"))
    assert await read_file_slowly(reader, 800_000) == BIG
    writer.close()


async def test_a_refusal_never_lands_inside_a_response(server: Server) -> None:
    """A head stalled behind a response still being read: the connection is closed when its
    deadline passes, and no 408 is written into the middle of the file."""
    reader, writer = await connect(server, receive_buffer=4096)
    writer.write(head("GET", "/assets/big.wasm") + b"GET /api/v1/hea")
    received = bytearray()
    try:
        while chunk := await asyncio.wait_for(reader.read(16384), 10):
            received += chunk
            await asyncio.sleep(0.02)  # a slow reader, but one that keeps reading
    except ConnectionResetError:
        pass
    response_head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert response_head.startswith(b"HTTP/1.1 200") and 0 < len(body) < BIG, len(body)
    assert b"HTTP/1.1 408" not in body and body == (bytes(range(256)) * (BIG // 256))[: len(body)]
    writer.close()


async def test_a_response_streaming_to_a_client_with_a_body_never_sent_is_not_cut(server: Server) -> None:
    """A GET that announces a body it never sends: the streamed file is answered without it, and
    the missing body is no reason to break the answer off (before: two tracebacks in the log)."""
    reader, writer = await connect(server, receive_buffer=65536)
    writer.write(head("GET", "/assets/big.wasm", length=10) + b"12345")
    assert await read_file_slowly(reader, 2_000_000) == BIG  # ~4 s: past the body's stall
    writer.close()
    assert "Traceback" not in server.log()


async def test_an_upload_given_up_half_way_leaves_no_traceback(server: Server) -> None:
    token, conversation = await a_conversation(server)
    body = b"\0" * 100_000
    _, writer = await connect(server)
    request = head("POST", f"/conversations/{conversation}/attachments", token, len(body), "application/octet-stream")
    writer.write(request.replace(b"\r\n\r\n", b"\r\nKeyhold-Filename: x.bin\r\n\r\n") + body[:50_000])
    await writer.drain()
    await asyncio.sleep(STALL_SECONDS / 4)
    writer.close()
    await asyncio.sleep(STALL_SECONDS)  # the server notices
    log = server.log()
    assert "Traceback" not in log and "unhandled" not in log, log[-2000:]


async def test_an_oversize_body_waiting_for_100_continue_is_refused_without_inviting_it(server: Server) -> None:
    reader, writer = await connect(server)
    request = head("POST", "/sessions", length=70_000).replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
    writer.write(request)
    answer = await closed_by_server(reader)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"100 Continue" not in answer
    writer.close()
