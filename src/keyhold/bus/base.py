"""Event fan-out seam: publish a user's sequenced event, subscribe to one user's events.

Embedded deployments use `LocalBus` (in process). A multi-node deployment implements the same
two methods over Redis pub/sub. The bus carries only committed events: delivery after a
reconnect comes from storage, so a bus may drop (a slow subscriber is cut off and reconnects).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Subscription(Protocol):
    """One user's events from the moment of subscribing. Queued until `forward` is called (the
    subscriber replays from storage meanwhile), then handed straight to the given function in
    the publisher's turn: no task switch per event."""

    user_id: int

    def forward(self, to: Callable[[int, bytes], None]) -> None:
        """Hand `to` each (seq, rendered event): first those queued, then each as published."""
        ...

    async def wait_closed(self) -> None:
        """Return once the subscription is closed: by `close`, or because it fell too far
        behind while queued (the subscriber must then reconnect and replay from storage)."""
        ...

    def close(self) -> None: ...


class Bus(Protocol):
    def publish(self, user_id: int, seq: int, payload: bytes, origin: int = 0, device: str | None = None) -> None:
        """`origin` (non-zero) names the subscriber the event answers, which is not sent it: a
        stream that sent a message has its `ack` and gets no `message.new` echo (the user's
        other streams do). `device` (not None) limits the event to that device's streams."""
        ...

    def subscribe(self, user_id: int, origin: int = 0, device: str | None = None) -> Subscription:
        """The user's events for all their devices, and for `device`."""
        ...
