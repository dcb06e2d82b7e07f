"""The scanner's shortcuts give the answers the long way gives.

Three shortcuts keep a plain message's scan cheap (docs/benchmarks.md, "Scanning"): plain
text is normalized the short way (`normalize._plain`), a phrase is searched only in messages
that have one of its anchor words, and the learned model is skipped when a bound shows its
words cannot reach any threshold (`TextModel.risks`). Each is checked here against the long
way on the tuning lines (`dev.jsonl`, `dev2.jsonl`) and on generated texts, plain and not,
and each check also asserts that the shortcut was taken often enough to mean something.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from keyhold.safety import pipeline
from keyhold.safety.builtin_scanner import BuiltinScanner
from keyhold.safety.normalize import (
    NUMBER_PARTS,
    _chunk_pieces,
    _plain,
    chunk_reading,
    fold,
    normalize,
    normalize_fully,
)
from keyhold.safety.phrases import _in_squashed
from keyhold.safety.scanning import ScanContext, Verdict
from keyhold.safety.text_model import default_model, default_thresholds

DATA = Path(__file__).parent / "data" / "safety"
COMMON = (
    "the quick brown fox jumps over lazy dog i you we are to and a of in it is that for on was "
    "with he as at by u r ur lol ok thanks see tomorrow can't won't i'd it's"
).split()
ENDINGS = ("", "!", "!!!", "?", "...", ".", " :)", " (((", " k i l l", " a b", " www.example.com", " 10k")


def _tuning_lines() -> list[str]:
    return [
        json.loads(line)["text"]
        for name in ("dev.jsonl", "dev2.jsonl")
        for line in (DATA / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def _generated(count: int, seed: int) -> list[str]:
    """Word salads of the model's own words (which move it most) and everyday ones, with
    numbers, shouting, wide gaps, spaced letters, links and punctuation mixed in."""
    model = default_model()
    assert model is not None
    feature_words = sorted({f[2:] for f in model.rows if f.startswith("w:")})
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = [rng.choice(feature_words if rng.random() < 0.6 else COMMON) for _ in range(rng.randint(1, 14))]
        if rng.random() < 0.25:
            words.insert(rng.randrange(len(words) + 1), str(rng.randint(0, 10 ** rng.randint(1, 13))))
        text = " ".join(words)
        if rng.random() < 0.2:
            text = text.upper()
        if rng.random() < 0.1:
            text = text.replace(" ", "  ", 1)
        texts.append(text + rng.choice(ENDINGS))
    return texts


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    # The delivery benchmark's kind of text too: a counter, a time, filler.
    bench = [f"{i % 20} {i // 20} {1733160000000 + i * 977} the quick brown fox jumps over the" for i in range(200)]
    # Numbers with separators (read the short way as the numbers between) and dots that are no link.
    numbers = [
        f"{i} {i * 7 % 1000}.{i % 100:02d} {i % 24}:{i % 60:02d} 2026-{i % 12 + 1:02d}-03 {i * 1001:,} 3/14 "
        f"1.{i}x 4.5.{i}. v1.2.3 .{i}" + (" e.g. it...no end.of" if i % 2 else "")
        for i in range(200)
    ]
    return _tuning_lines() + _generated(3000, seed=9) + bench + numbers


@pytest.fixture(scope="module")
def scanner() -> BuiltinScanner:
    return BuiltinScanner()


def test_plain_text_is_read_as_the_long_way_reads_it(corpus: list[str], scanner: BuiltinScanner) -> None:
    plain = 0
    for vocabulary in (scanner.vocabulary, frozenset()):
        for text in corpus:
            short = _plain(text, vocabulary)
            if short is not None:
                plain += 1
                assert short == normalize_fully(text, vocabulary), text
            assert normalize(text, vocabulary) == normalize_fully(text, vocabulary), text
    assert len(corpus) < plain < 2 * len(corpus) - 200  # taken often, and not for everything


@pytest.mark.parametrize(
    "text",
    [
        "k i l l you",
        "p a y   t h e   m o n e y",
        "k.i.l.l",
        "see www.example.com",
        "see http://localhost:8080/x",  # a link with no dot before a letter
        "at 12:30 https://10.0.0.1/a",
        "kill\u200byou",
        "caf\u00e9",
        "",
    ],
)
def test_what_is_not_plain_goes_the_long_way(text: str, scanner: BuiltinScanner) -> None:
    if text:
        assert _plain(text, scanner.vocabulary) is None
    assert normalize(text, scanner.vocabulary) == normalize_fully(text, scanner.vocabulary)


def test_a_chunk_is_read_as_the_long_way_reads_it(corpus: list[str], scanner: BuiltinScanner) -> None:
    """`chunk_reading`'s short ways (numbers, kept readings) against reading each chunk anew."""
    numbers = 0
    for text in corpus:
        for chunk in fold(text).split():
            if chunk.isdigit():
                continue
            numbers += bool(NUMBER_PARTS.fullmatch(chunk))
            assert chunk_reading(chunk, scanner.vocabulary) == _chunk_pieces(chunk, scanner.vocabulary), chunk
    assert numbers > 500


def test_a_phrase_is_never_missed_for_want_of_an_anchor(corpus: list[str], scanner: BuiltinScanner) -> None:
    """Every phrase searched in every message, the brute-force way, finds what `matches` finds."""
    book = scanner.book
    found = 0
    obfuscated = ["k i l l y o u r s e l f", "k.i.l.l yourself", "s e n d  n u d e s", "p a y  m e  n o w"]
    for text in corpus[:1500] + obfuscated:
        norm = normalize(text, scanner.vocabulary)
        every = [
            phrase.name
            for phrase in book.phrases
            if phrase.words_regex.search(norm.expanded)
            or (norm.alternate and phrase.words_regex.search(norm.alternate))
            or (norm.obfuscated and phrase.squashed_source is not None and _in_squashed(phrase, norm))
        ]
        assert book.matches(norm) == every, text
        found += bool(every)
    assert found > 300


def test_the_model_is_skipped_only_where_it_would_say_nothing(corpus: list[str], scanner: BuiltinScanner) -> None:
    model, thresholds = default_model(), default_thresholds()
    assert model is not None
    risks = model.risks(thresholds)
    assert risks is not None
    skipped = signalled = 0
    for text in corpus:
        norm = normalize(text, scanner.vocabulary)
        probabilities = model.probabilities(norm)
        signals = [c for c, t in thresholds.items() if probabilities.get(c, 0.0) >= t]
        if risks.of(norm) < 1.0:
            skipped += 1
            assert not signals, (text, probabilities)
        signalled += bool(signals)
    assert skipped > len(corpus) // 4
    assert signalled > 100  # the bound was tested against texts the model does flag


def test_no_bound_when_a_prior_is_already_at_its_threshold() -> None:
    model = default_model()
    assert model is not None
    assert model.risks({**default_thresholds(), "spam": 0.01}) is None
    assert model.risks({c: t for c, t in default_thresholds().items() if c != "hate"}) is None


def _verdicts(scanner: pipeline.PipelineScanner, texts: list[str]) -> list[Verdict]:
    contexts = [
        ScanContext(),
        ScanContext(sender_id=3, conversation_id=9),
        ScanContext(
            sender_id=4, conversation_id=1, recipient_minor=True, sender_adult_non_friend=True, sender_account_age_days=1.0
        ),
    ]
    answers = []
    for round_ in range(3):  # the same texts to new conversations: the spam tracker counts
        for text in texts:
            for context in contexts:
                if context.conversation_id:
                    context = dataclasses.replace(context, conversation_id=context.conversation_id + 10 * round_)
                answers.append(scanner.scan_local(text, context))
    return answers


def test_the_whole_scan_answers_as_without_shortcuts(
    corpus: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "safety-rules.toml").write_text(
        "[[rule]]\nname = 'casino'\ncategory = 'spam'\naction = 'flag'\nterms = ['casino bonus', 'quick brown']\n"
        "[[rule]]\nname = 'nine'\ncategory = 'scam'\naction = 'hold'\nregex = '(?i)jumps over 9'\n"
        "[[rule]]\nname = 'site'\ncategory = 'scam'\naction = 'block'\ndomains = ['example.com']\n",
        encoding="utf-8",
    )
    texts = corpus[::8]
    with_shortcuts = _verdicts(pipeline.build_scanner(tmp_path), texts)
    without = pipeline.build_scanner(tmp_path)
    without.builtin._risks = None  # the model read for every message
    monkeypatch.setattr(pipeline, "normalize", normalize_fully)
    assert _verdicts(without, texts) == with_shortcuts
    assert {v.action for v in with_shortcuts} >= {"allow", "flag", "hold", "block"}
    assert any(name.startswith("signal:spam/behaviour_repeated") for v in with_shortcuts for name in v.fired)
