"""Event fan-out seam: publish a user's sequenced event, subscribe to one user's events.

Embedded deployments use `LocalBus` (in process). A multi-node deployment implements the same
two methods over Redis pub/sub. The bus carries only committed events: delivery after a
reconnect comes from storage, so a bus may drop (a slow subscriber is cut off and reconnects).
"""

from __future__ import annotations

from typing import Protocol


class Subscription(Protocol):
    user_id: int

    async def get(self) -> tuple[int, bytes]:
        """Next (seq, rendered event); raises `SubscriptionClosed` if the subscriber fell behind."""
        ...

    def close(self) -> None: ...


class SubscriptionClosed(Exception):
    """The subscriber fell too far behind; it must reconnect and replay from storage."""


class Bus(Protocol):
    def publish(self, user_id: int, seq: int, payload: bytes) -> None: ...

    def subscribe(self, user_id: int) -> Subscription: ...
