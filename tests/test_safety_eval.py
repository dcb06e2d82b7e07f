"""`keyhold safety eval|test` and `keyhold bench safety` as CI runs them, and the evaluation's
arithmetic: counts add up to the file's lines and P/R/F1 follow from the confusion table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import keyhold_cli

from keyhold.safety.evaluation import (
    BENIGN,
    LABELS,
    EvalFileError,
    Example,
    figures,
    load_examples,
    predicted,
)
from keyhold.safety.scanning import CATEGORIES, ScanContext, Verdict

DATA = Path(__file__).parent / "data" / "safety"
HELDOUT = DATA / "heldout.jsonl"


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def check_consistent(part: dict[str, Any], lines: int) -> None:
    confusion = part["confusion"]
    assert part["examples"] == lines
    assert sum(sum(row.values()) for row in confusion.values()) == lines
    assert sum(part["actions"].values()) == lines
    assert part["harmful"] + part["benign"] == lines
    assert part["benign"] == sum(confusion[BENIGN].values())
    for category in CATEGORIES:
        row = part["categories"][category]
        tp = confusion[category][category]
        predicted_as = sum(confusion[label][category] for label in LABELS)
        labelled = sum(confusion[category].values())
        assert (row["correct"], row["predicted"], row["labelled"]) == (tp, predicted_as, labelled)
        precision, recall = _ratio(tp, predicted_as), _ratio(tp, labelled)
        for key, value in (("precision", precision), ("recall", recall)):
            assert (row[key] is None) == (value is None)
            if value is not None:
                assert row[key] == pytest.approx(value, abs=1e-4)
        if precision and recall:
            assert row["f1"] == pytest.approx(2 * precision * recall / (precision + recall), abs=1e-3)
    block = part["block"]
    assert block["decisions"] == part["actions"]["block"]
    assert block["correct"] <= block["decisions"]
    if block["decisions"]:
        assert block["precision"] == pytest.approx(block["correct"] / block["decisions"], abs=1e-4)
    detected = part["detected"]
    predicted_harmful = sum(row[c] for row in confusion.values() for c in CATEGORIES)
    assert detected["decisions"] == predicted_harmful
    assert detected["correct"] == sum(confusion[label][c] for label in CATEGORIES for c in CATEGORIES)


def test_eval_on_the_held_out_file(tmp_path: Path) -> None:
    # This is how CI runs it; the figures themselves are reported in docs/safety.md.
    out = tmp_path / "heldout.json"
    done = keyhold_cli("safety", "eval", str(HELDOUT), "--json", str(out), "--home", str(tmp_path / "home"))
    assert "precision" in done.stdout and "Confusion" in done.stdout
    report = json.loads(out.read_text())
    rows = [json.loads(line) for line in HELDOUT.read_text(encoding="utf-8").splitlines() if line.strip()]
    check_consistent(report["all"], len(rows))
    check_consistent(report["hard"], sum(1 for row in rows if row["hard"]))
    for label in LABELS:
        assert sum(report["all"]["confusion"][label].values()) == sum(
            1 for row in rows if row["label"] == label
        )


def test_eval_refuses_a_malformed_file_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi", "label": "benign", "hard": false}\n\n{"text": "x", "label": "weather"}\n')
    done = keyhold_cli("safety", "eval", str(bad), "--home", str(tmp_path), check=False)
    assert done.returncode != 0
    assert "line 3" in done.stderr and "label" in done.stderr


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "line 1: not JSON"),
        ("[1]", "line 1: must be a JSON object"),
        ('{"text": "", "label": "benign"}', "line 1: 'text'"),
        ('{"text": "a", "label": "benign", "hard": "yes"}', "line 1: 'hard'"),
        ('{"text": "a", "label": "benign", "context": {"minor": true}}', "line 1: 'context'"),
        ('{"text": "a", "label": "benign", "extra": 1}', "line 1: unknown field 'extra'"),
    ],
)
def test_load_examples_names_the_problem(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(EvalFileError, match=problem.replace("(", r"\(")):
        load_examples(path)


def example(label: str, hard: bool = False) -> Example:
    return Example(1, "text", label, hard, ScanContext())


def test_figures_count_blocks_by_harm_and_support_as_self_harm() -> None:
    rows = [
        (example("violent_threat"), Verdict("block", "violent_threat")),
        (example("scam"), Verdict("block", "spam")),  # a block on harm is correct, whatever the category
        (example(BENIGN), Verdict("block", "harassment")),
        (example("self_harm"), Verdict("allow", "self_harm", support=True)),
        (example("grooming"), Verdict("allow")),
        (example(BENIGN), Verdict("flag", "scam")),
    ]
    result = figures(rows)
    assert result["block"] == {"decisions": 3, "correct": 2, "precision": 0.6667, "recall": 0.5, "f1": 0.5714}
    assert predicted(Verdict("allow", "self_harm", support=True)) == "self_harm"
    assert result["confusion"]["self_harm"]["self_harm"] == 1
    assert result["confusion"]["grooming"][BENIGN] == 1
    assert result["categories"]["scam"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "labelled": 1,
        "predicted": 1,
        "correct": 0,
    }
    assert result["categories"]["hate"]["precision"] is None
    check_consistent(result, len(rows))


def test_safety_test_prints_the_verdict(tmp_path: Path) -> None:
    done = keyhold_cli("safety", "test", "i'm going to stab you after school", "--home", str(tmp_path))
    assert "verdict: block" in done.stdout
    assert "category: violent_threat" in done.stdout
    assert "signal:violent_threat/" in done.stdout
    as_json = json.loads(
        keyhold_cli("safety", "test", "--json", "see you at lunch", "--home", str(tmp_path)).stdout
    )
    assert as_json["action"] == "allow" and as_json["category"] is None and as_json["fired"] == []


def test_safety_test_minor_recipient_weighs_grooming(tmp_path: Path) -> None:
    text = "how old are you? you seem nice"
    plain = json.loads(keyhold_cli("safety", "test", "--json", text, "--home", str(tmp_path)).stdout)
    minor = json.loads(
        keyhold_cli("safety", "test", "--json", "--minor-recipient", text, "--home", str(tmp_path)).stdout
    )
    assert minor["scores"]["grooming"] > plain["scores"]["grooming"]
    assert plain["action"] == "allow" and minor["action"] != "allow"


def test_bench_safety_prints_json() -> None:
    done = keyhold_cli("bench", "safety", "--messages", "300")
    figures = json.loads(done.stdout)
    assert figures["messages"] == 300
    assert sum(figures["actions"].values()) == 300
    for key in ("wall_us", "cpu_us"):
        assert set(figures[key]) == {"mean", "p50", "p99", "max"}
        assert 0 < figures[key]["p50"] <= figures[key]["p99"] <= figures[key]["max"]
