"""In-process bus for the embedded deployment: a dict of subscribers per user."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

# A subscriber this far behind (while it replays from storage) is cut off rather than allowed
# to grow memory without bound.
MAX_PENDING = 10_000


class LocalSubscription:
    def __init__(self, bus: LocalBus, user_id: int, origin: int, device: str | None) -> None:
        self.user_id = user_id
        self.origin = origin
        self.device = device
        self._bus = bus
        self._pending: deque[tuple[int, bytes]] = deque()
        self._forward: Callable[[int, bytes], None] | None = None
        self._closed = asyncio.Event()

    def deliver(self, seq: int, payload: bytes) -> None:
        if self._closed.is_set():
            return
        if self._forward is not None:
            self._forward(seq, payload)
        elif len(self._pending) >= MAX_PENDING:
            self.close()
        else:
            self._pending.append((seq, payload))

    def forward(self, to: Callable[[int, bytes], None]) -> None:
        while self._pending and not self._closed.is_set():
            to(*self._pending.popleft())
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
