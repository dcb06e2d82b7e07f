"""Domain errors that carry an RFC 9457 problem: the api layer renders them, core raises them."""

from __future__ import annotations

from typing import Any

from keyhold.store.db import storage_unavailable


class Problem(Exception):
    """A refusal with a status, a stable type slug and a sentence a person can act on."""

    def __init__(
        self, status: int, slug: str, title: str, detail: str, retry_after: int | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        # Seconds after which a retry may succeed (429, 503): the Retry-After header over HTTP,
        # and a member of the problem itself where there are no headers (WebSocket frames).
        self.retry_after = retry_after
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        body = {
            "type": f"https://keyhold.dev/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


def invalid(detail: str, **extra: Any) -> Problem:
    return Problem(422, "invalid-request", "Invalid request", detail, **extra)


def unauthorized(detail: str = "a valid bearer token is required") -> Problem:
    return Problem(401, "unauthorized", "Not signed in", detail)


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "Not allowed", detail)


def not_found(detail: str) -> Problem:
    return Problem(404, "not-found", "Not found", detail)


def not_yours(what: str) -> Problem:
    # One answer whether the thing does not exist or is someone else's: ids are not probes,
    # and the detail names no submitted value.
    return not_found(f"{what} not found among yours")


def conflict(detail: str) -> Problem:
    return Problem(409, "conflict", "Conflict", detail)


def unavailable(detail: str, retry_after: int = 1) -> Problem:
    return Problem(503, "unavailable", "Temporarily unavailable", detail, retry_after=retry_after)


def outage(exc: BaseException) -> Problem | None:
    """What an exception means to a client when storage is away (a database restart, a lost
    connection): a 503 its retry will most likely get past. None for anything else."""
    if storage_unavailable(exc):
        return unavailable("storage is unavailable; retry in a moment")
    return None
