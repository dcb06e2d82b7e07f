"""What the SDK raises: every failure is a `KeyholdError`, network ones included."""

from __future__ import annotations

from typing import Any


class KeyholdError(Exception):
    """A refusal from the server: `.status` and `.problem` (the RFC 9457 problem+json).
    `.retry_after` (seconds) when the server said when to try again (429, 503)."""

    def __init__(self, status: int, problem: dict[str, Any], retry_after: float | None = None) -> None:
        self.status = status
        self.problem = problem
        self.retry_after = retry_after if retry_after is not None else problem.get("retry_after")
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")


class KeyholdConnectionError(KeyholdError):
    """The server could not be reached, or the connection broke before it answered (`status` 0).
    Nothing is known of the request's fate: retry sends with the same idempotency key."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, {"title": "Server unreachable", "detail": detail})


class KeyholdTimeout(KeyholdConnectionError):
    """The server did not answer in time."""
