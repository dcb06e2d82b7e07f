"""The WebSocket stream against a real server: real-time delivery, per-user seq, several
devices, resuming with `since` (clean and abrupt disconnects), the SDK's `events()`, auth,
and malformed frames."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from conftest import Server, new_member
from keyhold.sdk import Client, KeyholdError
from keyhold.sdk.client import Event
from stream_helpers import close_all, live, next_of

API = "/api/v1"
WAIT = 10.0


# -- helpers --------------------------------------------------------------------------------------


def ws_url(server: Server, since: int | str | None = None) -> str:
    url = "ws://" + server.url.removeprefix("http://") + API + "/stream"
    return url if since is None else f"{url}?since={since}"


async def open_raw(server: Server, token: str | None, since: int | str | None = None) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return await websockets.connect(ws_url(server, since), additional_headers=headers, max_size=2**22)


async def recv(ws: ClientConnection, wait: float = WAIT) -> dict[str, Any]:
    return dict(orjson.loads(await asyncio.wait_for(ws.recv(), wait)))


async def until_ready(ws: ClientConnection) -> tuple[list[dict[str, Any]], int]:
    """The replayed events and the seq of the `ready` frame that ends them."""
    replayed = []
    while True:
        frame = await recv(ws)
        if frame["type"] == "ready":
            return replayed, int(frame["seq"])
        replayed.append(frame)


async def closed_with(ws: ClientConnection) -> tuple[int | None, list[dict[str, Any]]]:
    """Read until the server closes; the close code and the frames received before it."""
    frames = []
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            frames.append(await recv(ws))
    return ws.close_code, frames


# -- real-time delivery ---------------------------------------------------------------------------


async def test_realtime_direct(server: Server) -> None:
    a, b = await asyncio.gather(new_member(server), new_member(server))
    a_stream = await live(a)
    b_stream = await live(b)
    try:
        conv = await a.start_conversation([b.username])
        sent = await a.send(conv.id, "live to b")
        for stream in (b_stream, a_stream):  # the sender's devices hear it too
            event = await next_of(stream, "message.new")
            assert event.message is not None
            assert event.message.id == sent.id
            assert event.message.text == "live to b"
            assert event.message.sender == a.username
            assert event.message.conversation_id == conv.id
            assert event.data["conversation_id"] == conv.id
        # And back the other way, sent over b's socket: b's other device hears it; the socket
        # it was sent over has its ack and no echo.
        b_other = await live(b)
        reply = await b_stream.send(conv.id, "live to a")
        for stream in (a_stream, b_other):
            event = await next_of(stream, "message.new")
            assert event.message is not None and (event.message.id, event.message.text) == (reply.id, "live to a")
        after = await a.send(conv.id, "after the reply")
        event = await next_of(b_stream, "message.new")
        assert event.message is not None and event.message.id == after.id, "the sending socket got an echo"
        await b_other.close()
    finally:
        await close_all(a_stream, b_stream, a, b)


async def test_realtime_group(server: Server) -> None:
    people = list(await asyncio.gather(*(new_member(server) for _ in range(4))))
    streams = [await live(p) for p in people]
    try:
        group = await people[0].start_conversation([p.username for p in people[1:]], title="live")
        sent = []
        for person, stream in zip(people, streams, strict=True):
            sent.append(await stream.send(group.id, f"from {person.username}"))
        for person, stream in zip(people, streams, strict=True):
            # Everyone's messages but its own: the socket a message was sent over has its ack.
            others = [m for m in sent if m.sender != person.username]
            got = []
            for _ in others:
                event = await next_of(stream, "message.new")
                assert event.message is not None
                got.append((event.message.id, event.message.sender, event.message.text))
            assert got == [(m.id, m.sender, m.text) for m in others]
    finally:
        await close_all(*streams, *people)


async def test_seq_is_strictly_increasing_per_user(server: Server) -> None:
    a, b, c = await asyncio.gather(new_member(server), new_member(server), new_member(server))
    b_stream = await b.connect(0)
    try:
        await asyncio.wait_for(b_stream.ready.wait(), WAIT)
        assert b_stream.last_seq == 0, "a new member has no events yet"
        direct = await a.start_conversation([b.username])
        group = await a.start_conversation([b.username], title="g")
        m1 = await a.send(direct.id, "1")
        await c.send((await c.start_conversation([a.username])).id, "not b's business")
        await a.add_members(group.id, [c.username])
        m2 = await c.send(group.id, "2")
        await b.mark(direct.id, m1.id)
        await a.delete_message(m1.id)
        await b.send(group.id, "3")
        expected = [
            "conversation.updated",
            "conversation.updated",
            "message.new",
            "conversation.updated",
            "message.new",
            "receipt",
            "message.deleted",
            "message.new",
        ]
        events = [await b_stream.next_event(WAIT) for _ in expected]
        assert [e.type for e in events] == expected
        # A new conversation names its members: a client can fetch their keys at once.
        assert events[0].data["change"] == "created"
        assert events[0].data["members"] == sorted([a.username, b.username])
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs)), "strictly increasing"
        assert seqs == list(range(1, len(expected) + 1)), "and gap-free for a new member"
        assert events[4].message is not None and events[4].message.id == m2.id
        # Each user has their own sequence: a's seqs are independent of b's.
        a_events = [e async for e in _take(a, 3)]
        assert [e.seq for e in a_events] == [1, 2, 3]
    finally:
        await close_all(b_stream, a, b, c)


async def _take(client: Client, n: int) -> AsyncIterator[Event]:
    events = client.events(since=0)
    try:
        for _ in range(n):
            yield await asyncio.wait_for(anext(events), WAIT)
    finally:
        await events.aclose()


async def test_several_devices_each_receive_every_event(server: Server) -> None:
    a, b = await asyncio.gather(new_member(server), new_member(server))
    b_phone = await Client.login(server.url, b.username, "correct horse battery")
    conv = await a.start_conversation([b.username])
    laptop = await live(b)
    laptop2 = await live(b)  # a second socket on the same token
    phone = await live(b_phone)
    try:
        sent = [await a.send(conv.id, f"to every device {i}") for i in range(5)]
        sent.append(await laptop.send(conv.id, "from the laptop"))
        await b_phone.mark(conv.id, sent[-1].id)
        seen = []
        for stream, expected in ((laptop2, sent), (phone, sent), (laptop, sent[:-1])):
            # The laptop's socket has the ack of its own send, not an echo of it.
            events = [await stream.next_event(WAIT) for _ in range(len(expected) + 1)]
            assert [e.type for e in events] == ["message.new"] * len(expected) + ["receipt"]
            assert [e.message.id for e in events[:-1] if e.message] == [m.id for m in expected]
            seen.append([e.seq for e in events])
        # One user, one sequence: every device sees the same seqs (the sending socket skips one).
        assert seen[0] == seen[1] == sorted(set(seen[0]))
        assert seen[2] == [seq for seq in seen[0] if seq != seen[0][-2]]
    finally:
        await close_all(laptop, laptop2, phone, a, b, b_phone)


# -- resuming -------------------------------------------------------------------------------------


async def test_reconnect_with_since_replays_exactly_the_missed_events(server: Server) -> None:
    a, b = await asyncio.gather(new_member(server), new_member(server))
    conv = await a.start_conversation([b.username])
    ws = await open_raw(server, b.token, since=0)
    try:
        _, start = await until_ready(ws)
        before = [await a.send(conv.id, f"seen {i}") for i in range(3)]
        received = [await recv(ws) for _ in before]
        assert [f["message"]["id"] for f in received] == [m.id for m in before]
        last = received[-1]["seq"]
        assert last == start + 3
        await ws.close()

        missed = [await a.send(conv.id, f"missed {i}") for i in range(7)]
        await a.delete_message(missed[3].id)

        ws = await open_raw(server, b.token, since=last)
        replayed, ready = await until_ready(ws)
        assert [f["type"] for f in replayed] == ["message.new"] * 7 + ["message.deleted"]
        assert [f["seq"] for f in replayed] == list(range(last + 1, last + 9))
        assert [f["message"]["id"] for f in replayed[:7]] == [m.id for m in missed]
        assert [f["message"]["text"] for f in replayed[:7]] == [
            "missed 0",
            "missed 1",
            "missed 2",
            None,  # deleted meanwhile: the replay carries the tombstone, not the text
            "missed 4",
            "missed 5",
            "missed 6",
        ]
        assert replayed[7]["message_id"] == missed[3].id
        assert ready == last + 8
        # Then live events, nothing repeated.
        now = await a.send(conv.id, "live again")
        frame = await recv(ws)
        assert (frame["type"], frame["seq"], frame["message"]["id"]) == ("message.new", ready + 1, now.id)
        sentinel = await a.send(conv.id, "sentinel")
        frame = await recv(ws)
        assert (frame["seq"], frame["message"]["id"]) == (ready + 2, sentinel.id)
        # since = the latest seq: nothing to replay.
        await ws.close()
        ws = await open_raw(server, b.token, since=ready + 2)
        assert await until_ready(ws) == ([], ready + 2)
    finally:
        await ws.close()
        await close_all(a, b)


async def test_dropped_connection_mid_burst_loses_nothing(server: Server) -> None:
    a, b = await asyncio.gather(new_member(server), new_member(server))
    conv = await a.start_conversation([b.username])
    sender = await a.connect()
    total = 150

    async def burst() -> list[int]:
        return [(await sender.send(conv.id, f"burst {i}")).id for i in range(total)]

    ws = await open_raw(server, b.token, since=0)
    _, last = await until_ready(ws)
    task = asyncio.create_task(burst())
    try:
        got: list[int] = []
        seqs: list[int] = []
        while len(got) < 10:
            frame = await recv(ws)
            if frame["type"] == "message.new":
                got.append(frame["message"]["id"])
                seqs.append(frame["seq"])
        ws.transport.abort()  # no closing handshake: the network went away
        # Resume while the burst goes on.
        ws = await open_raw(server, b.token, since=seqs[-1])
        while len(got) < total:
            frame = await recv(ws)
            if frame["type"] == "message.new":
                got.append(frame["message"]["id"])
                seqs.append(frame["seq"])
        sent = await asyncio.wait_for(task, 30)
        assert got == sent, "every message once, in order"
        assert seqs == list(range(last + 1, last + total + 1))
    finally:
        task.cancel()
        await ws.close()
        await close_all(sender, a, b)


async def test_sender_drop_and_retry_never_duplicates(server: Server) -> None:
    a, b = await asyncio.gather(new_member(server), new_member(server))
    conv = await a.start_conversation([b.username])
    keys = [uuid.uuid4().hex for _ in range(20)]
    ws = await open_raw(server, a.token)
    try:
        await until_ready(ws)
        for i, key in enumerate(keys):
            frame = {
                "type": "send",
                "ref": i,
                "conversation_id": conv.id,
                "text": f"m{i}",
                "idempotency_key": key,
            }
            await ws.send(orjson.dumps(frame).decode())
        ws.transport.abort()  # acks (if any) are lost: the client cannot know what was stored
        stream = await a.connect()
        retried = [await stream.send(conv.id, f"m{i}", idempotency_key=key) for i, key in enumerate(keys)]
        await stream.close()
        assert len({m.id for m in retried}) == 20
        history = await b.history(conv.id)
        assert [m.text for m in history] == [f"m{i}" for i in range(20)]
        assert [m.id for m in history] == [m.id for m in retried]
    finally:
        await close_all(a, b)


async def test_since_ahead_of_the_server_is_refused_not_a_silent_stall(server: Server) -> None:
    """A `since` beyond the member's last seq (a client from a restored backup, a bug) must not
    silence the stream: either a clear 4400 refusal or the live events still arrive."""
    a, b = await asyncio.gather(new_member(server), new_member(server))
    conv = await a.start_conversation([b.username])
    ws = await open_raw(server, b.token, since=1_000_000)
    try:
        frame = await recv(ws)
        if frame["type"] == "error":
            code, _ = await closed_with(ws)
            assert code == 4400
            assert frame["problem"]["status"] == 400 or frame["problem"]["status"] == 422
            return
        assert frame["type"] == "ready"
        sent = await a.send(conv.id, "are you there?")
        try:
            frame = await recv(ws, wait=3)
        except TimeoutError:
            pytest.fail("a stream opened with since ahead of the server stays silent", pytrace=False)
        assert frame["type"] == "message.new" and frame["message"]["id"] == sent.id
    finally:
        await ws.close()
        await close_all(a, b)


async def test_events_iterator_yields_the_full_ordered_history(server: Server) -> None:
    a, b = await asyncio.gather(new_member(server), new_member(server))
    try:
        conv = await a.start_conversation([b.username])
        m1 = await a.send(conv.id, "first")
        m2 = await a.send(conv.id, "second")
        m3 = await b.send(conv.id, "third")
        await b.mark(conv.id, m2.id)
        await a.delete_message(m1.id)

        events = b.events(since=0)
        got = [await asyncio.wait_for(anext(events), WAIT) for _ in range(6)]
        assert [e.type for e in got] == [
            "conversation.updated",
            "message.new",
            "message.new",
            "message.new",
            "receipt",
            "message.deleted",
        ]
        assert [e.seq for e in got] == [1, 2, 3, 4, 5, 6]
        messages = [e.message for e in got[1:4]]
        assert [m.id for m in messages if m] == [m1.id, m2.id, m3.id]
        assert [m.text for m in messages if m] == [None, "second", "third"]  # m1 is a tombstone now
        assert got[4].data["message_id"] == m2.id and got[4].data["user"] == b.username
        assert got[5].data["message_id"] == m1.id
        # Then it goes on live.
        m4 = await a.send(conv.id, "fourth")
        event = await asyncio.wait_for(anext(events), WAIT)
        assert event.type == "message.new" and event.seq == 7
        assert event.message is not None and event.message.id == m4.id
        await events.aclose()

        # Resuming from the middle gives the rest.
        resumed = b.events(since=4)
        rest = [await asyncio.wait_for(anext(resumed), WAIT) for _ in range(3)]
        assert [e.seq for e in rest] == [5, 6, 7]
        await resumed.aclose()
    finally:
        await close_all(a, b)


# -- auth -----------------------------------------------------------------------------------------


async def test_stream_refuses_bad_or_missing_tokens(server: Server) -> None:
    member = await new_member(server)
    try:
        # A bad bearer token.
        code, frames = await closed_with(await open_raw(server, "not-a-real-token"))
        assert code == 4401
        assert frames and frames[0]["type"] == "error" and frames[0]["problem"]["status"] == 401
        assert "not-a-real-token" not in str(frames)
        # No token, and a first frame that is not an auth frame.
        ws = await open_raw(server, None)
        await ws.send(orjson.dumps({"type": "ping", "ref": 1}).decode())
        code, frames = await closed_with(ws)
        assert code == 4401
        assert all(f["type"] != "pong" for f in frames)
        # No token, and an auth frame with a bad token.
        ws = await open_raw(server, None)
        await ws.send(orjson.dumps({"type": "auth", "token": "bogus"}).decode())
        code, _ = await closed_with(ws)
        assert code == 4401
        # No token, and garbage.
        ws = await open_raw(server, None)
        await ws.send("{{{")
        code, _ = await closed_with(ws)
        assert code == 4401
        # A bad since is a 4400 (even with a good token).
        for since in ("-1", "abc", str(2**70)):
            code, _ = await closed_with(await open_raw(server, member.token, since=since))
            assert code == 4400, since
    finally:
        await member.close()


async def test_sdk_stream_with_a_revoked_token_fails_clearly(server: Server) -> None:
    member = await new_member(server)
    try:
        await member.logout()
        # A Stream the server refuses ends (ConnectionClosed) instead of waiting forever...
        stream = await member.connect(0)
        try:
            event = await stream.next_event(5)
        except websockets.ConnectionClosed:
            pass
        except TimeoutError:
            pytest.fail("Stream.next_event hangs after the server closed the socket with 4401", pytrace=False)
        else:
            pytest.fail(f"a refused stream yielded {event}", pytrace=False)
        finally:
            await stream.close()
        # ...and events() raises a 401 instead of retrying (or hanging) forever.
        events = member.events()
        try:
            await asyncio.wait_for(anext(events), 5)
        except KeyholdError as exc:
            assert exc.status == 401
        except TimeoutError:
            pytest.fail("Client.events() hangs on a revoked token instead of raising 401", pytrace=False)
        else:
            pytest.fail("Client.events() yielded an event on a revoked token", pytrace=False)
    finally:
        await member.close()


async def test_auth_frame_works(server: Server) -> None:
    a, b = await asyncio.gather(new_member(server), new_member(server))
    conv = await a.start_conversation([b.username])
    earlier = await a.send(conv.id, "before you connected")
    b_stream = await live(b)
    ws = await open_raw(server, None)
    try:
        await ws.send(orjson.dumps({"type": "auth", "token": a.token, "since": 1}).decode())
        replayed, ready = await until_ready(ws)
        assert [f["seq"] for f in replayed] == [2]
        assert replayed[0]["message"]["id"] == earlier.id
        assert ready == 2
        await ws.send(orjson.dumps({"type": "ping", "ref": "p"}).decode())
        assert await recv(ws) == {"type": "pong", "ref": "p"}
        frame = {"type": "send", "ref": "s1", "conversation_id": conv.id, "text": "via auth frame"}
        await ws.send(orjson.dumps(frame).decode())
        ack = await recv(ws)  # the ack carries the message; this socket gets no echo of it
        assert ack["type"] == "ack" and ack["ref"] == "s1" and ack["message"]["text"] == "via auth frame"
        event = await next_of(b_stream, "message.new")
        assert event.message is not None and event.message.id == ack["message"]["id"]
    finally:
        await ws.close()
        await close_all(b_stream, a, b)


# -- malformed frames -----------------------------------------------------------------------------


async def test_malformed_frames_get_an_error_and_the_socket_stays_usable(server: Server) -> None:
    a, b = await asyncio.gather(new_member(server), new_member(server))
    conv = await a.start_conversation([b.username])
    b_stream = await live(b)
    ws = await open_raw(server, a.token)
    cid = conv.id
    cases: list[tuple[str | bytes, Any]] = [
        ("this is not json", None),
        (b"\xff\xfe\x00 invalid utf-8", None),
        ("[1, 2, 3]", None),
        ("null", None),
        ('"send"', None),
        ('{"type": "send", "ref": 1, "conversation_id": 1, "text": "x"', None),  # truncated
        ({"type": "bogus", "ref": 2}, 2),
        ({"ref": 3}, 3),
        ({"type": "auth", "token": a.token, "ref": 4}, 4),  # already authenticated
        ({"type": "send", "ref": 5}, 5),
        ({"type": "send", "ref": 6, "text": "no conversation"}, 6),
        ({"type": "send", "ref": 7, "conversation_id": str(cid), "text": "x"}, 7),
        ({"type": "send", "ref": 8, "conversation_id": cid, "text": 42}, 8),
        ({"type": "send", "ref": 9, "conversation_id": cid, "text": ["x"]}, 9),
        ({"type": "send", "ref": 10, "conversation_id": cid, "text": "x" * 4001}, 10),
        ({"type": "send", "ref": 11, "conversation_id": cid, "text": ""}, 11),
        ({"type": "send", "ref": 12, "conversation_id": cid, "text": "   "}, 12),
        ({"type": "send", "ref": 13, "conversation_id": cid, "text": "x", "extra": 1}, 13),
        ({"type": "send", "ref": 14, "conversation_id": 0, "text": "x"}, 14),
        ({"type": "send", "ref": 15, "conversation_id": 2**60, "text": "x"}, 15),
        ({"type": "send", "ref": 16, "conversation_id": cid, "text": "x", "idempotency_key": ""}, 16),
        ({"type": "send", "ref": 17, "conversation_id": cid, "text": "x", "idempotency_key": 7}, 17),
        ({"type": "send", "ref": 18, "conversation_id": True, "text": "x"}, 18),
        ({"type": "send", "ref": 19, "conversation_id": 1.5, "text": "x"}, 19),
        ({"type": "receipt", "ref": 20, "conversation_id": cid, "receipt": "seen", "message_id": 1}, 20),
        ({"type": "receipt", "ref": 21, "conversation_id": cid, "receipt": "read"}, 21),
        ({"type": "ping", "ref": {"nested": True}}, None),
        ({"type": "send", "ref": "x" * 65, "conversation_id": cid, "text": "x"}, "x" * 65),
        ({"type": ["send"], "ref": 22}, 22),
    ]
    try:
        await until_ready(ws)
        for n, (payload, ref) in enumerate(cases):
            if isinstance(payload, bytes):
                await ws.send(payload)
            elif isinstance(payload, str):
                await ws.send(payload)
            else:
                await ws.send(orjson.dumps(payload).decode())
            error = await recv(ws)
            assert error["type"] == "error", (payload, error)
            assert error["ref"] == ref, (payload, error)
            problem = error["problem"]
            assert 400 <= problem["status"] < 500, (payload, problem)
            assert problem["detail"] and problem["title"], (payload, problem)
            if isinstance(payload, dict) and "token" in payload:
                assert a.token not in str(error), "secrets never echo"
            # The connection is still usable.
            await ws.send(orjson.dumps({"type": "ping", "ref": f"after-{n}"}).decode())
            assert await recv(ws) == {"type": "pong", "ref": f"after-{n}"}, payload

        # Nothing was written: b heard nothing but the next real message, and history has only it.
        good = {"type": "send", "ref": "ok", "conversation_id": cid, "text": "finally valid"}
        await ws.send(orjson.dumps(good).decode())
        ack = await recv(ws)
        assert ack["type"] == "ack" and ack["ref"] == "ok"
        event = await b_stream.next_event(WAIT)
        assert event.type == "message.new" and event.message is not None
        assert event.message.id == ack["message"]["id"]
        assert [m.text for m in await b.history(cid)] == ["finally valid"]
    finally:
        await ws.close()
        await close_all(b_stream, a, b)


async def test_text_too_long_over_the_socket_is_422(server: Server) -> None:
    a, b = await asyncio.gather(new_member(server), new_member(server))
    conv = await a.start_conversation([b.username])
    stream = await a.connect()
    try:
        with pytest.raises(KeyholdError) as info:
            await stream.send(conv.id, "y" * 4001)
        assert info.value.status == 422
        assert "4000" in info.value.problem["detail"]
        ok = await stream.send(conv.id, "y" * 4000)
        assert [m.id for m in await b.history(conv.id)] == [ok.id]
    finally:
        await close_all(stream, a, b)


async def test_socket_send_to_a_foreign_conversation_is_404(server: Server) -> None:
    a, b, outsider = await asyncio.gather(new_member(server), new_member(server), new_member(server))
    conv = await a.start_conversation([b.username])
    kept = await a.send(conv.id, "members only")
    a_stream = await live(a)
    stream = await outsider.connect()
    ws = await open_raw(server, outsider.token)
    try:
        for cid in (conv.id, 2**50):
            with pytest.raises(KeyholdError) as info:
                await stream.send(cid, "let me in")
            assert info.value.status == 404
            with pytest.raises(KeyholdError) as info:
                await stream.mark(cid, kept.id)
            assert info.value.status == 404
        # The raw frames: error with the ref, the socket still usable.
        await until_ready(ws)
        frame = {"type": "send", "ref": "intrude", "conversation_id": conv.id, "text": "hello?"}
        await ws.send(orjson.dumps(frame).decode())
        error = await recv(ws)
        assert error["type"] == "error" and error["ref"] == "intrude"
        assert error["problem"]["status"] == 404
        assert "members only" not in str(error)
        assert (await stream.send((await outsider.start_conversation([a.username])).id, "hi")).text == "hi"
        # Nothing reached the conversation or its members.
        assert [m.id for m in await b.history(conv.id)] == [kept.id]
        event = await next_of(a_stream, "message.new")
        assert event.message is not None and event.message.text == "hi"
        assert event.message.conversation_id != conv.id
    finally:
        await ws.close()
        await close_all(a_stream, stream, a, b, outsider)
