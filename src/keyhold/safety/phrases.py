"""Phrase patterns over normalized text: what built-in signals and operator terms are written in.

A pattern is plain words separated by spaces, matched as whole words on the normalized
message (`normalize.Normalized`), so `kill you` never matches inside `skill yourself`. Each
word is folded like the message (case, confusables); the message's stretched letters and
leet are read in favour of the words the patterns use (`PhraseBook.vocabulary`), so `kiiill`
and `k1ll` match `kill`.
Inside a pattern:

    a|b|c       one of these words here (`will|going_to`: `_` joins words of one alternative)
    {NAME}      one of the alternatives of the named word class (see `PhraseBook.classes`)
    word?       this word (or slot) may be missing
    kill*       a word starting with `kill` (kills, killing, killer)
    ...         up to four words of anything
    x || y      either whole phrase
    #           a number

A pattern without `...` is also searched in the squashed form (all words run together),
counting only where the match touches letters that were written spaced out or dotted
(`k i l l y o u`, `k.m.s`) and starts and ends on word edges or inside such letters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from keyhold.safety.normalize import Normalized, skeleton

GAP = "..."
COMMON_WORDS = frozenset(
    "i you your me my a an the to is are am and or of in on at it for will be we so do not that this "
    "just with what can going get have has they them he she him her up if all no one send now us our "
    "would could go like know see over out about back there then when how some was were been from by "
    "as but".split()
)
GAP_WORDS = 4


class PatternError(ValueError):
    """A pattern that cannot be compiled; the message names the pattern and the problem."""


@dataclass(frozen=True)
class Phrase:
    name: str
    pattern: str
    words_source: str  # the regex over words, compiled on first use (`words_regex`)
    squashed_source: str | None  # the regex over the squashed form, or None: not searched there
    anchors: frozenset[str] | None  # one of these words must be present, or None: always try
    words: frozenset[str]  # every literal word of the pattern

    # Compiled on first use: the built-in book's ~1,000 regexes took ~0.33 s to compile, paid by
    # every process that builds a scanner (a server, its scan child, each CLI command), and most
    # phrases are never a message's candidate. The sources are escaped words and fixed pieces:
    # they compile, so deferring it defers no error.
    @functools.cached_property
    def words_regex(self) -> re.Pattern[str]:
        return re.compile(self.words_source)

    @functools.cached_property
    def squashed_regex(self) -> re.Pattern[str] | None:
        return re.compile(self.squashed_source) if self.squashed_source is not None else None


def _alternatives(slot: str, classes: Mapping[str, tuple[str, ...]], pattern: str) -> list[str]:
    alternatives: list[str] = []
    for part in slot.split("|"):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            if name not in classes:
                raise PatternError(f"{pattern!r}: unknown word class {{{name}}}")
            alternatives.extend(classes[name])
        elif "{" in part or "}" in part:
            raise PatternError(f"{pattern!r}: a word class is written {{NAME}}, not {part!r}")
        else:
            alternatives.append(part.replace("_", " "))
    return alternatives


def _alt_regex(alternative: str, joiner: str, pattern: str) -> tuple[str, list[str]]:
    """One alternative (a word or several) as a regex, and its literal words."""
    parts: list[str] = []
    literals: list[str] = []
    for raw in alternative.split():
        if raw == "#":
            parts.append(r"\d[\d,.]*[kmx]?")  # 500, 1,000, 10k, 1000x
            continue
        prefix = raw.endswith("*")
        word = skeleton(raw.rstrip("*"))
        word = "".join(c for c in word if c.isalnum())
        if not word:
            raise PatternError(f"{pattern!r}: {raw!r} has no letters or digits")
        if prefix:
            parts.append(re.escape(word) + (r"\S*" if joiner == " " else r"[a-z0-9]*?"))
        else:
            parts.append(re.escape(word))
            literals.append(word)
    return joiner.join(parts), literals


Variant = tuple[str, str | None, frozenset[str] | None, set[str]]


def _least_common(words: list[str]) -> str:
    return next((word for word in words if word not in COMMON_WORDS), words[0])


def _compile_variant(pattern: str, classes: Mapping[str, tuple[str, ...]]) -> Variant:
    """One phrase: its regex over words, over the squashed form (None if it has a gap), its
    anchors, its literal words."""
    literal_words: set[str] = set()
    words_parts: list[str] = []
    squashed_parts: list[str] = []
    squashable = True
    anchor_choices: list[frozenset[str]] = []
    for token in pattern.split():
        if token == GAP:
            words_parts.append(rf"(?:\S+ ){{0,{GAP_WORDS}}}")
            squashable = False
            continue
        optional = token.endswith("?") and len(token) > 1
        slot = token[:-1] if optional else token
        alternatives = _alternatives(slot, classes, pattern)
        compiled = [_alt_regex(alt, " ", pattern) for alt in alternatives]
        for _, literals in compiled:
            literal_words.update(literals)
        squashed = [_alt_regex(alt, "", pattern)[0] for alt in alternatives]
        # Longest first: the regex engine takes the first alternative that fits.
        order = sorted(range(len(compiled)), key=lambda i: -len(compiled[i][0]))
        group = "(?:" + "|".join(compiled[i][0] for i in order) + ") "
        squashed_group = "(?:" + "|".join(squashed[i] for i in order) + ")"
        words_parts.append(f"(?:{group})?" if optional else group)
        squashed_parts.append(f"{squashed_group}?" if optional else squashed_group)
        if not optional and all(literals for _, literals in compiled):
            # Every literal word of an alternative is in a message it matches: a required
            # slot's alternatives' least common words are a necessary condition for a match.
            anchor_choices.append(frozenset(_least_common(literals) for _, literals in compiled))
    if not words_parts:
        raise PatternError(f"{pattern!r}: nothing to match")
    # The rarest slot makes the best anchor: "i ... kill ... you" is looked for only in
    # messages that have "kill", not in every message that has "i".
    anchors = min(anchor_choices, key=lambda words: (len(words & COMMON_WORDS), len(words)), default=None)
    return "".join(words_parts), ("".join(squashed_parts) if squashable else None), anchors, literal_words


def compile_phrase(name: str, pattern: str, classes: Mapping[str, tuple[str, ...]] | None = None) -> Phrase:
    variants = [v.strip() for v in pattern.split("||")]
    if not all(variants):
        raise PatternError(f"{name}: an empty pattern")
    compiled = [_compile_variant(v, classes or {}) for v in variants]
    squashed = [s for _, s, _, _ in compiled if s is not None]
    anchor_sets = [a for _, _, a, _ in compiled]
    anchors: frozenset[str] | None = None
    if all(a is not None for a in anchor_sets):
        anchors = frozenset(word for a in anchor_sets if a is not None for word in a)
    return Phrase(
        name=name,
        pattern=pattern,
        words_source=" (?:" + "|".join(w for w, _, _, _ in compiled) + ")",
        squashed_source="|".join(f"(?:{s})" for s in squashed) if squashed else None,
        anchors=anchors,
        words=frozenset(word for _, _, _, literals in compiled for word in literals),
    )


class PhraseBook:
    """Compiled phrases, matched together against one normalized message."""

    def __init__(
        self, phrases: Iterable[tuple[str, str]], classes: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        self.classes = {name: tuple(alts) for name, alts in (classes or {}).items()}
        self.phrases = tuple(compile_phrase(name, pattern, self.classes) for name, pattern in phrases)
        self.vocabulary = frozenset(word for phrase in self.phrases for word in phrase.words)
        # Which phrases a word anchors: a message is searched only for the phrases one of whose
        # anchors it contains (the least common word of each alternative of their rarest
        # required slot), and for those without anchors (a slot of prefixes or numbers only).
        self._by_anchor: dict[str, list[int]] = {}
        self._always: list[int] = []
        self._squashable = [i for i, phrase in enumerate(self.phrases) if phrase.squashed_source is not None]
        # The squashed form is searched only for the phrases one of whose anchor words occurs in
        # it: the message is cut once into its substrings of the anchors' lengths.
        self._squashed_by_anchor: dict[str, list[int]] = {}
        self._squashed_always: list[int] = []
        for index in self._squashable:
            anchors = self.phrases[index].anchors
            if anchors is None:
                self._squashed_always.append(index)
            else:
                for word in anchors:
                    self._squashed_by_anchor.setdefault(word, []).append(index)
        self._squashed_words = frozenset(self._squashed_by_anchor)
        self._anchor_lengths = sorted({len(word) for word in self._squashed_words})
        for index, phrase in enumerate(self.phrases):
            if phrase.anchors is None:
                self._always.append(index)
            else:
                for word in phrase.anchors:
                    self._by_anchor.setdefault(word, []).append(index)
        self._anchor_words = frozenset(self._by_anchor)

    def _candidates(self, words: Iterable[str]) -> set[int]:
        """The phrases to search a message of these words for."""
        candidates = set(self._always)
        for word in self._anchor_words.intersection(words):
            candidates.update(self._by_anchor[word])
        return candidates

    def matches(self, text: Normalized) -> list[str]:
        """The names of the phrases found in `text` (each once, in book order)."""
        present = set(text.expanded.split())
        if text.alternate:
            present.update(text.alternate.split())
        candidates = self._candidates(present)
        hits: set[int] = set()
        for index in candidates:
            regex = self.phrases[index].words_regex
            if regex.search(text.expanded) or (text.alternate and regex.search(text.alternate)):
                hits.add(index)
        if text.obfuscated:
            squashed = text.squashed
            pieces = {
                squashed[start : start + size]
                for size in self._anchor_lengths
                for start in range(len(squashed) - size + 1)
            }
            tried = set(self._squashed_always)
            for word in self._squashed_words.intersection(pieces):
                tried.update(self._squashed_by_anchor[word])
            for index in sorted(tried - hits):
                if _in_squashed(self.phrases[index], text):
                    hits.add(index)
        return [self.phrases[i].name for i in sorted(hits)]


def _inside(position: int, spans: tuple[tuple[int, int], ...]) -> bool:
    return any(start < position < end for start, end in spans)


def _in_squashed(phrase: Phrase, text: Normalized) -> bool:
    assert phrase.squashed_regex is not None
    for match in phrase.squashed_regex.finditer(text.squashed):
        start, end = match.span()
        if start == end:
            continue
        touches = any(s < end and start < e for s, e in text.obfuscated)
        aligned = (start in text.boundaries or _inside(start, text.obfuscated)) and (
            end in text.boundaries or _inside(end, text.obfuscated)
        )
        if touches and aligned:
            return True
    return False
