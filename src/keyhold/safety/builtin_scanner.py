"""The built-in text scanner: offline, fast, explainable.

It normalizes the message (`normalize.py`), finds the signals, dampeners and link signals of
`builtin_signals.py` in it, adds the small learned model's answer as one more signal per
category (`text_model.py`: from a cross-validated probability, never enough to block alone),
adds what the sender's behaviour says about spam (`behaviour.py`), scores each category and maps the scores to an action with the category's thresholds. Every
signal that fired is named in the verdict (`signal:<category>/<name>`), so a moderator or an
operator running `keyhold safety test` sees why. Self-harm is never punished: it sets
`support` (the member is pointed to support resources) and at a high score flags the message
for a moderator who can reach out; it never holds or blocks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from keyhold.safety import builtin_signals as data
from keyhold.safety import signal_phrases
from keyhold.safety.behaviour import SendTracker
from keyhold.safety.normalize import Normalized, normalize, visible
from keyhold.safety.phrases import PhraseBook
from keyhold.safety.scanning import ACTIONS, CATEGORIES, Action, ScanContext, Verdict
from keyhold.safety.text_model import TextModel, default_model, default_thresholds

# Behaviour: the same text to this many conversations within the tracker's window.
REPEAT_WEIGHTS = ((10, 0.5), (5, 0.3), (3, 0.15))  # (at least, spam weight): alone at most a flag
REPEAT_WITH_LINK_BONUS = 0.35  # the same text with a link to many: what bulk promotion looks like
REPEAT_MIN_WORDS = 3  # "happy new year!" to everyone is not spam
LINK_RATIO = 0.3  # links per word: a message that is mostly links


@dataclass(frozen=True)
class Finding:
    """What one message fired, before scoring (kept for `keyhold safety test`)."""

    signals: dict[str, list[tuple[str, float]]]  # category -> [(name, weight)]
    dampeners: dict[str, tuple[str, float]]  # category -> (name, factor) of the strongest


_DEFAULT = object()


class BuiltinScanner:
    def __init__(
        self, tracker: SendTracker | None = None, model: TextModel | object | None = _DEFAULT
    ) -> None:
        """`model`: the learned text model (`text_model.py`); the shipped one by default, None for
        phrases only."""
        self.tracker = tracker if tracker is not None else SendTracker()
        self.model: TextModel | None = default_model() if model is _DEFAULT else model  # type: ignore[assignment]
        # The probability from which the model's answer is a signal, per category.
        self.model_thresholds: Mapping[str, float] = default_thresholds()
        phrases: list[tuple[str, str]] = []
        self._weights: dict[str, tuple[str, str, float]] = {}
        for category, signals in signal_phrases.S.items():
            for name, pattern, weight in signals:
                key = f"signal:{category}/{name}"
                phrases.append((key, pattern))
                self._weights[key] = (category, name, weight)
        self._dampeners: dict[str, tuple[str, float, tuple[str, ...]]] = {}
        for name, pattern, factor, categories in data.DAMPENERS:
            key = f"dampener:{name}"
            phrases.append((key, pattern))
            self._dampeners[key] = (name, factor, categories)
        self.book = PhraseBook(phrases, signal_phrases.WORD_CLASSES)
        self._raw = [(c, n, re.compile(p), w) for c, n, p, w in data.RAW_SIGNALS]
        # One search tells whether any of them is worth searching for (most messages: none).
        self._any_raw = re.compile("|".join(f"(?:{p})" for _, _, p, _ in data.RAW_SIGNALS)) if self._raw else None
        self._risks = self.model.risks(self.model_thresholds) if self.model is not None else None
        # The verdict of a message that fired nothing, the same for every context (scoring
        # only weighs what fired): most messages, so worked out once.
        nothing = Finding({}, {})
        self._quiet = _verdict(self._scores(nothing, ScanContext()), nothing)

    @property
    def vocabulary(self) -> frozenset[str]:
        return self.book.vocabulary

    async def scan(self, text: str, context: ScanContext) -> Verdict:
        return self.scan_now(text, context)

    def scan_now(
        self,
        text: str,
        context: ScanContext,
        normalized: Normalized | None = None,
        *,
        probabilities: Mapping[str, float] | None = None,
    ) -> Verdict:
        """`scan` without the event loop (it never waits): for the benchmark and for the pipeline,
        which passes the text it already normalized. `probabilities` stands in for the model's
        answer (the training script's cross-validation passes out-of-fold answers)."""
        norm = normalized if normalized is not None else normalize(text, self.vocabulary)
        finding = self.find(text, norm)
        if probabilities is None and self.model is not None and not self._model_out_of_reach(norm):
            probabilities = self.model.probabilities(norm)
        if probabilities is not None:
            self._model_signals(probabilities, finding)
        self._behaviour(norm, context, finding)
        if not finding.signals and not finding.dampeners:
            return self._quiet  # shared: nothing changes a verdict's scores once it is made
        scores = self._scores(finding, context)
        return _verdict(scores, finding)

    def _model_out_of_reach(self, norm: Normalized) -> bool:
        """Whether the message's words cannot take the model to any signal threshold
        (`TextModel.risks`): most messages, whose answer then need not be worked out."""
        return self._risks is not None and self._risks.of(norm) < 1.0

    def find(self, text: str, norm: Normalized) -> Finding:
        signals: dict[str, list[tuple[str, float]]] = {}
        dampeners: dict[str, tuple[str, float]] = {}
        for key in self.book.matches(norm):
            if key in self._weights:
                category, name, weight = self._weights[key]
                signals.setdefault(category, []).append((name, weight))
                continue
            name, factor, categories = self._dampeners[key]
            for category in categories:
                if category not in dampeners or factor < dampeners[category][1]:
                    dampeners[category] = (name, factor)
        shown = visible(text)
        if self._any_raw is not None and self._any_raw.search(shown):
            for category, name, regex, weight in self._raw:
                if regex.search(shown):
                    signals.setdefault(category, []).append((name, weight))
        for name in _link_signals(norm):
            category, weight = data.LINK_SIGNALS[name]
            signals.setdefault(category, []).append((name, weight))
        return Finding(signals, dampeners)

    def _model_signals(self, probabilities: Mapping[str, float], finding: Finding) -> None:
        """The model's probability of a category, from its threshold up, as one more signal whose
        weight rises from `MODEL_SIGNAL.low` to `.high` (never enough to block alone)."""
        low, high = data.MODEL_SIGNAL.low, data.MODEL_SIGNAL.high
        for category in CATEGORIES:
            threshold = self.model_thresholds.get(category, 1.0)
            p = probabilities.get(category, 0.0)
            if p >= threshold:
                weight = low + (high - low) * (p - threshold) / max(1.0 - threshold, 1e-6)
                finding.signals.setdefault(category, []).append(("model", round(weight, 3)))

    def _behaviour(self, norm: Normalized, context: ScanContext, finding: Finding) -> None:
        spam: list[tuple[str, float]] = []
        words = max(norm.word_count, 1)
        if norm.links and len(norm.links) / words >= LINK_RATIO:
            spam.append(("+behaviour_link_ratio", 0.3))  # links alone are no spam: "here: docs.example.com"
        if context.sender_id and context.conversation_id and norm.word_count >= REPEAT_MIN_WORDS:
            count = self.tracker.record(context.sender_id, norm.squashed, context.conversation_id)
            for at_least, weight in REPEAT_WEIGHTS:
                if count >= at_least:
                    spam.append((f"behaviour_repeated_{at_least}", weight))
                    if norm.links:
                        spam.append(("behaviour_repeated_link", REPEAT_WITH_LINK_BONUS))
                    break
        if spam:
            finding.signals.setdefault("spam", []).extend(spam)

    def _scores(self, finding: Finding, context: ScanContext) -> dict[str, float]:
        scores: dict[str, float] = {}
        for category in CATEGORIES:
            fired = finding.signals.get(category, ())
            miss = 1.0
            if any(not name.startswith("+") for name, _ in fired):  # supporting evidence needs a core
                for _, weight in fired:
                    miss *= 1.0 - weight
            score = 1.0 - miss
            if category in finding.dampeners:
                score *= finding.dampeners[category][1]
            if (
                score > 0
                and category == "grooming"
                and context.recipient_minor
                and context.sender_adult_non_friend
            ):
                score = 1.0 - (1.0 - score) ** data.MINOR_CONTEXT_POWER
            if (
                score > 0
                and category in ("spam", "scam")
                and context.sender_account_age_days < data.NEW_ACCOUNT_DAYS
            ):
                score = 1.0 - (1.0 - score) ** data.NEW_ACCOUNT_POWER
            scores[category] = round(min(score, 1.0), 3)
        return scores


def _one_edit_apart(a: str, b: str) -> bool:
    """`a` is `b` with one letter added, dropped or changed (`netflx`, `paypall`, `amazan`)."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def _imitates(label: str, brand: str) -> bool:
    if label == brand:
        return True
    if len(label) > len(brand) + 3 and label.startswith(brand):  # "paypalsecure"
        return True
    return len(brand) >= 5 and _one_edit_apart(label, brand)


def _link_signals(norm: Normalized) -> list[str]:
    found: list[str] = []
    for link in norm.links:
        host = link.host
        if host != link.skeleton_host:
            found.append("homograph_link")
        labels = [label for label in re.split(r"[.\-]", link.skeleton_host) if label]
        for brand, domains in data.BRAND_DOMAINS.items():
            if any(_imitates(label, brand) for label in labels):
                if not any(host == d or host.endswith("." + d) for d in domains):
                    found.append("lookalike_domain")
                    break
        if host in data.SHORTENERS:
            found.append("+shortener")
        if host.rsplit(".", 1)[-1] in data.CHEAP_TLDS:
            found += ["+cheap_tld_scam", "+cheap_tld_spam"]
        found.append("+link")
    return list(dict.fromkeys(found))


def _action(category: str, score: float) -> Action:
    limits = data.THRESHOLDS[category]
    steps: tuple[tuple[Action, float | None], ...] = (
        ("block", limits.block),
        ("hold", limits.hold),
        ("flag", limits.flag),
    )
    for action, limit in steps:
        if limit is not None and score >= limit:
            return action
    return "allow"


def _verdict(scores: dict[str, float], finding: Finding) -> Verdict:
    fired = tuple(
        [
            f"signal:{category}/{name}"
            for category, signals in finding.signals.items()
            if scores.get(category)  # supporting evidence that counted for nothing is not named
            for name, _ in signals
        ]
        + [
            f"dampener:{category}/{name}"
            for category, (name, _) in finding.dampeners.items()
            if scores.get(category)
        ]
    )
    actions = {category: _action(category, score) for category, score in scores.items()}
    for category, signals in finding.signals.items():
        if actions.get(category) in ("hold", "block") and all(
            name == "model" or name.startswith("+") for name, _ in signals
        ):
            # The learned model alone (with supporting evidence at most) never stops a message:
            # it is delivered, and a moderator looks (a positive mention of a group, a song
            # promoted, can read like hate or spam to a model of a few hundred lines).
            actions[category] = "flag"

    def severity(category: str) -> tuple[int, float]:
        return ACTIONS.index(actions[category]), scores[category]

    top = max(CATEGORIES, key=severity)
    support_at = data.THRESHOLDS["self_harm"].support
    support = support_at is not None and scores["self_harm"] >= support_at
    if support and scores["self_harm"] >= max(scores.values()):
        # Someone in crisis who also writes "don't tell anyone" or mentions a knife is not
        # punished for it: the strongest reading of the message decides.
        top = "self_harm"
    if actions[top] == "allow":
        # Allowed: the category names why support was offered, else nothing decided.
        return Verdict("allow", "self_harm" if support else None, scores, fired, "", support)
    return Verdict(actions[top], top, scores, fired, data.POLICIES[top], support)
