"""Messages against a real server: send and history (1:1, groups, cursors both ways),
idempotent retries (REST and WebSocket), receipts, delete for everyone, attachments, limits."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest

from conftest import TLS, Server, new_member, start_server, stop_server
from keyhold.sdk import Client, KeyholdError
from keyhold.sdk.client import Event, Message
from stream_helpers import close_all, live, next_of

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
MIB = 1024 * 1024


def auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.token}"}


async def raw(client: Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(verify=TLS, base_url=client.base_url + API, headers=auth(client), timeout=60) as http:
        return await http.request(method, path, **kwargs)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem = response.json()
    assert problem["status"] == status
    assert problem["detail"]
    return dict(problem)


async def pair(server: Server) -> tuple[Client, Client, int]:
    a, b = await asyncio.gather(new_member(server), new_member(server))
    conv = await a.start_conversation([b.username])
    return a, b, conv.id


# -- send and history -----------------------------------------------------------------------------


async def test_send_and_history_direct(server: Server) -> None:
    a, b, cid = await pair(server)
    try:
        first = await a.send(cid, "hello b")
        assert first.conversation_id == cid
        assert first.sender == a.username
        assert first.text == "hello b"
        assert first.kind == "text" and not first.deleted
        assert first.sent_at.endswith("Z")
        reply = await b.send(cid, "héllo a — ünïcode ✓ 🎉")
        assert reply.id > first.id
        for reader in (a, b):
            history = await reader.history(cid)
            assert [(m.id, m.sender, m.text) for m in history] == [
                (first.id, a.username, "hello b"),
                (reply.id, b.username, "héllo a — ünïcode ✓ 🎉"),
            ]
            assert history[0].sent_at == first.sent_at
    finally:
        await close_all(a, b)


async def test_send_and_history_group(server: Server) -> None:
    people = list(await asyncio.gather(*(new_member(server) for _ in range(4))))
    try:
        group = await people[0].start_conversation([p.username for p in people[1:]], title="four")
        sent = []
        for round_ in range(2):
            for person in people:
                sent.append(await person.send(group.id, f"{person.username} says {round_}"))
        expected = [(m.id, m.sender, m.text) for m in sent]
        assert [m[0] for m in expected] == sorted(m[0] for m in expected)
        for person in people:
            history = await person.history(group.id)
            assert [(m.id, m.sender, m.text) for m in history] == expected
    finally:
        await close_all(*people)


async def test_history_pagination_both_directions(server: Server) -> None:
    a, b, cid = await pair(server)
    try:
        sent: list[Message] = []
        for start in range(0, 120, 30):  # concurrent sends, batched by the server's writer
            batch = await asyncio.gather(
                *((a if i % 2 else b).send(cid, f"message {i:03d}") for i in range(start, start + 30))
            )
            sent.extend(batch)
        ids = sorted(m.id for m in sent)
        assert len(set(ids)) == 120
        texts = {m.id: m.text for m in sent}

        # Backwards from the newest, 50 at a time: 50, 50, 20, then the cursor ends.
        pages: list[list[dict[str, Any]]] = []
        before: int | None = None
        while True:
            params: dict[str, Any] = {"limit": 50}
            if before is not None:
                params["before"] = before
            body = (await raw(b, "GET", f"/conversations/{cid}/messages", params=params)).json()
            pages.append(body["items"])
            before = body["next_before"]
            if before is None:
                break
            assert len(pages) < 10
        assert [len(p) for p in pages] == [50, 50, 20]
        for page in pages:
            page_ids = [m["id"] for m in page]
            assert page_ids == sorted(page_ids), "each page is oldest first"
        walked = [m["id"] for page in reversed(pages) for m in page]
        assert walked == ids
        assert all(m["text"] == texts[m["id"]] for page in pages for m in page)

        # Forwards from the start with the SDK: 40, 40, 40, then an empty page.
        forward: list[int] = []
        after = 0
        while True:
            page = await a.history(cid, limit=40, after=after)
            if not page:
                break
            forward += [m.id for m in page]
            after = page[-1].id
            assert len(forward) <= 120
        assert forward == ids

        # Backwards with a page size that divides 120: the last cursor leads to an empty page.
        backward: list[int] = []
        cursor: int | None = None
        while True:
            page = await a.history(cid, limit=40, before=cursor)
            if not page:
                break
            backward = [m.id for m in page] + backward
            cursor = page[0].id
            assert len(backward) <= 120
        assert backward == ids

        # Windows in the middle are exact, too.
        middle = await a.history(cid, limit=10, after=ids[59])
        assert [m.id for m in middle] == ids[60:70]
        middle = await a.history(cid, limit=10, before=ids[60])
        assert [m.id for m in middle] == ids[50:60]

        assert_problem(
            await raw(a, "GET", f"/conversations/{cid}/messages", params={"before": ids[5], "after": ids[1]}),
            422,
        )
        for bad in ({"limit": 0}, {"limit": 201}, {"before": "abc"}, {"after": -1}):
            assert_problem(await raw(a, "GET", f"/conversations/{cid}/messages", params=bad), 422)
    finally:
        await close_all(a, b)


# -- idempotency ----------------------------------------------------------------------------------


async def test_idempotent_retry_over_rest(server: Server) -> None:
    a, b, cid = await pair(server)
    try:
        key = uuid.uuid4().hex
        first = await a.send(cid, "exactly once", idempotency_key=key)
        retry = await a.send(cid, "exactly once", idempotency_key=key)
        assert retry.id == first.id
        assert retry.text == "exactly once"
        assert retry.sent_at == first.sent_at
        # Concurrent retries of a new key land in one message as well.
        key2 = uuid.uuid4().hex
        burst = await asyncio.gather(*(a.send(cid, "burst", idempotency_key=key2) for _ in range(8)))
        assert len({m.id for m in burst}) == 1
        # The key belongs to its sender: another member's same key is another message.
        theirs = await b.send(cid, "same key, other sender", idempotency_key=key)
        assert theirs.id != first.id
        history = await b.history(cid)
        assert [m.text for m in history] == ["exactly once", "burst", "same key, other sender"]
    finally:
        await close_all(a, b)


async def test_idempotency_key_reused_for_another_conversation_is_not_a_silent_success(
    server: Server,
) -> None:
    """A key already used by this sender in another conversation is not a retry of this send:
    answering 201 with the other conversation's message would tell the client its message was
    stored here when nothing was (the recipient never gets it)."""
    a, b, first = await pair(server)
    c = await new_member(server)
    try:
        second = (await a.start_conversation([c.username])).id
        key = uuid.uuid4().hex
        await a.send(first, "to b", idempotency_key=key)
        response = await raw(
            a, "POST", f"/conversations/{second}/messages", json={"text": "to c", "idempotency_key": key}
        )
        if response.status_code < 400:
            message = response.json()
            assert message["conversation_id"] == second, "acknowledged a message of another conversation"
            assert [m.text for m in await c.history(second)] == ["to c"]
        else:
            assert_problem(response, response.status_code)
            assert response.status_code in (409, 422)
            assert await c.history(second) == []
        assert [m.text for m in await b.history(first)] == ["to b"]
    finally:
        await close_all(a, b, c)


async def test_idempotent_retry_over_websocket(server: Server) -> None:
    a, b, cid = await pair(server)
    watcher = await live(b)
    stream = await a.connect()
    try:
        key = uuid.uuid4().hex
        first = await stream.send(cid, "once over the socket", idempotency_key=key)
        again = await stream.send(cid, "once over the socket", idempotency_key=key)
        assert again.id == first.id
        # The same key over REST, or from a reconnected socket, finds the same message.
        assert (await a.send(cid, "once over the socket", idempotency_key=key)).id == first.id
        await stream.close()
        stream = await a.connect()
        assert (await stream.send(cid, "once over the socket", idempotency_key=key)).id == first.id

        sentinel = await stream.send(cid, "sentinel")
        assert [m.id for m in await b.history(cid)] == [first.id, sentinel.id]
        # The recipient was told once.
        event = await next_of(watcher, "message.new")
        assert event.message is not None and event.message.id == first.id
        event = await next_of(watcher, "message.new")
        assert event.message is not None and event.message.id == sentinel.id
    finally:
        await close_all(stream, watcher, a, b)


# -- receipts -------------------------------------------------------------------------------------


async def test_delivery_and_read_receipts(server: Server) -> None:
    a, b, cid = await pair(server)
    a_stream = await live(a)
    try:
        m1 = await a.send(cid, "one")
        m2 = await a.send(cid, "two")
        for _ in range(2):
            await next_of(a_stream, "message.new")  # the sender's own devices hear its messages
        assert (await b.conversation(cid)).unread == 2

        assert await b.mark(cid, m1.id, "delivered") is True
        event = await next_of(a_stream, "receipt")
        assert event.data["conversation_id"] == cid
        assert event.data["user"] == b.username
        assert event.data["receipt"] == "delivered"
        assert event.data["message_id"] == m1.id
        assert (await b.conversation(cid)).unread == 2, "delivered is not read"

        assert await b.mark(cid, m2.id, "read") is True
        event = await next_of(a_stream, "receipt")
        assert (event.data["user"], event.data["receipt"], event.data["message_id"]) == (
            b.username,
            "read",
            m2.id,
        )
        assert (await b.conversation(cid)).unread == 0
        assert {c.id: c.unread for c in await b.conversations()}[cid] == 0

        # Marking the same point again (or an older one) changes nothing and tells nobody.
        assert await b.mark(cid, m2.id, "read") is False
        assert await b.mark(cid, m1.id, "read") is False
        m3 = await a.send(cid, "three")
        event = await next_of(a_stream, "message.new")
        assert event.message is not None and event.message.id == m3.id
        assert (await b.conversation(cid)).unread == 1

        # Over the WebSocket as well.
        b_stream = await b.connect()
        await b_stream.mark(cid, m3.id, "read")
        event = await next_of(a_stream, "receipt")
        assert (event.data["user"], event.data["receipt"], event.data["message_id"]) == (
            b.username,
            "read",
            m3.id,
        )
        assert (await b.conversation(cid)).unread == 0
        await b_stream.close()
    finally:
        await close_all(a_stream, a, b)


async def test_receipts_refuse_bad_targets(server: Server) -> None:
    a, b, cid = await pair(server)
    c = await new_member(server)
    try:
        other = await a.start_conversation([c.username])
        elsewhere = await a.send(other.id, "in another conversation")
        here = await a.send(cid, "here")
        with pytest.raises(KeyholdError) as info:
            await b.mark(cid, elsewhere.id)
        assert info.value.status == 404
        with pytest.raises(KeyholdError) as info:
            await b.mark(cid, here.id + 10_000)
        assert info.value.status == 404
        response = await raw(
            b, "POST", f"/conversations/{cid}/receipts", json={"type": "seen", "message_id": here.id}
        )
        assert_problem(response, 422)
        response = await raw(
            b, "POST", f"/conversations/{cid}/receipts", json={"type": "read", "message_id": "1"}
        )
        assert_problem(response, 422)
        assert (await b.conversation(cid)).unread == 1
    finally:
        await close_all(a, b, c)


# -- delete for everyone --------------------------------------------------------------------------


async def test_delete_for_everyone(server: Server) -> None:
    a, b, cid = await pair(server)
    a_stream = await live(a)
    b_stream = await live(b)
    try:
        keep = await a.send(cid, "this stays")
        doomed = await a.send(cid, "this goes away")
        for stream in (a_stream, b_stream):
            for _ in range(2):
                await next_of(stream, "message.new")

        # Only the sender may delete: the recipient gets 403 and the content stays.
        with pytest.raises(KeyholdError) as info:
            await b.delete_message(doomed.id)
        assert info.value.status == 403
        assert [m.text for m in await b.history(cid)] == ["this stays", "this goes away"]

        tombstone = await a.delete_message(doomed.id)
        assert tombstone.id == doomed.id
        assert tombstone.deleted is True
        assert tombstone.text is None
        for stream in (a_stream, b_stream):
            event = await next_of(stream, "message.deleted")
            assert event.data["message_id"] == doomed.id
            assert event.data["conversation_id"] == cid
            assert "this goes away" not in str(event.data)

        for reader in (a, b):
            history = await reader.history(cid)
            assert [m.id for m in history] == [keep.id, doomed.id]
            assert history[0].text == "this stays" and not history[0].deleted
            assert history[1].deleted is True
            assert history[1].text is None
            assert history[1].sender == a.username
        preview = (await b.conversation(cid)).last_message
        assert preview is not None and preview["deleted"] is True and preview["preview"] is None
        # A deleted message no longer counts as unread.
        assert (await b.conversation(cid)).unread == 1

        # Deleting again is harmless; an unknown id is 404.
        again = await a.delete_message(doomed.id)
        assert again.deleted and again.text is None
        with pytest.raises(KeyholdError) as info:
            await a.delete_message(doomed.id + 10_000)
        assert info.value.status == 404

        # A replay from the beginning does not bring the content back.
        replay = await b.connect(0)
        await asyncio.wait_for(replay.ready.wait(), 10)
        seen: dict[int, Event] = {}
        while True:
            event = await replay.next_event()
            if event.type == "message.new" and event.message is not None:
                seen[event.message.id] = event
            if event.seq >= replay.last_seq:
                break
        await replay.close()
        assert seen[keep.id].message is not None and seen[keep.id].message.text == "this stays"
        deleted_event = seen[doomed.id].message
        assert deleted_event is not None and deleted_event.text is None and deleted_event.deleted
    finally:
        await close_all(a_stream, b_stream, a, b)


# -- attachments ----------------------------------------------------------------------------------


async def test_attachment_round_trip(server: Server) -> None:
    a, b, cid = await pair(server)
    b_stream = await live(b)
    try:
        data = os.urandom(300_000) + bytes(range(256)) + "ünïcode".encode()
        uploaded = await a.upload(cid, data, "holiday photo.png", "image/png")
        assert uploaded.size == len(data)
        assert uploaded.filename == "holiday photo.png"
        assert uploaded.content_type == "image/png"
        message = await a.send(cid, "look at this", attachment_id=uploaded.id)
        assert message.kind == "attachment"
        assert message.attachment == uploaded

        event = await next_of(b_stream, "message.new")
        assert event.message is not None and event.message.attachment == uploaded
        assert event.message.text == "look at this"
        assert (await b.history(cid))[-1].attachment == uploaded

        assert await b.download(uploaded.id) == data
        response = await raw(b, "GET", f"/attachments/{uploaded.id}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("image/png")
        assert "holiday%20photo.png" in response.headers["content-disposition"]
        assert response.headers["x-content-type-options"] == "nosniff"

        # Any name, percent-encoded in the Keyhold-Filename header, comes back as it was written.
        name = "Überweisung 3/4 ✓ 🧾 \"final\"; v2.pdf"
        odd = await a.upload(cid, b"%PDF", name, "application/pdf")
        assert odd.filename == name
        saved = (await raw(b, "GET", f"/attachments/{odd.id}")).headers["content-disposition"]
        assert unquote(saved.split("filename*=UTF-8''", 1)[1]) == name

        # A file-only message (no text) works; an attachment is sent once only.
        only = await a.send_file(cid, b"just a file", "plain.txt", "text/plain")
        assert only.attachment is not None and only.text == ""
        with pytest.raises(KeyholdError) as info:
            await a.send(cid, "again", attachment_id=uploaded.id)
        assert info.value.status == 409
        # Someone else's upload, or an unknown id, cannot be sent.
        theirs = await b.upload(cid, b"b's file", "b.txt")
        with pytest.raises(KeyholdError) as info:
            await a.send(cid, "stolen", attachment_id=theirs.id)
        assert info.value.status == 404
        with pytest.raises(KeyholdError) as info:
            await a.send(cid, "made up", attachment_id="a_doesnotexist")
        assert info.value.status == 404
        with pytest.raises(KeyholdError) as info:
            await a.upload(cid, b"", "empty.bin")
        assert info.value.status == 422
        assert_problem(await raw(b, "GET", "/attachments/a_doesnotexist"), 404)

        # Deleting the message destroys the file.
        await a.delete_message(message.id)
        with pytest.raises(KeyholdError) as info:
            await b.download(uploaded.id)
        assert info.value.status in (404, 410)
    finally:
        await close_all(b_stream, a, b)


async def test_bad_file_names_beside_good_uploads_fail_alone(server: Server) -> None:
    """40 uploads at once, every other one with a name the server refuses (in the URL, raw
    UTF-8, NUL, not UTF-8): each bad one gets its 422, each good one its file."""
    a, b, cid = await pair(server)
    bad = [
        {"params": {"filename": "in-url.txt"}},
        {"headers": {"Keyhold-Filename": "caf\u00e9.txt".encode()}},
        {"headers": {"Keyhold-Filename": "a%00b.txt"}},
        {"headers": {"Keyhold-Filename": "caf%E9.txt"}},
    ]
    try:
        requests = [
            bad[i // 2 % len(bad)] if i % 2 else {"headers": {"Keyhold-Filename": quote(f"good {i} ✓.txt")}}
            for i in range(40)
        ]
        answers = await asyncio.gather(
            *(raw(a, "POST", f"/conversations/{cid}/attachments", content=f"file {i}".encode(), **kw)
              for i, kw in enumerate(requests))
        )  # fmt: skip
        for i, answer in enumerate(answers):
            if i % 2:
                assert_problem(answer, 422)
            else:
                assert answer.status_code == 201, answer.text
                assert answer.json()["filename"] == f"good {i} ✓.txt"
                assert await b.download(answer.json()["id"]) == f"file {i}".encode()
    finally:
        await close_all(a, b)


async def test_attachment_of_exactly_10_mib_is_accepted(server: Server) -> None:
    a, b, cid = await pair(server)
    try:
        exact = await a.upload(cid, b"\1" * (10 * MIB), "exact.bin")
        assert exact.size == 10 * MIB
        assert await b.download(exact.id) == b"\1" * (10 * MIB)
    finally:
        await close_all(a, b)


async def test_attachment_over_10_mib_is_413(server: Server) -> None:
    """The client must be able to read the 413: a server that answers without draining the
    body resets the connection under the client's feet (httpx.ReadError) instead."""
    a, b, cid = await pair(server)
    try:
        response = await raw(
            a,
            "POST",
            f"/conversations/{cid}/attachments",
            headers={"Keyhold-Filename": "big.bin"},
            content=b"\0" * (10 * MIB + 1),
        )
        problem = assert_problem(response, 413)
        assert str(10 * MIB) in problem["detail"]
        assert await b.history(cid) == []
    finally:
        await close_all(a, b)


@pytest.fixture(scope="module")
def small_attachment_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("small") / "kh", env={"KEYHOLD_MAX_ATTACHMENT_BYTES": "4096"})
    yield srv
    stop_server(srv)


async def test_attachment_limit_is_configurable(small_attachment_server: Server) -> None:
    a, b, cid = await pair(small_attachment_server)
    try:
        assert (await a.upload(cid, b"x" * 4096, "fits.bin")).size == 4096
        for size in (4097, 100_000):
            with pytest.raises(KeyholdError) as info:
                await a.upload(cid, b"x" * size, "too-big.bin")
            assert info.value.status == 413
            assert "4096" in info.value.problem["detail"]

        async def chunks() -> Any:
            for _ in range(10):
                yield b"y" * 1000

        # Without a Content-Length (chunked), the limit holds as well.
        response = await raw(
            a,
            "POST",
            f"/conversations/{cid}/attachments",
            headers={"Keyhold-Filename": "chunked.bin"},
            content=chunks(),
        )
        assert_problem(response, 413)
    finally:
        await close_all(a, b)


# -- text limits ----------------------------------------------------------------------------------


async def test_text_limits(server: Server) -> None:
    a, b, cid = await pair(server)
    try:
        longest = await a.send(cid, "é" * 4000)
        assert longest.text == "é" * 4000
        for text in ("x" * 4001, "", "   \n\t "):
            with pytest.raises(KeyholdError) as info:
                await a.send(cid, text)
            assert info.value.status == 422
            assert "text" in info.value.problem["detail"]
        for body in (
            {"text": 5},
            {"text": None},
            {"text": "hi", "idempotency_key": ""},
            {"text": "hi", "idempotency_key": "k" * 65},
            {"text": "hi", "unknown": True},
        ):
            assert_problem(await raw(a, "POST", f"/conversations/{cid}/messages", json=body), 422)
        assert [m.id for m in await b.history(cid)] == [longest.id]
    finally:
        await close_all(a, b)
