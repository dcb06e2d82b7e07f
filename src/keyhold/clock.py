"""Time as integer milliseconds (what the schema stores) and its ISO rendering."""

from __future__ import annotations

import datetime as dt
import threading
import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    return (
        dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


# 2026-01-01T00:00:00Z: message ids count milliseconds from here, leaving 12 bits of sequence.
_ID_EPOCH_MS = 1_767_225_600_000
_SEQUENCE_BITS = 12


def first_message_id_near(ms: int) -> int:
    """An id below that of any message sent at `ms` or later (a second early: an id's time is
    read a moment before its message's `sent_ms`): a bound an index can use."""
    return max(0, (ms - 1000 - _ID_EPOCH_MS) << _SEQUENCE_BITS)


def message_id_ms(message_id: int) -> int:
    """When a message id was made: at most its message's `sent_ms`."""
    return (message_id >> _SEQUENCE_BITS) + _ID_EPOCH_MS


class MessageIds:
    """Time-ordered 53-bit ids (safe as JSON numbers in every client), strictly increasing
    within this process; the single message writer is their only caller."""

    def __init__(self, floor: int = 0) -> None:
        self._last = floor
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            candidate = (now_ms() - _ID_EPOCH_MS) << _SEQUENCE_BITS
            self._last = max(candidate, self._last + 1)
            return self._last
