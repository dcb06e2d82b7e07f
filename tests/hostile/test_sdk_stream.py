"""The SDK's `Stream` and `Client.events()` end cleanly when cancelled or closed, in every state.

Each case runs a real SDK client in a subprocess (`asyncio.run(main())`, as a user's program would)
because what goes wrong shows up there: asyncio.run cancels every task still pending when main
returns and reports what those tasks raise while unwinding ("unhandled exception during
asyncio.run() shutdown"), and half-closed sockets turn into ResourceWarnings at exit. The child
prints what it observed, one line per step; the test checks those lines, the exit status, and
that stderr carries none of those complaints.

Cases that need a server which never acknowledges, closes with a chosen code, or drops the TCP
connection use a small WebSocket stub speaking the stream protocol; the rest use a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from conftest import PASSWORD, Server, new_member, start_server, stop_server

CHILD_TIMEOUT = 60.0
# What a clean exit never prints.
COMPLAINTS = (
    "unhandled exception",
    "Traceback",
    "AssertionError",
    "Task was destroyed",
    "never retrieved",
    "Exception ignored",
    "Unclosed",
    "unclosed",
    "ResourceWarning",
)

CHILD = r'''
import asyncio, json, sys

import websockets
from keyhold.sdk import Client

ARGS = json.loads(sys.argv[1])
WAIT = 10


def say(*words):
    print(*words, flush=True)


def name(exc):
    return type(exc).__name__


async def login():
    return await Client.login(ARGS["url"], ARGS["username"], ARGS["password"], e2ee=False)


async def open_stream(client):
    """A stream past its replay: the next event is a live one."""
    stream = await client.connect(0)
    await asyncio.wait_for(stream.ready.wait(), WAIT)
    while stream.last_seq and (await stream.next_event(WAIT)).seq < stream.last_seq:
        pass
    return stream


async def outcome(awaitable, wait=5):
    try:
        result = await asyncio.wait_for(awaitable, wait)
    except asyncio.CancelledError:
        return "CancelledError"
    except Exception as exc:
        return name(exc)
    return result if isinstance(result, str) else "returned " + type(result).__name__


async def iterate(stream):
    """How `async for` over the stream ends, and how many events it yielded."""
    count = 0
    try:
        async for _event in stream:
            count += 1
    except Exception as exc:
        return f"{name(exc)} after {count}"
    return f"ended after {count}"


async def events_at_exit():
    # The reported case: main returns while a task is suspended in `async for` over
    # client.events(), so asyncio.run cancels it (and the stream's reader) at shutdown.
    client = await login()
    first = asyncio.Event()

    async def consume():
        async for _event in client.events():
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), WAIT)
    say("iterating")
    await client.close()


async def events_cancelled():
    client = await login()
    first = asyncio.Event()

    async def consume():
        async for _event in client.events():
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), WAIT)
    task.cancel()
    say("consumer", await outcome(task))
    events = client.events()  # the client is still usable: a new iterator replays from the start
    say("again seq", (await asyncio.wait_for(anext(events), WAIT)).seq)
    await events.aclose()
    await client.close()


async def stream_at_exit():
    client = await login()
    stream = await open_stream(client)  # never closed
    say("open")
    await client.close()


async def stream_iterated_at_exit():
    client = await login()
    stream = await open_stream(client)
    task = asyncio.create_task(iterate(stream))  # still waiting for an event when main returns
    await asyncio.sleep(0.2)
    say("iterating")
    await client.close()


async def next_event_at_exit():
    client = await login()
    stream = await open_stream(client)
    task = asyncio.create_task(stream.next_event(60))
    await asyncio.sleep(0.2)
    say("waiting")
    await client.close()


async def send_at_exit():
    client = await login()
    stream = await open_stream(client)
    task = asyncio.create_task(stream.send(ARGS["conversation_id"], "in flight at exit"))
    await asyncio.sleep(0)
    say("sending")
    await client.close()


async def close_twice():
    client = await login()
    stream = await open_stream(client)
    await stream.close()
    await stream.close()
    await asyncio.gather(stream.close(), stream.close())
    async with stream:  # and once more through the context manager
        pass
    say("closed")
    # The end is reported to every later caller, not only to the first one.
    say("next_event", await outcome(stream.next_event(3)))
    say("next_event", await outcome(stream.next_event(3)))
    say("iterate", await outcome(iterate(stream)))
    say("iterate", await outcome(iterate(stream)))
    say("send", await outcome(stream.send(ARGS["conversation_id"], "after close")))
    say("mark", await outcome(stream.mark(ARGS["conversation_id"], 1)))
    await client.close()


async def next_event_cancelled():
    client = await login()
    stream = await open_stream(client)
    waiting = asyncio.create_task(stream.next_event(60))
    await asyncio.sleep(0.2)
    waiting.cancel()
    say("waiting", await outcome(waiting))
    timed_out = await outcome(stream.next_event(0.2))
    say("short wait", timed_out)
    # Nothing was lost and the stream still works (a send over the API, not this stream,
    # which would get an ack and no echo).
    sent = await client.send(ARGS["conversation_id"], "after the cancel")
    while True:
        event = await stream.next_event(WAIT)
        if event.type == "message.new":
            break
    say("event", event.message.id == sent.id)
    await stream.close()
    await client.close()


async def stub_pending_send(mode):
    """Against the stub, which sees the send (it answers with an event) but never acknowledges."""
    client = Client(ARGS["url"], "stub", "stub-token")
    stream = await client.connect(0)
    await asyncio.wait_for(stream.ready.wait(), WAIT)
    send = asyncio.create_task(stream.send(1, "never acknowledged"))
    say("seen", (await stream.next_event(WAIT)).type)
    if mode == "exit":
        say("pending")
        await client.close()
        return
    if mode == "close":
        await stream.close()
    elif mode == "cancelled close":
        # The stub stopped reading, so the closing handshake would wait for close_timeout (10 s).
        closing = asyncio.create_task(stream.close())
        await asyncio.sleep(0.3)
        closing.cancel()
        say("close", await outcome(closing))
    # mode "server": the stub closes or drops the connection by itself.
    say("send", await outcome(send))
    say("next_event", await outcome(stream.next_event(3)))
    say("iterate", await outcome(iterate(stream)))
    say("send again", await outcome(stream.send(1, "after the end")))
    await stream.close()
    await client.close()


async def server_stops():
    client = await login()
    stream = await open_stream(client)
    iterating = asyncio.create_task(iterate(stream))
    waiting = asyncio.create_task(stream.next_event(60))
    first = asyncio.Event()

    async def consume():
        async for _event in client.events():
            first.set()

    events = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), WAIT)
    await asyncio.sleep(0.2)
    say("iterating")
    await asyncio.to_thread(sys.stdin.readline)  # the test stops the server, then writes a line
    say("iterate", await outcome(iterating, WAIT))
    say("next_event", await outcome(waiting, WAIT))
    await asyncio.sleep(1)
    say("events retrying", not events.done())  # events() reconnects; asyncio.run cancels it below
    await stream.close()
    await client.close()


async def main():
    scenario = ARGS["scenario"]
    if scenario.startswith("stub "):
        await stub_pending_send(scenario.removeprefix("stub "))
    else:
        await globals()[scenario]()


asyncio.run(main())
say("exited")
'''


@dataclass
class Child:
    process: asyncio.subprocess.Process

    async def line(self) -> str:
        raw = await asyncio.wait_for(self.process.stdout.readline(), CHILD_TIMEOUT)  # type: ignore[union-attr]
        return raw.decode().strip()

    async def finish(self, stdin: bytes = b"") -> tuple[list[str], str]:
        """Its stdout lines and stderr, once it exits; kills it and fails if it hangs."""
        try:
            out, err = await asyncio.wait_for(self.process.communicate(stdin), CHILD_TIMEOUT)
        except TimeoutError:
            self.process.kill()
            out, err = await self.process.communicate()
            pytest.fail(f"the client hung:\n{out.decode()}\n{err.decode()}", pytrace=False)
        return out.decode().splitlines(), err.decode()


async def start_child(tmp_path: Path, scenario: str, **args: Any) -> Child:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "default::ResourceWarning",  # a socket left open at exit shows up
        str(script),
        orjson.dumps({"scenario": scenario, **args}).decode(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),  # PYTHONPATH too: the tests can run against another checkout
    )
    return Child(process)


async def run_child(tmp_path: Path, scenario: str, **args: Any) -> list[str]:
    """Run a scenario to its end; its stdout lines, after checking it exited cleanly."""
    child = await start_child(tmp_path, scenario, **args)
    lines, err = await child.finish()
    assert_clean(child, lines, err)
    return lines


def assert_clean(child: Child, lines: list[str], err: str) -> None:
    report = "stdout:\n" + "\n".join(lines) + "\nstderr:\n" + err
    assert child.process.returncode == 0, report
    assert lines and lines[-1] == "exited", report
    complaints = [word for word in COMPLAINTS if word in err]
    assert not complaints, f"{complaints} on stderr\n{report}"
    assert not err.strip(), f"stderr is not empty\n{report}"


@pytest.fixture
async def member(sqlite_server: Server) -> AsyncIterator[dict[str, Any]]:
    """A member with a conversation (so a replay from 0 has an event) and the child's arguments."""
    me, other = await asyncio.gather(new_member(sqlite_server), new_member(sqlite_server))
    conv = await me.start_conversation([other.username])
    yield {
        "url": sqlite_server.url,
        "username": me.username,
        "password": PASSWORD,
        "conversation_id": conv.id,
    }
    await asyncio.gather(me.close(), other.close())


# -- cancelled by asyncio.run at exit -----------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "said"),
    [
        ("events_at_exit", "iterating"),  # the reported case
        ("stream_at_exit", "open"),
        ("stream_iterated_at_exit", "iterating"),
        ("next_event_at_exit", "waiting"),
        ("send_at_exit", "sending"),
    ],
)
async def test_left_open_when_asyncio_run_returns(
    tmp_path: Path, member: dict[str, Any], scenario: str, said: str
) -> None:
    assert await run_child(tmp_path, scenario, **member) == [said, "exited"]


# -- cancelled by the program ---------------------------------------------------------------------


async def test_cancelling_the_events_consumer(tmp_path: Path, member: dict[str, Any]) -> None:
    lines = await run_child(tmp_path, "events_cancelled", **member)
    assert lines == ["consumer CancelledError", "again seq 1", "exited"]


async def test_cancelling_next_event_loses_nothing(tmp_path: Path, member: dict[str, Any]) -> None:
    lines = await run_child(tmp_path, "next_event_cancelled", **member)
    assert lines == ["waiting CancelledError", "short wait TimeoutError", "event True", "exited"]


# -- closed by the client -------------------------------------------------------------------------


async def test_close_twice_then_every_use_reports_the_end(tmp_path: Path, member: dict[str, Any]) -> None:
    lines = await run_child(tmp_path, "close_twice", **member)
    assert lines == [
        "closed",
        "next_event ConnectionClosedOK",
        "next_event ConnectionClosedOK",
        "iterate ended after 0",  # after close(), iteration simply ends
        "iterate ended after 0",
        "send ConnectionClosedOK",
        "mark ConnectionClosedOK",
        "exited",
    ]


# -- a send waiting for its acknowledgement ------------------------------------------------------


StubBehaviour = Callable[[ServerConnection], Awaitable[None]]


@contextlib.asynccontextmanager
async def stub(after_send: StubBehaviour) -> AsyncIterator[str]:
    """A stream server that sends `ready`, answers a `send` frame with an event but never with
    an ack, then does `after_send`. Yields its http:// base URL."""

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(orjson.dumps({"type": "ready", "seq": 0}).decode())
            async for raw in ws:
                if orjson.loads(raw).get("type") == "send":
                    await ws.send(orjson.dumps({"type": "stub.saw_send", "seq": 1}).decode())
                    await after_send(ws)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}"


async def keep_quiet(ws: ServerConnection) -> None:
    pass


async def stop_reading(ws: ServerConnection) -> None:
    # The client's close frame goes unread, so unanswered, for longer than the child waits.
    ws.transport.pause_reading()
    asyncio.get_running_loop().call_later(8, ws.transport.resume_reading)


async def close_1011(ws: ServerConnection) -> None:
    await ws.close(1011, "stub failure")


async def drop(ws: ServerConnection) -> None:
    ws.transport.abort()  # no close frame: the network went away


async def test_close_while_a_send_waits_for_its_ack(tmp_path: Path) -> None:
    async with stub(keep_quiet) as url:
        lines = await run_child(tmp_path, "stub close", url=url)
    assert lines == [
        "seen stub.saw_send",
        "send ConnectionClosedOK",  # failed by close(), not left waiting forever
        "next_event ConnectionClosedOK",
        "iterate ended after 0",
        "send again ConnectionClosedOK",
        "exited",
    ]


async def test_cancelled_close_still_ends_the_stream(tmp_path: Path) -> None:
    """close() cancelled midway (e.g. under a timeout) must not leave the socket half-open and a
    pending send waiting for the 10 s close timeout."""
    async with stub(stop_reading) as url:
        lines = await run_child(tmp_path, "stub cancelled close", url=url)
    assert lines == [
        "seen stub.saw_send",
        "close CancelledError",
        "send ConnectionClosedError",
        "next_event ConnectionClosedError",  # the closing handshake never completed
        "iterate ended after 0",  # but the program asked to close: iteration just ends
        "send again ConnectionClosedError",
        "exited",
    ]


async def test_send_waiting_for_its_ack_when_asyncio_run_returns(tmp_path: Path) -> None:
    async with stub(keep_quiet) as url:
        lines = await run_child(tmp_path, "stub exit", url=url)
    assert lines == ["seen stub.saw_send", "pending", "exited"]


# -- closed by the server -------------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", [close_1011, drop], ids=["close 1011", "connection dropped"])
async def test_server_ends_the_connection_while_a_send_waits(
    tmp_path: Path, behaviour: StubBehaviour
) -> None:
    async with stub(behaviour) as url:
        lines = await run_child(tmp_path, "stub server", url=url)
    assert lines == [
        "seen stub.saw_send",
        "send ConnectionClosedError",
        "next_event ConnectionClosedError",
        "iterate ConnectionClosedError after 0",  # not a normal end: iteration says so
        "send again ConnectionClosedError",
        "exited",
    ]


async def test_server_stopping_under_an_iterating_client(tmp_path: Path) -> None:
    server = start_server(tmp_path / "kh")
    try:
        me, other = await asyncio.gather(new_member(server), new_member(server))
        conv = await me.start_conversation([other.username])
        await asyncio.gather(me.close(), other.close())
        args = {"url": server.url, "username": me.username, "password": PASSWORD, "conversation_id": conv.id}
        child = await start_child(tmp_path, "server_stops", **args)
        first = await child.line()
        assert first == "iterating", first + (await child.finish())[1]
        stop_server(server)
        lines, err = await child.finish(b"stopped\n")
    finally:
        stop_server(server)
    assert_clean(child, [first, *lines], err)
    iterate, next_event, retrying, exited = lines
    # A server going away is not a normal end of the stream: iteration and next_event raise
    # ConnectionClosedError (never hang, never an AssertionError); events() keeps reconnecting.
    assert iterate.startswith("iterate ConnectionClosedError after 0"), iterate
    assert next_event == "next_event ConnectionClosedError", next_event
    assert (retrying, exited) == ("events retrying True", "exited")
