"""In-process bus for the embedded deployment: a dict of subscriber queues per user."""

from __future__ import annotations

import asyncio
from collections import deque

from keyhold.bus.base import SubscriptionClosed

# A subscriber this far behind is cut off rather than allowed to grow memory without bound.
MAX_PENDING = 10_000


class LocalSubscription:
    def __init__(self, bus: LocalBus, user_id: int) -> None:
        self.user_id = user_id
        self._bus = bus
        self._pending: deque[tuple[int, bytes]] = deque()
        self._wakeup = asyncio.Event()
        self._overflowed = False
        self._closed = False

    def deliver(self, seq: int, payload: bytes) -> None:
        if self._closed:
            return
        if len(self._pending) >= MAX_PENDING:
            self._overflowed = True
            self.close()
        else:
            self._pending.append((seq, payload))
        self._wakeup.set()

    async def get(self) -> tuple[int, bytes]:
        while not self._pending:
            if self._overflowed or self._closed:
                raise SubscriptionClosed("subscriber fell behind; reconnect with since=<last seq>")
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._pending.popleft()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus.unsubscribe(self)
            self._wakeup.set()


class LocalBus:
    def __init__(self) -> None:
        self._subscribers: dict[int, set[LocalSubscription]] = {}

    def publish(self, user_id: int, seq: int, payload: bytes) -> None:
        for sub in tuple(self._subscribers.get(user_id, ())):
            sub.deliver(seq, payload)

    def subscribe(self, user_id: int) -> LocalSubscription:
        sub = LocalSubscription(self, user_id)
        self._subscribers.setdefault(user_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: LocalSubscription) -> None:
        subs = self._subscribers.get(sub.user_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.user_id]
