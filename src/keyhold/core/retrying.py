"""Background tasks that run every few seconds and must outlive a database restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from keyhold.store.db import storage_unavailable


class FailureLog:
    """Logs a periodic task's failure once, and its recovery once: storage away for a minute
    makes two lines, not one every time the task runs. Failures other than storage being
    unreachable carry their traceback."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._failing = False

    def failed(self, exc: BaseException) -> None:
        if not self._failing:
            self._log.warning(
                "%s failed (%s); retrying", self._what, type(exc).__name__, exc_info=not storage_unavailable(exc)
            )
        self._failing = True

    def succeeded(self) -> None:
        if self._failing:
            self._log.warning("%s works again", self._what)
        self._failing = False


async def run_periodically(
    interval: float, step: Callable[[], Awaitable[object]], log: logging.Logger, what: str
) -> None:
    """Run `step` every `interval` seconds until cancelled; a failing step is retried next time."""
    failures = FailureLog(log, what)
    while True:
        await asyncio.sleep(interval)
        try:
            await step()
        except Exception as exc:
            failures.failed(exc)
        else:
            failures.succeeded()
