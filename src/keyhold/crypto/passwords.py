"""argon2id password hashing, off the event loop, with bounded concurrency and a bounded queue.

Each hash costs ~100 ms and 64 MiB with the default parameters: a burst of sign-ins queues for
a few worker threads rather than stall the event loop or exhaust memory, and past a short
queue it is refused at once (`PasswordHashingBusy`, a 503 with Retry-After) instead of making
every sign-in behind it wait. Only sign-ins, registrations and password checks hash: requests
made with a token never queue here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

T = TypeVar("T")


def _yield_to_the_event_loop() -> None:
    """Hashing threads run at a lower priority (Linux nice is per thread, and argon2's own
    lane threads inherit it): on a busy machine the event loop, which serves every member,
    gets the CPU first, and a burst of sign-ins slows sign-ins rather than everyone."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class PasswordHashingBusy(Exception):
    """Every worker is busy and the queue is full: retry in a moment."""


class PasswordHashing:
    def __init__(
        self, time_cost: int, memory_kib: int, parallelism: int, concurrency: int, queue: int
    ) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="argon2", initializer=_yield_to_the_event_loop
        )
        self._capacity = concurrency + queue
        self._admitted = 0
        # A hash that no password matches, to spend the same time on unknown usernames.
        self._dummy = self._hasher.hash("keyhold-no-such-user")

    def check_capacity(self) -> None:
        """Refuse now, before any other work, what would be refused once it reached hashing."""
        if self._admitted >= self._capacity:
            raise PasswordHashingBusy("password hashing is busy")

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        self.check_capacity()
        self._admitted += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._admitted -= 1

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        return await self._run(self._verify_sync, stored_hash or self._dummy, password)

    def _verify_sync(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False)
