"""Request heads that never come, never finish, never end or are not HTTP: refused, and the
connection closed, before they cost the server more than a few kilobytes.

A connection that never sends a request, one that sends its head a byte at a time, and a head
that never ends each cost an attacker nothing and the server a connection each (the last,
before the limit, a busy event loop and gigabytes). The head gets `request_head_seconds` from
the connection's opening (or from a request's first byte, on a kept-alive connection) and at
most 32 KiB. This module's server has a head deadline of 2 s, so that the tests wait seconds,
not the production 20. Bodies and responses: test_stalled_transfers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from conftest import Server, new_member, stop_server
from hostile_helpers import PROBLEM_JSON, open_stream
from keyhold.bench.procs import proc_status_mb
from keyhold.cli.http_protocol import http_protocol
from keyhold.cli.ws_protocol import websocket_protocol
from keyhold.config import load_settings
from raw_http import (
    GOOD_HANDSHAKE,
    HEAD_SECONDS,
    PATIENCE,
    closed_by_server,
    connect,
    head,
    read_response,
    send_until_answered,
    short_deadline_server,
    websocket_upgrade,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = short_deadline_server(tmp_path_factory.mktemp("home") / "kh")
    yield srv
    stop_server(srv)


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


async def test_a_head_over_the_limit_in_one_write_gets_431(server: Server) -> None:
    """Measured whole, not only while it is unfinished: 33 KiB arriving in one read."""
    reader, writer = await connect(server)
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 100) for i in range(300))
    assert 32 * 1024 < len(filler) < 34 * 1024
    writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n")
    assert (await closed_by_server(reader)).startswith(b"HTTP/1.1 431")
    writer.close()


async def test_endless_trailers_after_a_chunked_body_are_refused(server: Server) -> None:
    """Trailer lines are header lines too: before, each was appended to the request's headers,
    without limit (30 MB of them grew the server by 575 MB)."""
    rss_before = server_rss_mb(server)
    reader, writer = await connect(server)
    writer.write(head("GET", "/health").replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n"))
    writer.write(b"2\r\n{}\r\n0\r\n")
    sent = 0
    with contextlib.suppress(ConnectionError):
        for _ in range(5_000):  # 30 MB, whatever the server answers meanwhile
            writer.write(b"X: v\r\n" * 1000)
            await writer.drain()
            sent += 6000
    with contextlib.suppress(ConnectionError):
        await closed_by_server(reader)  # cut off: a 431 after the request's own answer, or a reset
    writer.close()
    assert server_rss_mb(server) - rss_before < 100, (rss_before, server_rss_mb(server), sent)


def server_rss_mb(server: Server) -> float:
    rss = proc_status_mb(server.process.pid, "VmRSS")
    assert rss is not None
    return rss


async def test_pipelined_requests_are_answered_whatever_the_size_of_the_first_body(server: Server) -> None:
    """The first request's 40 KB body, read with the start of the second's head, is not counted
    as part of that head."""
    reader, writer = await connect(server)
    body = orjson.dumps({"username": "x" * 40_000, "password": "p"})
    second = head("GET", "/health")
    writer.write(head("POST", "/sessions", length=len(body)) + body + second[:12])
    await writer.drain()
    await asyncio.sleep(0.3)  # the second head's rest in a later read
    writer.write(second[12:])
    first_status = (await read_response(reader))[0]
    assert first_status == 422 and (await read_response(reader))[0] == 200
    writer.close()


async def test_bytes_that_begin_no_request_do_not_keep_a_connection_open(server: Server) -> None:
    """After a response, a bare CRLF, or the rest of a body the app did not read, began no
    request: keep-alive's 20 s still close the connection (before: no timer was left at all)."""

    async def answered_then(extra: bytes, request: bytes) -> bytes:
        reader, writer = await connect(server)
        writer.write(request)
        assert (await read_response(reader))[0] == 200
        await asyncio.sleep(1)
        writer.write(extra)
        try:
            return await closed_by_server(reader, patience=20 + PATIENCE)
        finally:
            writer.close()

    health = head("GET", "/health")
    with_unread_body = health.replace(b"\r\n\r\n", b"\r\nContent-Length: 100\r\n\r\n") + b"x"
    closed = await asyncio.gather(answered_then(b"\r\n", health), answered_then(b"y", with_unread_body))
    assert closed == [b"", b""]


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
    assert problem["status"] == 400 and "not valid HTTP" in problem["detail"], problem
    writer.close()
    # uvicorn logged a warning per such request: anyone could fill the log, one line per
    # connection. (Written before the answer, so it would be in the file by now.)
    assert "Invalid HTTP request received" not in server.log()


REFUSED_UPGRADES = {
    "invalid-key": ("/stream", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: nope", 400, "invalid Sec-WebSocket-Key"),
    "no-key": ("/stream", "Sec-WebSocket-Version: 13", 400, "missing Sec-WebSocket-Key"),
    # RFC 6455, 4.2.2: a version the server does not speak MUST be answered with the versions it
    # does, in Sec-WebSocket-Version (426 is the code it suggests); websockets sent a bare 400.
    "old-version": ("/stream", GOOD_HANDSHAKE.replace(": 13", ": 8"), 426, "invalid Sec-WebSocket-Version"),
    "no-version": ("/stream", GOOD_HANDSHAKE.split("\r\n")[1], 400, "missing Sec-WebSocket-Version"),
    "no-websocket-here": ("/nowhere", GOOD_HANDSHAKE, 403, "no WebSocket at this address"),
    "long-target": ("/stream?" + "a" * 9000, GOOD_HANDSHAKE, 414, "expected no more than 8192 bytes"),
}
# RFC 9110's names (Python's for 414 is the older "Request-URI Too Long", which became
# "Request-uri too long").
TITLES = {400: "Bad request", 403: "Forbidden", 414: "URI too long", 426: "Upgrade required"}


@pytest.mark.parametrize("name", REFUSED_UPGRADES)
async def test_a_refused_websocket_upgrade_gets_problem_json(server: Server, name: str) -> None:
    """websockets refused these in plain text, and uvicorn answered an upgrade to an address
    with no WebSocket with an empty 403."""
    path, handshake, status, detail = REFUSED_UPGRADES[name]
    reader, writer = await connect(server)
    writer.write(websocket_upgrade(path, handshake))
    got, headers, body = await read_response(reader)
    assert got == status and headers["content-type"] == PROBLEM_JSON, (got, headers, body)
    assert headers["x-content-type-options"] == "nosniff" and headers["connection"] == "close"
    problem = orjson.loads(body)
    assert problem["status"] == status and detail in problem["detail"], problem
    assert problem["title"] == TITLES[status], problem
    assert problem["type"].endswith("/" + TITLES[status].lower().replace(" ", "-")), problem
    versions = headers.get("sec-websocket-version")
    assert versions == ("13" if "Version" in detail else None), headers
    if status == 426:
        assert headers["upgrade"] == "websocket", headers
    assert await closed_by_server(reader) == b""
    writer.close()


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


@pytest.mark.parametrize("name", ["request_head_seconds", "transfer_stall_seconds", "body_drain_seconds"])
@pytest.mark.parametrize("seconds", ["0", "-5"])
def test_a_deadline_must_be_positive(tmp_path: Path, name: str, seconds: str) -> None:
    """Zero would close every connection at once (or, for asyncio, never wait at all)."""
    with pytest.raises(ValueError, match=f"{name} must be a positive number of seconds"):
        load_settings(tmp_path, **{name: seconds})


# What the limits override of uvicorn's httptools protocol (none of it a public API).
UVICORN_HOOKS = {
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "send_400_response",
    "_start_asgi_task",
    "handle_websocket_upgrade",
    "pause_writing",
    "resume_writing",
    "timeout_keep_alive_handler",
    "on_response_complete",
}


def test_the_uvicorn_methods_the_limits_override_are_still_there() -> None:
    """uvicorn is pinned to the minor version the suite passed on (pyproject.toml). On a later one,
    a hook renamed would lose its limit without a word (before 0.45, `_start_asgi_task` did not
    exist), and a method added under one of our helpers' names would be replaced by ours."""
    limited = http_protocol(1, 1)
    ours = {name for name, value in vars(limited).items() if callable(value) and not name.startswith("__")}
    assert {name for name in ours if hasattr(HttpToolsProtocol, name)} == UVICORN_HOOKS


# What `cli/ws_protocol.py` overrides of uvicorn's sans-I/O WebSocket protocol.
UVICORN_WEBSOCKET_HOOKS = {
    "connection_made",
    "connection_lost",
    "pause_writing",
    "resume_writing",
    "keepalive_timeout",
    "handle_close",
    "handle_parser_exception",
}


def test_the_uvicorn_websocket_methods_overridden_are_still_there() -> None:
    """The same for the WebSocket protocol: a renamed `keepalive_timeout`, say, would leave the
    close after an unanswered ping without its limit."""
    limited = websocket_protocol(1)
    ours = {name for name, value in vars(limited).items() if callable(value) and not name.startswith("__")}
    assert {name for name in ours if hasattr(WebSocketsSansIOProtocol, name)} == UVICORN_WEBSOCKET_HOOKS
