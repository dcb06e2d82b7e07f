"""The in-process bus: what it queues for a subscriber that replays from storage meanwhile is
bounded in events and in bytes (the subscriber is cut off and resumes from storage), and handed
over in order once it forwards. Before, only events were counted: 10,000 of up to 256 KiB."""

from __future__ import annotations

import asyncio

from keyhold.bus.local import MAX_PENDING, MAX_PENDING_BYTES, LocalBus

WIDE = b"x" * (256 * 1024)
FITS = MAX_PENDING_BYTES // len(WIDE)  # wide events that fit in the bound, exactly


def closed(sub: object) -> bool:
    return bool(sub._closed.is_set())  # type: ignore[attr-defined]


async def test_queued_events_past_the_byte_bound_cut_the_subscriber_off() -> None:
    bus = LocalBus()
    sub = bus.subscribe(1)
    for seq in range(1, FITS + 2):
        bus.publish(1, seq, WIDE)
    await asyncio.wait_for(sub.wait_closed(), 5)
    got: list[int] = []
    sub.forward(lambda seq, _payload: got.append(seq))
    bus.publish(1, FITS + 2, WIDE)
    assert got == [], "a subscriber cut off is handed nothing more"


async def test_queued_events_past_the_count_bound_cut_the_subscriber_off() -> None:
    bus = LocalBus()
    sub = bus.subscribe(1)
    for seq in range(1, MAX_PENDING + 2):
        bus.publish(1, seq, b"{}")
    await asyncio.wait_for(sub.wait_closed(), 5)


async def test_queued_events_within_the_bounds_are_handed_over_in_order_then_live() -> None:
    bus = LocalBus()
    sub = bus.subscribe(1)
    other = bus.subscribe(2)
    for seq in range(1, FITS + 1):
        bus.publish(1, seq, WIDE)
    assert not closed(sub)
    got: list[int] = []
    sub.forward(lambda seq, _payload: got.append(seq))
    # Live from here: handed straight over, never queued, so no bound applies to them.
    for seq in range(FITS + 1, 3 * FITS):
        bus.publish(1, seq, WIDE)
    assert got == list(range(1, 3 * FITS))
    assert not closed(sub) and not closed(other)
    sub.close()
    other.close()
