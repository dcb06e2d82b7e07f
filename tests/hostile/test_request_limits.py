"""Requests that never finish, are too big in the head, or are not HTTP: refused, and the
connection closed, before they cost the server more than a few kilobytes.

A connection that never sends a request, one that sends its head a byte at a time, a body that
stops half-way and a head that never ends each cost an attacker nothing and the server a
connection each (the last, before the limit, a busy event loop and gigabytes). The head gets
`request_head_seconds` from the connection's opening (or from a request's first byte, on a
kept-alive connection) and at most 32 KiB; the body may pause at most
`request_body_idle_seconds`: 2 s and 1 s on this module's server, so that the tests wait
seconds, not the production 20 and 30.

Transport only: these limits sit in the HTTP protocol and in the body guard, before any
database work, so this module runs one server (SQLite); that a stopped body wrote nothing is
checked on its database and blob store all the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from conftest import Server, new_member, start_server, stop_server
from db_snapshot import snapshot
from hostile_helpers import API, PROBLEM_JSON, open_stream
from keyhold.config import load_settings

HEAD_SECONDS = 2
BODY_IDLE_SECONDS = 1
# Far longer than either deadline, and shorter than the keep-alive timeout (20 s), which would
# otherwise be what closes a connection: a test that waits this long and sees no close fails.
PATIENCE = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    deadlines = {
        "KEYHOLD_REQUEST_HEAD_SECONDS": str(HEAD_SECONDS),
        "KEYHOLD_REQUEST_BODY_IDLE_SECONDS": str(BODY_IDLE_SECONDS),
    }
    srv = start_server(tmp_path_factory.mktemp("home") / "kh", "sqlite", env=deadlines)
    yield srv
    stop_server(srv)


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(server.url)
    return await asyncio.open_connection(parts.hostname, parts.port)


def head(method: str, path: str, token: str | None = None, length: int | None = None) -> bytes:
    lines = [f"{method} {API}{path} HTTP/1.1", "Host: 127.0.0.1"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length (every answer of ours has one)."""
    raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
    status_line, *lines = raw_head.decode("latin-1").strip().split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), PATIENCE)
    return int(status_line.split()[1]), headers, body


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before closing; fails if it keeps the connection open."""
    return await asyncio.wait_for(reader.read(), PATIENCE)


async def test_connection_sending_nothing_is_closed_silently(server: Server) -> None:
    reader, writer = await connect(server)
    assert await closed_by_server(reader) == b""
    writer.close()


async def test_head_trickled_a_byte_at_a_time_gets_408_and_is_closed(server: Server) -> None:
    reader, writer = await connect(server)
    request = head("GET", "/health")

    async def trickle() -> None:
        for byte in request[:-4]:  # never the blank line that ends the head
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    trickling = asyncio.create_task(trickle())
    try:
        answer = await closed_by_server(reader)
    finally:
        trickling.cancel()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answer
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: " + PROBLEM_JSON.encode() in headers.lower()
    problem = orjson.loads(body)
    assert problem["status"] == 408 and problem["title"] == "Request timeout", problem
    writer.close()


async def test_kept_alive_connection_waits_for_its_next_request_but_not_for_a_stalled_head(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(head("GET", "/health"))
    assert (await read_response(reader))[0] == 200
    # Idle after a response, longer than the head deadline: keep-alive's 20 s rule here, so
    # a pooled client's next request still finds its connection.
    await asyncio.sleep(HEAD_SECONDS * 1.5)
    writer.write(head("GET", "/health"))
    assert (await read_response(reader))[0] == 200
    # A next request begun and never finished does get the head deadline.
    writer.write(b"GET /api/v1/hea")
    assert (await closed_by_server(reader)).startswith(b"HTTP/1.1 408")
    writer.close()


async def test_head_sent_in_pieces_within_the_deadline_is_served(server: Server) -> None:
    reader, writer = await connect(server)
    request = head("GET", "/health")
    for piece in (request[:10], request[10:30], request[30:]):
        writer.write(piece)
        await asyncio.sleep(HEAD_SECONDS / 10)
    status, _, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["status"] == "ok"
    writer.close()


@pytest.mark.parametrize("what", ["message", "attachment"])
async def test_body_that_stops_gets_408_and_writes_nothing(server: Server, what: str) -> None:
    alice, bob = await new_member(server), await new_member(server)
    conversation = await alice.start_conversation([bob.username])
    if what == "message":
        body = orjson.dumps({"text": "this never arrives whole"})
        request = head("POST", f"/conversations/{conversation.id}/messages", alice.token, len(body))
    else:
        body = b"\x89PNG" + b"\0" * 4000
        request = head("POST", f"/conversations/{conversation.id}/attachments", alice.token, len(body))
        request = request.replace(b"application/json", b"application/octet-stream\r\nKeyhold-Filename: x.png")
    before = await asyncio.to_thread(snapshot, server)
    reader, writer = await connect(server)
    writer.write(request + body[: len(body) // 2])
    status, headers, answer = await read_response(reader)
    assert status == 408 and headers["content-type"].startswith(PROBLEM_JSON), (status, answer)
    assert "paused" in orjson.loads(answer)["detail"]
    assert headers.get("connection") == "close"
    assert await closed_by_server(reader) == b""
    writer.close()
    assert await asyncio.to_thread(snapshot, server) == before, "a stopped body wrote something"
    # The same request, sent whole, is served: the 408 was the pause's.
    reader, writer = await connect(server)
    writer.write(request + body)
    assert (await read_response(reader))[0] == 201
    writer.close()
    await alice.close()
    await bob.close()


async def send_until_answered(
    writer: asyncio.StreamWriter, reader: asyncio.StreamReader, pieces: Iterator[bytes]
) -> tuple[int, bytes]:
    """Send pieces until the server answers (a client reading as it sends); the bytes sent and
    everything the server sent before closing."""
    first = asyncio.create_task(reader.read(65536))
    sent = 0
    try:
        for piece in pieces:
            if first.done():
                break
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
            await asyncio.sleep(0)  # lets the reading task see an answer
    except ConnectionError:
        pass
    return sent, await asyncio.wait_for(first, PATIENCE) + await closed_by_server(reader)


def header_lines() -> Iterator[bytes]:
    for n in range(32_000):  # 64 MB: the old server took it all in (and more, without end)
        yield b"".join(b"X-Filler-%d: v\r\n" % (n * 100 + i) for i in range(100))


def one_endless_value() -> Iterator[bytes]:
    yield b"X-Filler: "
    for _ in range(1_000):
        yield b"v" * 65536


@pytest.mark.parametrize("pieces", [header_lines, one_endless_value])
async def test_a_head_that_never_ends_gets_431_within_a_few_reads(server: Server, pieces: Callable[[], Iterator[bytes]]) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
    sent, answer = await send_until_answered(writer, reader, pieces())
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    problem = orjson.loads(answer.partition(b"\r\n\r\n")[2])
    assert problem["status"] == 431 and "32768 bytes" in problem["detail"], problem
    # The limit plus the socket buffers in between: nothing like the gigabytes before.
    assert sent < 8 * 1024 * 1024, sent
    writer.close()


async def test_a_head_just_under_the_limit_is_served(server: Server) -> None:
    reader, writer = await connect(server)
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 100) for i in range(280))  # ~31 KiB
    assert 30 * 1024 < len(filler) < 32 * 1024 - 200
    writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n")
    assert (await read_response(reader))[0] == 200
    writer.close()


NOT_HTTP = {
    "nul-in-a-header": b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
    "no-request-line": b"GARBAGE\r\n\r\n",
    "unknown-version": b"GET /api/v1/health HTTP/9.9\r\nHost: x\r\n\r\n",
    "length-and-chunked": (
        b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "control-in-path": b"GET /api/v1/he\x01alth HTTP/1.1\r\nHost: x\r\n\r\n",
    "space-in-header-name": b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n",
}


@pytest.mark.parametrize("name", NOT_HTTP)
async def test_a_request_that_is_not_http_gets_400_problem_json(server: Server, name: str) -> None:
    reader, writer = await connect(server)
    writer.write(NOT_HTTP[name])
    answer = await closed_by_server(reader)
    head_part, _, body = answer.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"content-type: " + PROBLEM_JSON.encode() in head_part.lower()
    assert b"x-content-type-options: nosniff" in head_part.lower()
    problem = orjson.loads(body)
    assert problem["status"] == 400 and "not valid HTTP/1.1" in problem["detail"], problem
    writer.close()
    # uvicorn logged a warning per such request: anyone could fill the log, one line per
    # connection. (Written before the answer, so it would be in the file by now.)
    assert "Invalid HTTP request received" not in server.log()


async def test_others_are_served_while_many_connections_stall(server: Server) -> None:
    stalled = [await connect(server) for _ in range(50)]
    for _, writer in stalled[25:]:
        writer.write(b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\n")  # a head never finished
    member = await new_member(server)
    peer = await new_member(server)
    conversation = await member.start_conversation([peer.username])
    sent = await member.send(conversation.id, "still here")
    assert [m.text for m in await peer.history(conversation.id)] == ["still here"] and sent.id
    closed = await asyncio.gather(*(closed_by_server(reader) for reader, _ in stalled))
    # The 25 that sent nothing are closed silently, the 25 with a begun head get a 408.
    assert closed[:25] == [b""] * 25
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in closed[25:]), closed[25:]
    for _, writer in stalled:
        writer.close()
    await member.close()
    await peer.close()


async def test_an_idle_stream_is_not_cut_by_the_head_deadline(server: Server) -> None:
    alice, bob = await new_member(server), await new_member(server)
    conversation = await alice.start_conversation([bob.username])
    stream = await open_stream(server, bob.token)
    await asyncio.sleep(HEAD_SECONDS * 1.5)  # the upgraded connection's head was complete
    await alice.send(conversation.id, "after a quiet while")
    event = await stream.next_frame("message.new")
    assert event["message"]["text"] == "after a quiet while", event
    await stream.close()
    await alice.close()
    await bob.close()


@pytest.mark.parametrize("name", ["request_head_seconds", "request_body_idle_seconds", "body_drain_seconds"])
@pytest.mark.parametrize("seconds", ["0", "-5"])
def test_a_deadline_must_be_positive(tmp_path: Path, name: str, seconds: str) -> None:
    """Zero would close every connection at once (or, for asyncio, never wait at all)."""
    with pytest.raises(ValueError, match=f"{name} must be a positive number of seconds"):
        load_settings(tmp_path, **{name: seconds})
