"""Who sent the same text to how many conversations lately: the behaviour half of spam.

A bulk sender pastes one text into many conversations. `SendTracker` remembers, per sender,
a keyed digest of each normalized text (never the text) and the conversations it went to in
the last `window_seconds`. It is bounded: at most `max_texts` (sender, text) entries, the
least recently used dropped first, and at most `max_conversations` per entry, so a flood
cannot grow it. It lives in one process's memory: after a restart, or on another node, counts
start again, which only makes it more lenient.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

WINDOW_SECONDS = 600.0
MAX_TEXTS = 20_000
MAX_CONVERSATIONS = 64


class SendTracker:
    def __init__(
        self,
        window_seconds: float = WINDOW_SECONDS,
        max_texts: int = MAX_TEXTS,
        max_conversations: int = MAX_CONVERSATIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_seconds = window_seconds
        self.max_texts = max_texts
        self.max_conversations = max_conversations
        self._clock = clock
        # A per-process key: the digests are useless outside this process and cannot be
        # matched against a list of guessed texts offline.
        self._key = os.urandom(16)
        self._entries: OrderedDict[tuple[int, bytes], dict[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def digest(self, text: str) -> bytes:
        return hashlib.blake2b(text.encode(), key=self._key, digest_size=16).digest()

    def record(self, sender_id: int, text: str, conversation_id: int) -> int:
        """Note that `sender_id` sent `text` (normalized) to `conversation_id` now; the number
        of distinct conversations it went to within the window, this one included."""
        key = (sender_id, self.digest(text))
        now = self._clock()
        horizon = now - self.window_seconds
        with self._lock:
            seen = self._entries.pop(key, None) or {}
            for conversation, at in list(seen.items()):
                if at < horizon:
                    del seen[conversation]
            seen.pop(conversation_id, None)
            seen[conversation_id] = now  # dicts keep insertion order: the oldest go first
            while len(seen) > self.max_conversations:
                del seen[next(iter(seen))]
            self._entries[key] = seen
            while len(self._entries) > self.max_texts:
                self._entries.popitem(last=False)
            return len(seen)
