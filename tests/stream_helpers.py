"""WebSocket helpers shared by the delivery tests."""

from __future__ import annotations

import asyncio

from keyhold.sdk import Client, Event, Stream

WAIT = 10.0


async def live(client: Client, wait: float = WAIT) -> Stream:
    """A stream positioned after every event so far (replayed ones are consumed)."""
    stream = await client.connect(0)
    await asyncio.wait_for(stream.ready.wait(), wait)
    upto = stream.last_seq
    while upto and (await stream.next_event(wait)).seq < upto:
        pass
    return stream


async def next_of(
    stream: Stream, kind: str, skip: tuple[str, ...] | None = ("conversation.updated",), wait: float = WAIT
) -> Event:
    """The next event of `kind`; events of the types in `skip` are passed over and any other
    fails the test (`skip=None` passes over everything)."""
    while True:
        event = await stream.next_event(wait)
        if event.type == kind:
            return event
        assert skip is None or event.type in skip, f"unexpected {event.type} while waiting for {kind}"


async def close_all(*closeables: Client | Stream) -> None:
    for item in closeables:
        await item.close()
