"""In-process bus for the embedded deployment: a dict of subscribers per user."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

# A subscriber this far behind (events queued while it replays from storage, which goes at its
# client's pace) is cut off rather than allowed to grow memory without bound: in events, and in
# bytes (an event can be 256 KiB). It resumes from storage. All of it is handed to the stream at
# once when the replay ends, on top of what the replay keeps ahead (1 MiB), so it is well under
# what a stream may hold (`api.stream.MAX_OUTBOX_BYTES`, 4 MiB): a client that keeps up is never
# cut off by that hand-over.
MAX_PENDING = 10_000
MAX_PENDING_BYTES = 2 * 1024 * 1024


class LocalSubscription:
    def __init__(self, bus: LocalBus, user_id: int, origin: int, device: str | None) -> None:
        self.user_id = user_id
        self.origin = origin
        self.device = device
        self._bus = bus
        self._pending: deque[tuple[int, bytes]] = deque()
        self._pending_bytes = 0
        self._forward: Callable[[int, bytes], None] | None = None
        self._closed = asyncio.Event()

    def deliver(self, seq: int, payload: bytes) -> None:
        if self._closed.is_set():
            return
        if self._forward is not None:
            self._forward(seq, payload)
        elif len(self._pending) >= MAX_PENDING or self._pending_bytes + len(payload) > MAX_PENDING_BYTES:
            self.close()
        else:
            self._pending.append((seq, payload))
            self._pending_bytes += len(payload)

    def forward(self, to: Callable[[int, bytes], None]) -> None:
        while self._pending and not self._closed.is_set():
            to(*self._pending.popleft())
        self._pending_bytes = 0
        self._forward = to

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._pending.clear()
            self._bus.unsubscribe(self)


class LocalBus:
    def __init__(self) -> None:
        self._subscribers: dict[int, set[LocalSubscription]] = {}

    def publish(self, user_id: int, seq: int, payload: bytes, origin: int = 0, device: str | None = None) -> None:
        for sub in tuple(self._subscribers.get(user_id, ())):
            if (not origin or sub.origin != origin) and (device is None or sub.device == device):
                sub.deliver(seq, payload)

    def subscribe(self, user_id: int, origin: int = 0, device: str | None = None) -> LocalSubscription:
        sub = LocalSubscription(self, user_id, origin, device)
        self._subscribers.setdefault(user_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: LocalSubscription) -> None:
        subs = self._subscribers.get(sub.user_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.user_id]
