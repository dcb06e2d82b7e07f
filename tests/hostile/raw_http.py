"""HTTP/1.1 spoken by hand over asyncio streams, for tests of what the server does with
connections no HTTP library would make: heads that never end or never finish, bodies that stop,
responses never read. And a server whose deadlines are short enough to wait for."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from conftest import Server, start_server
from hostile_helpers import API

HEAD_SECONDS = 2
STALL_SECONDS = 1
# Far longer than either deadline, and shorter than the keep-alive timeout (20 s), which would
# otherwise be what closes a connection: a test that waits this long and sees no close fails.
PATIENCE = 10.0


def short_deadline_server(home: Path, **env: str) -> Server:
    """A SQLite server with the head deadline and the transfer stall at the above: these limits
    act before any database work, so one backend shows them."""
    deadlines = {
        "KEYHOLD_REQUEST_HEAD_SECONDS": str(HEAD_SECONDS),
        "KEYHOLD_TRANSFER_STALL_SECONDS": str(STALL_SECONDS),
    }
    return start_server(home, "sqlite", env={**deadlines, **env})


async def connect(server: Server, receive_buffer: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection; `receive_buffer` shrinks the socket's, for a client that reads little."""
    parts = urlsplit(server.url)
    if receive_buffer is None:
        return await asyncio.open_connection(parts.hostname, parts.port)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    return await asyncio.open_connection(sock=sock, limit=receive_buffer)


def head(
    method: str, path: str, token: str | None = None, length: int | None = None, content_type: str = "application/json"
) -> bytes:
    """A request's head; `path` is under the API's prefix unless it is a web app path (`/assets/…`)."""
    target = path if path.startswith("/assets/") else API + path
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if length is not None:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


GOOD_HANDSHAKE = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="


def websocket_upgrade(path: str, handshake: str = GOOD_HANDSHAKE, token: str | None = None) -> bytes:
    """A WebSocket upgrade's head, with these `Sec-WebSocket-*` lines."""
    return head("GET", path, token).replace(
        b"\r\n\r\n", f"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{handshake}\r\n\r\n".encode()
    )


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length (every answer of ours has one)."""
    raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
    status_line, *lines = raw_head.decode("latin-1").strip().split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), PATIENCE)
    return int(status_line.split()[1]), headers, body


async def closed_by_server(reader: asyncio.StreamReader, patience: float = PATIENCE) -> bytes:
    """What the server sent before closing; fails if it keeps the connection open."""
    return await asyncio.wait_for(reader.read(), patience)


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
