"""Measuring a scanner against a labeled file (`keyhold safety eval FILE`).

The file is JSONL, one message per line (tests/data/safety/README.md):

    {"text": "...", "label": "<category>" | "benign", "hard": true|false,
     "context": {"recipient_minor": true, "sender_adult_non_friend": true}}   # context optional

What counts as what:
- the *predicted* category of a message is the category that decided a non-`allow` verdict;
  an `allow` that points the member to support resources counts as `self_harm` (that is the
  scanner's answer to self-harm, which is never punished); any other `allow` is `benign`;
- per category, precision is the share of messages predicted as that category that carry its
  label, recall the share of messages with the label predicted as it, F1 their harmonic mean;
- a `block` decision is correct when the message's label is harmful (any category but
  `benign`), whichever category the scanner named: block precision is the share of blocks on
  harmful messages, block recall the share of harmful messages blocked;
- *detected* is any non-benign prediction on a harmful message, whatever its category.
Every figure is given for the whole file and for its `hard` lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyhold.safety.scanning import ACTIONS, CATEGORIES, ScanContext, Scanner, Verdict

BENIGN = "benign"
LABELS = (*CATEGORIES, BENIGN)
CONTEXT_KEYS = ("recipient_minor", "sender_adult_non_friend")


class EvalFileError(ValueError):
    """A line of the evaluation file that is not a labeled example; the message names the line."""


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    label: str
    hard: bool
    context: ScanContext


def _example(number: int, raw: str) -> Example:
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EvalFileError(f"line {number}: not JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise EvalFileError(f"line {number}: must be a JSON object")
    text, label, hard = row.get("text"), row.get("label"), row.get("hard", False)
    if not isinstance(text, str) or not text:
        raise EvalFileError(f"line {number}: 'text' must be a non-empty string")
    if label not in LABELS:
        raise EvalFileError(f"line {number}: 'label' must be one of {', '.join(LABELS)}, not {label!r}")
    if not isinstance(hard, bool):
        raise EvalFileError(f"line {number}: 'hard' must be true or false")
    context = row.get("context", {})
    if not isinstance(context, dict) or set(context) - set(CONTEXT_KEYS):
        raise EvalFileError(f"line {number}: 'context' may hold only {', '.join(CONTEXT_KEYS)}")
    if not all(isinstance(v, bool) for v in context.values()):
        raise EvalFileError(f"line {number}: 'context' values must be true or false")
    unknown = sorted(set(row) - {"text", "label", "hard", "context"})
    if unknown:
        raise EvalFileError(f"line {number}: unknown field {unknown[0]!r}")
    return Example(number, text, label, hard, ScanContext(**context))


def load_examples(path: Path) -> list[Example]:
    """Every example in `path` (blank lines skipped); EvalFileError names the first bad line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise EvalFileError(f"{path}: not UTF-8 text") from None
    examples = [_example(n, raw) for n, raw in enumerate(lines, 1) if raw.strip()]
    if not examples:
        raise EvalFileError(f"{path}: no examples")
    return examples


def predicted(verdict: Verdict) -> str:
    if verdict.action != "allow" and verdict.category in CATEGORIES:
        return verdict.category
    if verdict.action == "allow" and verdict.support:
        return "self_harm"
    return BENIGN


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None or precision + recall == 0:
        return None if precision is None or recall is None else 0.0
    return round(2 * precision * recall / (precision + recall), 4)


def figures(rows: Sequence[tuple[Example, Verdict]]) -> dict[str, Any]:
    """Confusion table, per-category P/R/F1, block and detection figures, action counts."""
    confusion = {label: dict.fromkeys(LABELS, 0) for label in LABELS}
    actions = dict.fromkeys(ACTIONS, 0)
    blocks = blocks_correct = harmful = detected = predicted_harmful = predicted_harmful_correct = 0
    for example, verdict in rows:
        guess = predicted(verdict)
        confusion[example.label][guess] += 1
        actions[verdict.action] += 1
        is_harmful = example.label != BENIGN
        harmful += is_harmful
        if verdict.action == "block":
            blocks += 1
            blocks_correct += is_harmful
        if guess != BENIGN:
            predicted_harmful += 1
            predicted_harmful_correct += is_harmful
            detected += is_harmful
    categories: dict[str, dict[str, float | int | None]] = {}
    for category in CATEGORIES:
        tp = confusion[category][category]
        predicted_as = sum(confusion[label][category] for label in LABELS)
        labelled = sum(confusion[category].values())
        precision, recall = _ratio(tp, predicted_as), _ratio(tp, labelled)
        categories[category] = {
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall),
            "labelled": labelled,
            "predicted": predicted_as,
            "correct": tp,
        }
    block_precision, block_recall = _ratio(blocks_correct, blocks), _ratio(blocks_correct, harmful)
    detect_precision, detect_recall = (
        _ratio(predicted_harmful_correct, predicted_harmful),
        _ratio(detected, harmful),
    )
    return {
        "examples": len(rows),
        "harmful": harmful,
        "benign": len(rows) - harmful,
        "actions": actions,
        "categories": categories,
        "block": {
            "decisions": blocks,
            "correct": blocks_correct,
            "precision": block_precision,
            "recall": block_recall,
            "f1": _f1(block_precision, block_recall),
        },
        "detected": {
            "decisions": predicted_harmful,
            "correct": predicted_harmful_correct,
            "precision": detect_precision,
            "recall": detect_recall,
            "f1": _f1(detect_precision, detect_recall),
        },
        "confusion": confusion,
    }


async def scan_all(scanner: Scanner, examples: Iterable[Example]) -> list[tuple[Example, Verdict]]:
    return [(example, await scanner.scan(example.text, example.context)) for example in examples]


async def evaluate(scanner: Scanner, examples: Sequence[Example], source: str = "") -> dict[str, Any]:
    rows = await scan_all(scanner, examples)
    hard = [(example, verdict) for example, verdict in rows if example.hard]
    return {"file": source, "all": figures(rows), "hard": figures(hard)}
