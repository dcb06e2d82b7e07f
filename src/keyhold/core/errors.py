"""Domain errors that carry an RFC 9457 problem: the api layer renders them, core raises them."""

from __future__ import annotations

from typing import Any


class Problem(Exception):
    """A refusal with a status, a stable type slug and a sentence a person can act on."""

    def __init__(self, status: int, slug: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": f"https://keyhold.dev/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }


def invalid(detail: str, **extra: Any) -> Problem:
    return Problem(422, "invalid-request", "Invalid request", detail, **extra)


def unauthorized(detail: str = "a valid bearer token is required") -> Problem:
    return Problem(401, "unauthorized", "Not signed in", detail)


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "Not allowed", detail)


def not_found(detail: str) -> Problem:
    return Problem(404, "not-found", "Not found", detail)


def conflict(detail: str) -> Problem:
    return Problem(409, "conflict", "Conflict", detail)


def unavailable(detail: str) -> Problem:
    return Problem(503, "unavailable", "Temporarily unavailable", detail)
