"""What every scanner of `standard` message text answers, and the seam it is called through.

A `Scanner` reads one message's text with what the service knows about who sends it to whom
(`ScanContext`) and answers a `Verdict`: the action, the category that decided it, the score of
every category, and which rules or signals fired. A verdict never carries the text: it is what
the service records about a message it scanned. `e2ee` content is never scanned (the service
cannot read it); these types are not used on that path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

Action = Literal["allow", "flag", "hold", "block"]
# Most severe last: combining verdicts keeps the most severe action.
ACTIONS: tuple[Action, ...] = ("allow", "flag", "hold", "block")
CATEGORIES = (
    "violent_threat",
    "sexual_extortion",
    "grooming",
    "hate",
    "harassment",
    "scam",
    "spam",
    "self_harm",
)


@dataclass(frozen=True)
class ScanContext:
    """Who a message goes from and to, as far as the service knows (no content)."""

    sender_id: int = 0
    conversation_id: int = 0
    recipient_ids: tuple[int, ...] = ()
    # Some recipient is under 18, and the sender is an adult who is not their friend: grooming
    # signals weigh more.
    recipient_minor: bool = False
    sender_adult_non_friend: bool = False
    sender_account_age_days: float = 365.0


@dataclass(frozen=True)
class Verdict:
    action: Action
    category: str | None = None  # the category that decided a non-allow action
    scores: Mapping[str, float] = field(default_factory=dict)  # category -> 0..1
    fired: tuple[str, ...] = ()  # e.g. "rule:scam-domains", "signal:violent_threat/kill_you"
    policy: str = ""  # a short sentence naming the policy, shown to the sender on `block`
    support: bool = False  # self-harm: point the member to support resources, never a punishment

    @property
    def nothing_to_note(self) -> bool:
        """Allowed, with no support to offer: all a text-only send needs of it is "allowed"
        (only a verdict other than allow is recorded)."""
        return self.action == "allow" and not self.support


ALLOW = Verdict("allow")


class Scanner(Protocol):
    async def scan(self, text: str, context: ScanContext) -> Verdict: ...


def most_severe(verdicts: list[Verdict]) -> Verdict:
    """The verdict with the most severe action (the first of equals); scores and fired merged."""
    if not verdicts:
        return ALLOW
    if len(verdicts) == 1 and len(set(verdicts[0].fired)) == len(verdicts[0].fired):
        return verdicts[0]  # nothing to merge (most messages: no operator rules)
    top = max(verdicts, key=lambda v: ACTIONS.index(v.action))
    scores: dict[str, float] = {}
    for verdict in verdicts:
        for category, score in verdict.scores.items():
            scores[category] = max(score, scores.get(category, 0.0))
    fired = tuple(dict.fromkeys(name for v in verdicts for name in v.fired))
    return Verdict(top.action, top.category, scores, fired, top.policy, any(v.support for v in verdicts))
