"""An adapter to the operator's own classification service over HTTP (optional).

Keyhold POSTs one JSON object per `standard` message and waits at most `timeout` seconds
(connecting, sending and reading together):

    POST <url>
    {"text": "the message",
     "context": {"recipient_minor": false, "sender_adult_non_friend": false,
                 "sender_account_age_days": 12.5}}

and expects `200` with:

    {"action": "allow" | "flag" | "hold" | "block",
     "category": "scam" | ... | null,          # one of the categories, or null for allow
     "scores": {"scam": 0.93, ...},            # optional, 0..1 per category
     "policy": "a sentence for a blocked sender"}   # optional

Nothing else about the sender or the conversation is sent. A `self_harm` answer is never
punished: it becomes at most `flag`, with support. Anything else — a timeout, a refused
connection, a status other than 200, a body that is not that shape — is an outage, and
`fail_open` decides: true lets the message through (`allow`, with `http:unavailable` among
the fired names), false holds it for a moderator (`hold`, no category, a policy naming the
outage).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, cast

import httpx

from keyhold.safety.scanning import ACTIONS, CATEGORIES, Action, ScanContext, Verdict

log = logging.getLogger("keyhold.safety.http_scanner")

DEFAULT_TIMEOUT = 0.25  # seconds: the service is on the send path
MAX_RESPONSE_BYTES = 64 * 1024
OUTAGE = "http:unavailable"
OUTAGE_POLICY = "The message classification service is unavailable: the message waits for review."


class ServiceAnswerError(ValueError):
    """The classification service answered something that is not a verdict."""


def verdict_from_answer(answer: Any) -> Verdict:
    if not isinstance(answer, dict):
        raise ServiceAnswerError("the answer is not a JSON object")
    action = answer.get("action")
    if action not in ACTIONS:
        raise ServiceAnswerError(f"'action' must be one of {', '.join(ACTIONS)}")
    category = answer.get("category")
    if category is not None and category not in CATEGORIES:
        raise ServiceAnswerError(f"'category' must be null or one of {', '.join(CATEGORIES)}")
    if action != "allow" and category is None:
        raise ServiceAnswerError(f"'category' is needed with action {action!r}")
    raw_scores = answer.get("scores", {})
    if not isinstance(raw_scores, dict):
        raise ServiceAnswerError("'scores' must be an object")
    scores: dict[str, float] = {}
    for name, value in raw_scores.items():
        if name not in CATEGORIES:
            continue  # a service may know more categories than Keyhold; they decide nothing here
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value <= 1
            or math.isnan(value)
        ):
            raise ServiceAnswerError(f"'scores.{name}' must be a number from 0 to 1")
        scores[name] = float(value)
    policy = answer.get("policy", "")
    if not isinstance(policy, str):
        raise ServiceAnswerError("'policy' must be a string")
    support = category == "self_harm"
    if support and action in ("hold", "block"):
        action = "flag"
    return Verdict(cast(Action, action), category, scores, ("http:service",), policy[:300], support)


class HttpScanner:
    """A `Scanner` that asks the operator's classification service at `url`."""

    def __init__(
        self,
        url: str,
        timeout: float = DEFAULT_TIMEOUT,
        fail_open: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        # Logs name the service by host and port only: a URL may carry a key in its query or
        # user part, and logs are read by more people than the configuration.
        parts = httpx.URL(url)
        self.service = f"{parts.host}:{parts.port}" if parts.port else parts.host
        self.timeout = timeout
        self.fail_open = fail_open
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)

    def _outage(self, reason: str) -> Verdict:
        log.warning(
            "classification service %s unavailable (%s); failing %s",
            self.service,
            reason,
            "open" if self.fail_open else "closed",
        )
        if self.fail_open:
            return Verdict("allow", None, {}, (OUTAGE,))
        return Verdict("hold", None, {}, (OUTAGE,), OUTAGE_POLICY)

    async def scan(self, text: str, context: ScanContext) -> Verdict:
        body = {
            "text": text,
            "context": {
                "recipient_minor": context.recipient_minor,
                "sender_adult_non_friend": context.sender_adult_non_friend,
                "sender_account_age_days": context.sender_account_age_days,
            },
        }
        try:
            # One deadline for the whole exchange: httpx's own timeouts apply per phase.
            async with asyncio.timeout(self.timeout):
                response = await self._client.post(self.url, json=body)
        except TimeoutError:
            return self._outage("timed out")
        except httpx.HTTPError as exc:
            return self._outage(type(exc).__name__)
        if response.status_code != 200:
            return self._outage(f"status {response.status_code}")
        if len(response.content) > MAX_RESPONSE_BYTES:
            return self._outage("answer too large")
        try:
            return verdict_from_answer(response.json())
        except (ValueError, ServiceAnswerError) as exc:
            return self._outage(f"bad answer: {exc}")

    async def aclose(self) -> None:
        await self._client.aclose()
