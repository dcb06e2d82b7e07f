"""A bare in-memory WebSocket relay: the baseline for `keyhold bench delivery --baseline relay`.

It is what a message costs with nothing but the transport: `websockets` (asyncio server) on
uvloop, frames parsed and rendered with orjson, no authentication, no storage, no encryption,
no fan-out to other devices. It speaks the same frames as `/api/v1/stream`, so the load
generator runs unchanged against it:

- a client connects to `ws://HOST:PORT/?id=N` (N: its number; no token) and gets
  `{"type": "ready", "seq": 0}`;
- `{"type": "send", "ref", "conversation_id", "text", ...}`: `conversation_id` is the number of
  the recipient's connection. The relay does one dict lookup for that connection and one send
  of `{"type": "message.new", "seq", "message": {...}}` to it, plus an `ack` to the sender
  (the same shape as Keyhold's) so that the sender's logic is identical;
- `{"type": "ping"}` → `pong`; anything else → `error`.

Run: `python -m keyhold.bench.relay --port 9000` (it prints `relay listening on ...` when ready).
It deliberately imports nothing from Keyhold.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class Relay:
    def __init__(self) -> None:
        self.connections: dict[int, ServerConnection] = {}
        self.seqs: dict[int, int] = {}
        self.ids = itertools.count(1)

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        try:
            me = int(query["id"][0])
        except (KeyError, ValueError):
            await ws.close(4400, "connect with ?id=N")
            return
        name = f"c{me}"
        self.connections[me] = ws
        self.seqs.setdefault(me, 0)
        connections, seqs, ids = self.connections, self.seqs, self.ids
        dumps, loads = orjson.dumps, orjson.loads
        try:
            await ws.send(dumps({"type": "ready", "seq": seqs[me]}), text=True)
            async for raw in ws:
                try:
                    frame: Any = loads(raw)
                    kind = frame["type"]
                except (orjson.JSONDecodeError, TypeError, KeyError):
                    await ws.send(
                        dumps({"type": "error", "ref": None, "problem": {"status": 400}}), text=True
                    )
                    continue
                if kind != "send":
                    reply = (
                        {"type": "pong", "ref": frame.get("ref")}
                        if kind == "ping"
                        else {
                            "type": "error",
                            "ref": frame.get("ref"),
                            "problem": {"status": 400, "detail": "unknown frame type"},
                        }
                    )
                    await ws.send(dumps(reply), text=True)
                    continue
                to = frame.get("conversation_id")
                peer = connections.get(to)  # the one dict lookup
                if peer is None:
                    problem = {"status": 404, "detail": f"no connection {to}"}
                    await ws.send(
                        dumps({"type": "error", "ref": frame.get("ref"), "problem": problem}), text=True
                    )
                    continue
                message = {
                    "id": next(ids),
                    "conversation_id": to,
                    "sender": name,
                    "kind": "text",
                    "text": frame.get("text"),
                    "sent_at": time.time(),
                }
                seq = seqs[to] = seqs[to] + 1
                await peer.send(dumps({"type": "message.new", "seq": seq, "message": message}), text=True)
                await ws.send(dumps({"type": "ack", "ref": frame.get("ref"), "message": message}), text=True)
        except ConnectionClosed:
            pass
        finally:
            if self.connections.get(me) is ws:
                del self.connections[me]


async def run(host: str, port: int) -> None:
    relay = Relay()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        relay.handle,
        host,
        port,
        compression=None,
        max_size=256 * 1024,
        ping_interval=None,
        max_queue=64,
    ):
        print(f"relay listening on ws://{host}:{port}", flush=True)
        await stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Bare WebSocket relay (benchmark baseline).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    uvloop.run(run(args.host, args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
