"""One client's sends are queued for storage in the order sent, however each is screened:
off the loop (answered later, several at once), at once, not at all (encrypted), or held for
the waiting path. The real `SendScreening` with a screen and a writer that record the order;
what the storage then does is in test_stream.py and test_safety_verdicts.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from keyhold.core.messages import SendRequest
from keyhold.core.screening import ALLOWED, Screening, SendScreening, TextToScreen


class Writer:
    def __init__(self) -> None:
        self.order: list[str] = []

    def submit(self, request: SendRequest, done: Callable[[Any], None]) -> None:
        self.order.append(request.text or "encrypted")
        done(None)


class LaterScreen:
    """Answers `text_soon` when told to (as the scan child answers a batch), `text_now` never."""

    def __init__(self) -> None:
        self.waiting: list[Callable[[Screening | None], None]] = []

    def text_soon(self, send: TextToScreen, answer: Callable[[Screening | None], None]) -> bool:
        self.waiting.append(answer)
        return True

    def text_now(self, send: TextToScreen) -> Screening | None:
        return None

    async def text(self, send: TextToScreen) -> Screening:
        return ALLOWED

    def answer_all(self) -> None:
        waiting, self.waiting = self.waiting, []
        for answer in waiting:
            answer(ALLOWED)


def send(text: str, encrypted: bool = False) -> SendRequest:
    return SendRequest(
        sender_id=1,
        sender="a",
        conversation_id=7,
        text=text,
        idempotency_key=None,
        encrypted={"algorithm": "m.megolm.v1.aes-sha2"} if encrypted else None,
    )


async def test_a_send_queued_behind_a_screened_one_is_not_overtaken() -> None:
    """m2 (not screened) waits behind m1; m3 is answered in the same batch as m1 and must not
    be stored before m2 (found by review: it was, m1 m3 m2)."""
    writer, screen = Writer(), LaterScreen()
    screening = SendScreening(None, writer, None, None)  # type: ignore[arg-type]  # no storage needed
    screening.screen = screen  # type: ignore[assignment]
    after = screening.submit(send("m1"), lambda _: None)
    after = screening.submit(send("", encrypted=True), lambda _: None, after)
    after = screening.submit(send("m3"), lambda _: None, after)
    screen.answer_all()  # m1 and m3 at once
    assert after is not None
    await asyncio.wait_for(after, 5)
    assert writer.order == ["m1", "encrypted", "m3"]


async def test_many_sends_in_mixed_ways_keep_their_order() -> None:
    writer, screen = Writer(), LaterScreen()
    screening = SendScreening(None, writer, None, None)  # type: ignore[arg-type]
    screening.screen = screen  # type: ignore[assignment]
    after = None
    expected = []
    for i in range(60):
        encrypted = i % 3 == 1
        after = screening.submit(send("" if encrypted else f"m{i}", encrypted), lambda _: None, after)
        expected.append("encrypted" if encrypted else f"m{i}")
        if i % 7 == 6:
            screen.answer_all()
            await asyncio.sleep(0)
    screen.answer_all()
    assert after is not None
    await asyncio.wait_for(after, 5)
    assert writer.order == expected


async def test_a_long_line_behind_one_screened_send_is_handed_over_in_order() -> None:
    """Thousands of sends queued behind one still being screened (a client pipelining far
    ahead): each goes to storage in order once it is answered, none by recursion (a line
    handed over by nested calls would exceed Python's recursion limit)."""
    writer, screen = Writer(), LaterScreen()
    screening = SendScreening(None, writer, None, None)  # type: ignore[arg-type]
    screening.screen = screen  # type: ignore[assignment]
    after = screening.submit(send("first"), lambda _: None)
    for _ in range(3000):
        after = screening.submit(send("", encrypted=True), lambda _: None, after)
    assert after is not None and not after.done() and writer.order == []
    screen.answer_all()
    await asyncio.wait_for(after, 10)
    assert writer.order == ["first"] + ["encrypted"] * 3000
