#!/usr/bin/env python3
"""Train the built-in scanner's small text model (`src/keyhold/safety/text_model.py`).

    .venv/bin/python scripts/train-safety-model.py            # k-fold CV, then train and write the data
    .venv/bin/python scripts/train-safety-model.py --cv-only  # only the cross-validation report
    .venv/bin/python scripts/train-safety-model.py --json cv.json

What it does, deterministically and offline (numpy only):
1. reads the tuning sets `tests/data/safety/dev.jsonl` and `dev2.jsonl`. It refuses any file
   whose name contains "heldout": the held-out set is never trained or tuned on;
2. normalizes every message as the scanner does and takes its features (words and word pairs),
   keeping those seen in at least `MIN_DF` messages;
3. k-fold cross-validation (stratified by label, fixed seed): a model trained on k-1 folds
   scores the held-back fold. From these out-of-fold probabilities it picks, per category, the
   lowest probability at which the model's own guesses are right at least `TARGET_PRECISION`
   of the time (never below `MIN_THRESHOLD`): the threshold at which the model's signal fires.
   It reports the model alone and the whole scanner (phrases plus the out-of-fold model) on the
   out-of-fold predictions;
4. trains on everything and writes `src/keyhold/safety/text_model_data.py` (weights as int8
   with one scale, feature idf as float16, biases, the chosen thresholds).

The phrase signals were written while reading these same files, so the whole-scanner CV figures
are optimistic for the phrase part; the model-alone figures are honest out-of-fold estimates.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from keyhold.safety import text_model  # noqa: E402
from keyhold.safety.builtin_scanner import BuiltinScanner  # noqa: E402
from keyhold.safety.evaluation import BENIGN, LABELS, Example, figures, load_examples  # noqa: E402
from keyhold.safety.normalize import normalize  # noqa: E402
from keyhold.safety.scanning import CATEGORIES  # noqa: E402

TRAINING_FILES = ("tests/data/safety/dev.jsonl", "tests/data/safety/dev2.jsonl")
OUTPUT = ROOT / "src" / "keyhold" / "safety" / "text_model_data.py"
MIN_DF = 2  # a feature must occur in at least this many training messages
L2 = 1e-4  # weight decay
ITERATIONS = 600
LEARNING_RATE = 0.05
FOLDS = 5
SEED = 20240917
TARGET_PRECISION = 0.95  # out-of-fold precision the model's signal must reach to fire
MIN_THRESHOLD = 0.5
MAX_THRESHOLD = 0.95
PRUNE = 0.02  # features whose largest |weight| is below this are dropped from the data file


def load(paths: Sequence[str]) -> list[Example]:
    examples: list[Example] = []
    for name in paths:
        if "heldout" in Path(name).name:
            raise SystemExit(f"{name}: the held-out file is never used for training")
        examples.extend(load_examples(ROOT / name))
    return examples


def featurize(examples: Sequence[Example], vocabulary: frozenset[str]) -> list[set[str]]:
    return [text_model.features(normalize(example.text, vocabulary)) for example in examples]


def fit(
    docs: Sequence[set[str]], labels: Sequence[int]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Feature names, idf, weights (features x labels) and biases of a model trained on `docs`."""
    df: dict[str, int] = {}
    for doc in docs:
        for feature in doc:
            df[feature] = df.get(feature, 0) + 1
    names = sorted(f for f, n in df.items() if n >= MIN_DF)
    index = {f: i for i, f in enumerate(names)}
    idf = np.log((1 + len(docs)) / (1 + np.array([df[f] for f in names], dtype=np.float64))) + 1.0
    x = np.zeros((len(docs), len(names)), dtype=np.float32)
    for row, doc in enumerate(docs):
        cols = [index[f] for f in doc if f in index]
        if cols:
            values = idf[cols]
            x[row, cols] = values / np.sqrt(max(float(np.square(values).sum()), text_model.NORM_FLOOR))
    classes = len(LABELS)
    y = np.zeros((len(docs), classes), dtype=np.float32)
    y[np.arange(len(docs)), labels] = 1.0
    counts = y.sum(axis=0)
    sample_weight = (len(docs) / (classes * np.maximum(counts, 1)))[labels].astype(np.float32)
    w = np.zeros((len(names), classes), dtype=np.float32)
    b = np.zeros(classes, dtype=np.float32)
    # Adam on the weighted softmax cross-entropy with L2: deterministic, full batch.
    m_w, v_w = np.zeros_like(w), np.zeros_like(w)
    m_b, v_b = np.zeros_like(b), np.zeros_like(b)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    total = float(sample_weight.sum())
    for step in range(1, ITERATIONS + 1):
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad_logits = (p - y) * sample_weight[:, None] / total
        g_w = x.T @ grad_logits + L2 * w
        g_b = grad_logits.sum(axis=0)
        for param, grad, m, v in ((w, g_w, m_w, v_w), (b, g_b, m_b, v_b)):
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * grad * grad
            m_hat = m / (1 - beta1**step)
            v_hat = v / (1 - beta2**step)
            param -= LEARNING_RATE * m_hat / (np.sqrt(v_hat) + eps)
    return names, idf.astype(np.float32), w, b


def folds_of(labels: Sequence[int]) -> np.ndarray:
    """A fold number per example, stratified by label, from a fixed seed."""
    rng = np.random.default_rng(SEED)
    fold = np.zeros(len(labels), dtype=int)
    for label in sorted(set(labels)):
        members = np.array([i for i, y in enumerate(labels) if y == label])
        rng.shuffle(members)
        fold[members] = np.arange(len(members)) % FOLDS
    return fold


def out_of_fold(docs: Sequence[set[str]], labels: Sequence[int]) -> list[dict[str, float]]:
    fold = folds_of(labels)
    probabilities: list[dict[str, float]] = [{} for _ in docs]
    for k in range(FOLDS):
        train = [i for i in range(len(docs)) if fold[i] != k]
        names, idf, w, b = fit([docs[i] for i in train], [labels[i] for i in train])
        model = text_model.build(LABELS, names, idf, w, b)
        for i in range(len(docs)):
            if fold[i] == k:
                probabilities[i] = model.probabilities_of(docs[i])
        print(f"  fold {k + 1}/{FOLDS}: trained on {len(train)}", file=sys.stderr)
    return probabilities


def choose_thresholds(
    examples: Sequence[Example], probabilities: Sequence[dict[str, float]]
) -> dict[str, float]:
    """Per category: the lowest probability (in steps of 0.05) at which the model's guesses of
    that category are right at least TARGET_PRECISION of the time out of fold."""
    chosen: dict[str, float] = {}
    for category in CATEGORIES:
        pick = MAX_THRESHOLD
        for step in np.arange(MIN_THRESHOLD, MAX_THRESHOLD + 1e-9, 0.05):
            guesses = [
                e.label == category
                for e, p in zip(examples, probabilities, strict=True)
                if p[category] >= step
            ]
            if len(guesses) >= 5 and sum(guesses) / len(guesses) >= TARGET_PRECISION:
                pick = float(round(step, 2))
                break
        chosen[category] = pick
    return chosen


def model_alone(
    examples: Sequence[Example], probabilities: Sequence[dict[str, float]], thresholds: dict[str, float]
) -> dict[str, Any]:
    """P/R of the model by itself: its top category when that is above the category's threshold."""
    out: dict[str, Any] = {}
    guesses = []
    for p in probabilities:
        top = max(CATEGORIES, key=lambda c: p[c])
        guesses.append(top if p[top] >= thresholds[top] else BENIGN)
    for category in CATEGORIES:
        tp = sum(1 for e, g in zip(examples, guesses, strict=True) if g == category and e.label == category)
        predicted = sum(1 for g in guesses if g == category)
        labelled = sum(1 for e in examples if e.label == category)
        out[category] = {
            "precision": round(tp / predicted, 4) if predicted else None,
            "recall": round(tp / labelled, 4) if labelled else None,
            "predicted": predicted,
            "labelled": labelled,
        }
    benign = [g for e, g in zip(examples, guesses, strict=True) if e.label == BENIGN]
    out["benign_marked_harmful"] = sum(1 for g in benign if g != BENIGN)
    out["benign"] = len(benign)
    return out


def scanner_cv(
    examples: Sequence[Example], probabilities: Sequence[dict[str, float]], thresholds: dict[str, float]
) -> dict[str, Any]:
    """The whole built-in scanner with each message's out-of-fold model probabilities."""
    scanner = BuiltinScanner(model=None)
    scanner.model_thresholds = thresholds
    rows = []
    for example, p in zip(examples, probabilities, strict=True):
        rows.append((example, scanner.scan_now(example.text, example.context, probabilities=p)))
    hard = [(e, v) for e, v in rows if e.hard]
    return {"all": figures(rows), "hard": figures(hard)}


def encode(names: list[str], idf: np.ndarray, w: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    keep = np.abs(w).max(axis=1) >= PRUNE
    names = [n for n, k in zip(names, keep, strict=True) if k]
    idf, w = idf[keep], w[keep]
    scale = float(np.abs(w).max()) / 127.0
    quantized = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return {
        "labels": list(LABELS),
        "features": "\n".join(names),
        "idf": base64.b64encode(idf.astype(np.float16).tobytes()).decode(),
        "weights": base64.b64encode(quantized.tobytes()).decode(),
        "scale": scale,
        "bias": [round(float(v), 6) for v in b],
    }


def _block(name: str, items: dict[str, Any]) -> list[str]:
    """`name = {...}` one entry per line, as the formatter writes it."""
    return [f"{name} = {{", *(f"    {json.dumps(k)}: {json.dumps(v)}," for k, v in items.items()), "}"]


def write_module(model: dict[str, Any], thresholds: dict[str, float], sources: dict[str, str]) -> None:
    lines = [
        '"""Generated by scripts/train-safety-model.py: do not edit (see text_model.py)."""',
        "",
        *_block("TRAINED_ON", sources),
        *_block("THRESHOLDS", thresholds),
        "MODEL: dict[str, object] = {",
        '    "labels": [',
        *(f"        {json.dumps(label)}," for label in model["labels"]),
        "    ],",
        f'    "scale": {model["scale"]!r},',
        '    "bias": [',
        *(f"        {value!r}," for value in model["bias"]),
        "    ],",
    ]
    for key in ("features", "idf", "weights"):
        text = model[key]
        chunk = 100
        lines.append(f'    "{key}": (')
        for i in range(0, len(text), chunk):
            lines.append(f"        {json.dumps(text[i : i + chunk])}")
        lines.append("    ),")
    lines.append("}")
    OUTPUT.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cv-only", action="store_true", help="report the cross-validation only")
    parser.add_argument("--json", type=Path, help="write the CV figures to this file")
    args = parser.parse_args()
    examples = load(TRAINING_FILES)
    vocabulary = BuiltinScanner(model=None).vocabulary
    docs = featurize(examples, vocabulary)
    labels = [LABELS.index(e.label) for e in examples]
    print(f"{len(examples)} examples from {', '.join(TRAINING_FILES)}; {FOLDS}-fold CV", file=sys.stderr)
    probabilities = out_of_fold(docs, labels)
    thresholds = choose_thresholds(examples, probabilities)
    report = {
        "folds": FOLDS,
        "seed": SEED,
        "examples": len(examples),
        "thresholds": thresholds,
        "model_alone": model_alone(examples, probabilities, thresholds),
        "scanner": scanner_cv(examples, probabilities, thresholds),
    }
    print(json.dumps({k: report[k] for k in ("thresholds", "model_alone")}, indent=1))
    whole = report["scanner"]["all"]
    print("scanner with out-of-fold model, all lines:")
    for category in CATEGORIES:
        row = whole["categories"][category]
        print(f"  {category:17} P {row['precision']}  R {row['recall']}  F1 {row['f1']}")
    print(f"  block P {whole['block']['precision']} R {whole['block']['recall']}; actions {whole['actions']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.cv_only:
        return
    names, idf, w, b = fit(docs, labels)
    sources = {name: hashlib.sha256((ROOT / name).read_bytes()).hexdigest() for name in TRAINING_FILES}
    write_module(encode(names, idf, w, b), thresholds, sources)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({OUTPUT.stat().st_size // 1024} KiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
