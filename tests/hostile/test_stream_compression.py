"""A member's stream is never compressed: the server declines `permessage-deflate` (RFC 7692),
which browsers and the websockets library offer by default.

Why: a stream carries one member's events from all their conversations through one compression
context (the window is kept from message to message). Someone who can send that member a
message, and who sees the sizes of the encrypted records on the wire (on the same network, say),
then has a CRIME-style oracle: their message comes out shorter when it repeats what another
conversation just said. Below, Mallory guesses a code Carol sent Bob: before, measured, the
right guess came to 22-25 bytes on the wire and wrong ones of the same length to 49-62 (frames of
272 bytes before compression). Compression also cost the
server ~42 KB more per connection (500 streams: 57 KB each without, 99.5 KB with).

Raw sockets, so that the frames' own headers (length, RSV1) can be read. Both databases."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import orjson

from conftest import Server, new_member
from raw_http import GOOD_HANDSHAKE, PATIENCE, websocket_upgrade

OFFER = GOOD_HANDSHAKE + "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
SECRET = "vault code 5839-2716-4402-9981-6650"
# As long as the secret, and each new to the stream: a guess already sent would be in the window.
WRONG = ("vault code 1204-8837-5519-3026-7743", "vault code 0471-3362-8195-2208-5917")


async def read_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    """One frame from the server (never masked): whether RSV1 (compressed) is set, the payload's
    length on the wire, and the payload."""
    first, second = await asyncio.wait_for(reader.readexactly(2), PATIENCE)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return bool(first & 0x40), length, await asyncio.wait_for(reader.readexactly(length), PATIENCE)


async def offering_deflate(
    server: Server, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """A live stream whose upgrade offers permessage-deflate; the response's head."""
    parts = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(websocket_upgrade("/stream?since=latest", handshake=OFFER, token=token))
    response = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)).decode("latin-1")
    assert response.startswith("HTTP/1.1 101"), response
    return reader, writer, response


async def test_a_stream_declines_compression_and_gives_no_size_oracle(server: Server) -> None:
    bob, carol, mallory = await new_member(server), await new_member(server), await new_member(server)
    with_carol = await carol.start_conversation([bob.username])
    with_mallory = await mallory.start_conversation([bob.username])
    reader, writer, response = await offering_deflate(server, bob.token)
    try:
        assert "sec-websocket-extensions" not in response.lower(), response
        # Sends wait for `ready`: with `since=latest`, one committed before the stream's start
        # is not on it (a loaded machine once showed 8 frames where 9 were counted on).
        compressed, _, payload = await read_frame(reader)
        assert not compressed and orjson.loads(payload)["type"] == "ready"
        sizes: dict[str, int] = {}
        frames = 0
        for guess in (WRONG[0], SECRET, WRONG[1], SECRET):
            await carol.send(with_carol.id, SECRET)  # right before each guess: in the window
            await mallory.send(with_mallory.id, guess)
            while True:
                compressed, length, payload = await read_frame(reader)
                frames += 1
                assert not compressed, "a compressed frame on a stream that should not compress"
                event = orjson.loads(payload)
                message = event.get("message") or {}
                if event["type"] == "message.new" and message.get("conversation_id") == with_mallory.id:
                    sizes[guess] = length
                    break
        # The same length whatever was guessed (ids and times may differ by a digit).
        assert max(sizes.values()) - min(sizes.values()) <= 2, sizes
        assert frames >= 8  # Carol's and Mallory's four each (and any other event)
    finally:
        writer.close()
        await asyncio.gather(bob.close(), carol.close(), mallory.close())
