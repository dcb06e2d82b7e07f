"""Message text folded to the forms that signals and operator terms are matched on.

People who want a filter to miss a word write it so that a person still reads it: `K1LL`,
`k i l l`, `k.i.l.l`, `kiiiill`, `k\u0456ll` with a Cyrillic i (U+0456), a zero-width space inside it, or
🔪 for the word. `normalize` undoes each of these:

- NFKC (full-width and mathematical letters become plain ones), case folding, combining marks
  and invisible format characters (zero-width spaces and joiners, soft hyphens, variation
  selectors) dropped;
- Unicode confusables mapped to the Latin letter they imitate, from the table of UTS #39 that
  `confusable-homoglyphs` ships (kept in step with Unicode by its maintainers; we keep no list
  of our own);
- emoji that stand in for words (🔪 knife, 🔫 gun, 💣 bomb…) replaced by the word;
- leetspeak inside words that have letters (`k1ll`, `h4te`, `$tupid`); numbers stay numbers.
  `1`, `!` and `|` read as `i` or `l`: the reading that is a word some matcher knows wins;
- punctuation between the letters of a word (`k.i.l.l`, `ki-ll`), and runs of three or more
  single letters (`k i l l`), joined back into one word, and remembered as obfuscated;
- stretched letters undone (`kiiiill`, `stuuupid`): each run of a letter is read as one or two,
  and again the reading some matcher knows wins (`loot` stays `loot`, never `lot`).

Leet and stretched letters are ambiguous, so `normalize` takes the *vocabulary* of the
matchers that will read its result (the words of their patterns and terms) to choose.

What comes out (`Normalized`) is the list of words, the same with chat shorthand
spelled out (`u` → you, `gonna` → going to), both joined by single spaces for phrase patterns,
the *squashed* form (all words run together) with the spans that came from spaced or dotted
letters (a phrase found in the squashed form counts only where it touches such a span, so that
`upskill yourself` never reads as `kill yourself`), and the links' hosts.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import cast
from urllib.parse import urlsplit

# Emoji used for a word. The word becomes its own token, so that "🔪🔪 tonight" reads "knife
# knife tonight". 💀 reads "skull", not "dead": in chat it mostly means "I laughed".
EMOJI_WORDS: dict[str, str] = {
    "🔪": "knife",
    "🗡": "knife",
    "⚔": "knife",
    "🔫": "gun",
    "💣": "bomb",
    "🧨": "bomb",
    "💥": "boom",
    "💀": "skull",
    "☠": "skull",
    "⚰": "coffin",
    "🪦": "grave",
    "🩸": "blood",
    "🪓": "axe",
    "🔥": "fire",
    "🖕": "fuck you",
    "🍆": "dick",
    "🍑": "ass",
    "💦": "cum",
    "📸": "pic",
    "📷": "pic",
    "🤳": "pic",
    "🔞": "nsfw",
    "💰": "money",
    "💵": "money",
    "💸": "money",
    "🤑": "money",
    "🎁": "gift",
    "₿": "bitcoin",
    "🤫": "secret",
    "🐒": "monkey",
    "🐵": "monkey",
    "🦍": "ape",
    "🐀": "rat",
    "💊": "pills",
    "📹": "video",
    "🏠": "house",
    "🎥": "video",
    "😂": "lol",
    "🤣": "lol",
    "🪳": "cockroach",
    "🪢": "rope",
    "🐷": "pig",
    "🐖": "pig",
    "🐽": "pig",
    "🤡": "clown",
    "🤮": "disgusting",
    "🐍": "snake",
    "🍌": "banana",
    "🔒": "private",
    "🤐": "secret",
    "🧸": "teddy",
    "👙": "bikini",
    "🩲": "underwear",
    "🚿": "shower",
    "🛁": "bath",
    "🌈": "rainbow",
}
# Emoji sequences for a word (their joiners are gone by the time words are read).
EMOJI_SEQUENCES: dict[str, str] = {
    "\U0001f3f3\ufe0f\u200d\U0001f308": "gay",  # rainbow flag
    "\U0001f3f3\u200d\U0001f308": "gay",
    "\U0001f3f3\ufe0f\u200d\u26a7\ufe0f": "trans",  # transgender flag
    "\U0001f3f3\u200d\u26a7": "trans",
}
# Characters that stand for letters inside a word; several readings where people use both.
LEET: dict[str, tuple[str, ...]] = {
    "0": ("o",),
    "1": ("i", "l"),
    "3": ("e",),
    "4": ("a",),
    "5": ("s",),
    "7": ("t",),
    "8": ("b",),
    "9": ("g",),
    "@": ("a",),
    "$": ("s",),
    "!": ("i", "l"),
    "|": ("l", "i"),
    "+": ("t",),
    "€": ("e",),
    "*": ("u", "i", "a", "o", "e"),  # a starred-out letter: "f*ck", "m*rder"
}
AMBIGUOUS_LIMIT = 3  # a word with more ambiguous characters takes each one's first reading
# Chat shorthand, spelled out before phrases are matched (keys and values are plain words;
# both go through `skeleton`). Only words whose other meanings do not matter to any signal.
SHORTHAND: dict[str, str] = {
    "u": "you",
    "ya": "you",
    "yu": "you",
    "r": "are",
    "ur": "your",
    "youre": "you are",
    "im": "i am",
    "ima": "i am going to",
    "imma": "i am going to",
    "gonna": "going to",
    "gon": "going to",
    "finna": "going to",
    "wanna": "want to",
    "gotta": "got to",
    "h8": "hate",
    "no1": "no one",
    "fck": "fuck",
    "fk": "fuck",
    "fuk": "fuck",
    "fuq": "fuck",
    "pls": "please",
    "plz": "please",
    "ppl": "people",
    "thx": "thanks",
    "kys": "kill yourself",
    "urself": "yourself",
    "yourslef": "yourself",
    "kms": "kill myself",
    "stfu": "shut the fuck up",
    "wtf": "what the fuck",
    "pic": "picture",
    "pics": "pictures",
    "pix": "pictures",
    "nudez": "nudes",
    "n00dz": "nudes",
    "noodz": "nudes",
    "dm": "message",
    "dms": "messages",
    "irl": "in real life",
    "rn": "right now",
    "bc": "because",
    "cuz": "because",
    "coz": "because",
    "ty": "thank you",
    "idk": "i do not know",
    "dont": "do not",
    "didnt": "did not",
    "cant": "can not",
    "cannot": "can not",
    "wont": "will not",
    "isnt": "is not",
    "arent": "are not",
    "aint": "is not",
    "wasnt": "was not",
    "doesnt": "does not",
    "shouldnt": "should not",
    "wouldnt": "would not",
    "couldnt": "could not",
    "havent": "have not",
    "itll": "it will",
    "ive": "i have",
    "youll": "you will",
    "youve": "you have",
    "theyre": "they are",
    "thats": "that is",
    "its": "it is",
    "whats": "what is",
    "hes": "he is",
    "shes": "she is",
    "tonights": "tonight is",
    "every1": "everyone",
    "some1": "someone",
    "any1": "anyone",
    "2day": "today",
    "2morrow": "tomorrow",
    "2moro": "tomorrow",
    "2mrw": "tomorrow",
    "tmrw": "tomorrow",
    "tmr": "tomorrow",
    "2nite": "tonight",
    "2night": "tonight",
    "tonite": "tonight",
    "4ever": "forever",
    "b4": "before",
    "l8": "late",
    "l8r": "later",
    "gr8": "great",
    "w8": "wait",
    "bout": "about",
    "abt": "about",
    "boutta": "about to",
    "tryna": "trying to",
    "lemme": "let me",
    "gimme": "give me",
    "shud": "should",
    "wud": "would",
    "cud": "could",
    "wen": "when",
    "wat": "what",
    "wot": "what",
    "bak": "back",
    "lil": "little",
    "em": "them",
    "deets": "details",
    "msg": "message",
    "msgs": "messages",
    "everyones": "everyone is",
    "someones": "someone is",
    "nobodys": "nobody is",
    "whos": "who is",
    "lookin": "looking",
    "wit": "with",
    "hav": "have",
    "hv": "have",
    "vid": "video",
    "vids": "videos",
    "nuds": "nudes",
    "sub4sub": "sub for sub",
    "f4f": "follow for follow",
    "l4l": "like for like",
    "follow4follow": "follow for follow",
}
# Contractions whose letters alone would read as another word ("i'd" is not "id", "we're" not
# "were", "he'll" not "hell"); the others lose their apostrophe and are spelled out as shorthand.
CONTRACTIONS: dict[str, str] = {
    "i'd": "i would",
    "you'd": "you would",
    "we'd": "we would",
    "he'd": "he would",
    "she'd": "she would",
    "they'd": "they would",
    "we're": "we are",
    "we'll": "we will",
    "he'll": "he will",
    "she'll": "she will",
    "it'd": "it would",
    "one's": "one is",
}
# "x's" is "x is" after these words ("it's", "who's"); after any other word it is a possessive.
POSSESSIVE = re.compile(r"(\w+)'s(\W*)")
IS_STEMS = frozenset(
    "it that what he she there who where how here let everyone someone nobody one everybody somebody "
    "anybody anyone nothing something everything this why when".split()
)
URL = re.compile(r"(?:https?://|www\.)[^\s<>\"']+|\b(?:[\w-]+\.)+[a-z]{2,24}\b(?:/[^\s<>\"']*)?", re.I)
# Every link `URL` finds has "://", "www." or a dot before a letter in it: in lower-case text
# without any, it finds none (the cheap test spares plain messages with numbers like 3.5 the
# pattern's search, profiled at ~3.5 µs a message).
DOT_LETTER = re.compile(r"\.[a-z]")
# A bare name ("example.shop/x") is a link only under one of these top-level domains, so that
# "k.i.ll" or "end.of sentence" stays text; written with a scheme or www. any name is a link.
BARE_TLDS = frozenset(
    "com net org info biz io co me ly gl gg tv app dev xyz top shop store online site link click live "
    "ru cn tk ml ga cf gq pw su cc ws to us uk de fr nl es it eu ca au in br jp kr ch se no pl".split()
)
WORD_SEPARATORS = re.compile(r"[^\w@$!|+€*]+")  # inside a whitespace-separated chunk
REPEATS = re.compile(r"(.)\1+")
# A number with an ordinal ending or a unit (10k, 24h, 5pm, 3rd, 1000x, 20lbs) is not leet; other
# letters after digits are ("3nd" is "end", "1t" is "it").
NUMBER_WITH_UNIT = re.compile(
    r"\d*(?:1st|2nd|3rd)|\d+(?:th|s|k|m|b|x|bn|mn|h|hr|hrs|min|mins|sec|secs|am|pm|g|kg|mg|lb|lbs|km|mi"
    r"|ft|cm|mm|ml|l|gb|mb|tb|p|d|yr|yrs|y|w|wk|wks|mo|yo|v|mph|kph|ish)"
)
# Letters spaced out with wider gaps between the words ("p a y   t h e   4 0 0"): each stretch
# of single characters between the wide gaps is one word.
WIDE_GAP = re.compile(r"\s{2,}")
SPACED_LETTERS = re.compile(r"(?:\S ){1,}\S")
# Unicode names the letter a variant imitates: "LATIN LETTER SMALL CAPITAL H" is h.
LATIN_VARIANT = re.compile(r"LATIN (?:SMALL |CAPITAL )?LETTER (?:SMALL CAPITAL |SCRIPT |DOTLESS )?([A-Z])")
MAX_RUNS = 4  # a word with more runs of a repeated letter is not searched for a known reading
SPACED_RUN = 3  # this many single letters in a row are one spaced-out word
# Digits with single separators between them: read as the numbers between (what `_chunk_pieces`
# reads them as), the short way.
NUMBER_PARTS = re.compile(r"[0-9]+(?:[.,:/-][0-9]+)+")
NUMBER_SEPARATOR = re.compile(r"[.,:/-]")
DOTTED_PIECE = 2  # a chunk whose pieces are all this short is one dotted word ("k.i.l.l", "ki.ll")
STARRED = re.compile(r"([a-z]{1,2})\*{2,}[a-z]*")  # "n*****": a word starred out, kept as "nstars"


def _confusables() -> dict[int, str]:
    """Every non-ASCII character that UTS #39 lists as confusable with one ASCII letter or digit."""
    raw = resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text(encoding="utf-8")
    table: dict[int, str] = {}
    for char, homoglyphs in json.loads(raw).items():
        if len(char) != 1 or char.isascii():
            continue
        for glyph in homoglyphs:
            target = glyph["c"]
            if len(target) == 1 and target.isascii() and target.isalnum():
                table[ord(char)] = target.lower()
                break
    return table


CONFUSABLES = _confusables()


@functools.lru_cache(maxsize=8192)
def _imitates_latin(char: str) -> bool:
    """A letter of another script or form that reads as a Latin one (a Cyrillic a, a Greek
    kappa, a small capital H)."""
    upper = char.upper()
    return (
        ord(char) in CONFUSABLES
        or (len(upper) == 1 and ord(upper) in CONFUSABLES)
        or LATIN_VARIANT.fullmatch(unicodedata.name(char, "")) is not None
    )


@functools.lru_cache(maxsize=8192)
def _fold_char(char: str) -> str:
    """One non-ASCII character (after NFKC and case folding) as matching sees it."""
    if char in EMOJI_WORDS:
        return f" {EMOJI_WORDS[char]} "
    category = unicodedata.category(char)
    if category in ("Cf", "Mn", "Me"):  # invisible format characters, combining marks
        return ""
    if category.startswith("Z"):
        return " "
    mapped = CONFUSABLES.get(ord(char))
    if mapped is not None:
        return mapped
    upper = char.upper()  # the text was case-folded: a Greek kappa was a capital, which imitates "K"
    if len(upper) == 1 and ord(upper) in CONFUSABLES:
        return CONFUSABLES[ord(upper)]
    variant = LATIN_VARIANT.fullmatch(unicodedata.name(char, ""))
    if variant:  # small capitals and other letter forms the table does not list (U+029C, U+A730)
        return variant.group(1).lower()
    decomposed = unicodedata.normalize("NFD", char)  # é -> e + mark; the mark goes
    base = "".join(c for c in decomposed if unicodedata.category(c) not in ("Mn", "Me"))
    if base != char:
        return "".join(_fold_char(c) if not c.isascii() else c for c in base)
    return char


def fold(text: str) -> str:
    """NFKC, case folding, invisible characters and combining marks dropped, confusables mapped
    to ASCII, emoji stand-ins spelled out."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if text.isascii():
        return text
    return "".join(c if c.isascii() else _fold_char(c) for c in text)


def visible(text: str) -> str:
    """NFKC with invisible format characters dropped: what an operator's regular expression
    sees (case and letters kept as written)."""
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def skeleton(word: str) -> str:
    """A plain word (of a pattern or a term) as it is compared with the message's words."""
    return fold(word)


def _known(word: str, vocabulary: frozenset[str]) -> bool:
    return word in vocabulary or word in shorthand()


def _unrepeat(word: str, vocabulary: frozenset[str]) -> str:
    """`word` with its stretched letters undone (`kiiiill`, `stuuupid`): of the readings with
    each run of a letter as one or two, the first some matcher knows; else runs of three or
    more become one letter and doubled letters stay (`nooooo` -> `no`, `loot` -> `loot`)."""
    if _known(word, vocabulary):
        return word
    runs = [m.span() for m in REPEATS.finditer(word)]
    if not runs:
        return word
    if len(runs) <= MAX_RUNS:
        for lengths in itertools.product((1, 2), repeat=len(runs)):
            candidate = _with_runs(word, runs, lengths)
            if _known(candidate, vocabulary):
                return candidate
    return _with_runs(word, runs, tuple(1 if end - start > 2 else 2 for start, end in runs))


def _with_runs(word: str, runs: list[tuple[int, int]], lengths: tuple[int, ...]) -> str:
    parts: list[str] = []
    position = 0
    for (start, end), length in zip(runs, lengths, strict=True):
        parts.append(word[position:start] + word[start] * min(length, end - start))
        position = end
    return "".join(parts) + word[position:]


def _deleet(word: str, vocabulary: frozenset[str]) -> str:
    """`word` (letters with leet characters) read as letters: of the possible readings, the
    first that some matcher knows, else the first."""
    options = [LEET.get(c, (c,)) for c in word]
    ambiguous = sum(len(o) > 1 for o in options)
    if ambiguous == 0 or ambiguous > AMBIGUOUS_LIMIT:
        return _unrepeat("".join(o[0] for o in options), vocabulary)
    first = ""
    for letters in itertools.product(*options):
        candidate = _unrepeat("".join(letters), vocabulary)
        if _known(candidate, vocabulary):
            return candidate
        first = first or candidate
    return first


# Words repeat across messages: each piece is read once per vocabulary (a frozenset hashes
# once), and the cache is bounded so that a flood of distinct junk cannot grow it.
@functools.lru_cache(maxsize=65536)
def _word(piece: str, vocabulary: frozenset[str]) -> tuple[str, bool]:
    """One piece of a chunk as a word, and whether leet was read in it."""
    if piece in shorthand():  # "h8" is shorthand, not leet for "hb"
        return piece, False
    if piece.isalpha():
        return _unrepeat(piece, vocabulary), False
    if piece.strip("$") == "":  # "$$$"
        return "money", False
    if NUMBER_WITH_UNIT.fullmatch(piece):  # 10k, 24h, 5pm, 3rd, 1000x: not leet
        return piece, False
    if any(c.isalpha() for c in piece) and any(c in LEET for c in piece):
        return _deleet(piece, vocabulary), True
    piece = "".join(c for c in piece if c.isalnum())
    return (_unrepeat(piece, vocabulary) if not piece.isdigit() else piece), False


@dataclass(frozen=True)
class Link:
    host: str  # as written, after NFKC and case folding (IDNA is not decoded)
    skeleton_host: str  # with confusables mapped: differs from `host` for a look-alike domain


@dataclass(frozen=True)
class Normalized:
    words: tuple[str, ...]  # word skeletons, spaced and dotted words joined
    expanded: str  # " w1 w2 … " with shorthand spelled out: what phrase patterns run over
    alternate: str  # the same with spaced letters kept apart ("u r a …"), or "" if none
    squashed: str  # all words run together
    obfuscated: tuple[tuple[int, int], ...]  # spans of `squashed` from spaced or dotted letters
    links: tuple[Link, ...]
    tricks: frozenset[str]  # which obfuscations were undone: leet, spacing, homoglyph, invisible
    word_count: int  # words of the message itself (a link counts as one word, its host's words not)

    @functools.cached_property
    def boundaries(self) -> frozenset[int]:
        """Word starts and ends in `squashed` (read only for a message with obfuscated spans)."""
        return frozenset(itertools.accumulate(map(len, self.words), initial=0))


def _links(text: str) -> tuple[list[Link], str, int]:
    """The links' hosts, and `text` with each link replaced by the word "url"."""
    links: list[Link] = []
    added: list[int] = []

    def replace(match: re.Match[str]) -> str:
        url = match.group(0)
        bare = "://" not in url and not url.startswith("www.")
        if bare and url.split("/", 1)[0].rsplit(".", 1)[-1] not in BARE_TLDS:
            return url
        try:
            host = urlsplit(url if "://" in url else "http://" + url).hostname or ""
        except ValueError:
            host = ""
        host = host.rstrip(".")
        if not host:
            return " url "
        links.append(Link(host, fold(host)))
        # The host's words count as text ("secure-chasebank-verify.com"), its last label does not.
        labels = [w for w in re.split(r"[.\-_]", fold(host))[:-1] if len(w) > 1 and w != "www"]
        added.append(len(labels))
        return " url " + " ".join(labels) + " "

    text = URL.sub(replace, text)
    return links, text, sum(added)


def expand(words: Iterable[str]) -> str:
    """`words` with shorthand spelled out, as " w1 w2 … ": what phrase patterns run over."""
    spelled = shorthand()
    return " " + " ".join([spelled.get(w, w) for w in words if w]) + " "


def normalize(text: str, vocabulary: frozenset[str] = frozenset()) -> Normalized:
    """`text` in the forms matchers use; `vocabulary` (word skeletons some matcher knows) picks
    between the readings of ambiguous leet characters."""
    plain = _plain(text, vocabulary)
    return plain if plain is not None else normalize_fully(text, vocabulary)


def normalize_fully(text: str, vocabulary: frozenset[str] = frozenset()) -> Normalized:
    """`normalize` the long way for every text, plain ones too (`_plain` is checked against it)."""
    tricks: set[str] = set()
    for sequence, word in EMOJI_SEQUENCES.items():
        if sequence in text:
            text = text.replace(sequence, f" {word} ")
    text = unicodedata.normalize("NFKC", text).casefold()
    if not text.isascii():
        if any(unicodedata.category(c) == "Cf" for c in text):
            tricks.add("invisible")
        text = "".join(c for c in text if unicodedata.category(c) != "Cf")
        if any(_imitates_latin(c) for c in text if not c.isascii()):
            tricks.add("homoglyph")
    links, text, link_words = _links(text)
    folded = fold(text)
    if "  " in folded and SPACED_LETTERS.search(folded):
        segments = WIDE_GAP.split(folded)
        joined = [seg.replace(" ", "") if SPACED_LETTERS.fullmatch(seg) else seg for seg in segments]
        if joined != segments:
            tricks.add("spacing")
            folded = " ".join(joined)
    # Words: (skeleton, single letter written alone, obfuscated)
    pieces: list[tuple[str, bool, bool]] = []
    for chunk in folded.split():
        found = chunk_reading(chunk, vocabulary)
        pieces.extend(found[0])
        tricks.update(found[1])
    words, obfuscated_flags, alternate_words = _assemble(pieces, vocabulary)
    spaced = len(alternate_words) != len(words)
    if any(obfuscated_flags):
        tricks.add("spacing")
    spans: list[tuple[int, int]] = []
    position = 0
    for word, obfuscated in zip(words, obfuscated_flags, strict=True):
        if obfuscated:
            spans.append((position, position + len(word)))
        position += len(word)
    expanded = expand(words)
    alternate = expand(alternate_words) if spaced else ""
    return Normalized(
        words=tuple(words),
        expanded=expanded,
        alternate=alternate if alternate != expanded else "",
        squashed="".join(words),
        obfuscated=tuple(spans),
        links=tuple(links),
        tricks=frozenset(tricks),
        word_count=max(len(alternate_words) - link_words, 0),
    )


def _plain(text: str, vocabulary: frozenset[str]) -> Normalized | None:
    """`normalize`'s answer for most messages, the short way; None for the rest.

    A plain text is ASCII (so NFKC, case folding and the confusables change nothing but case,
    and there is no emoji or invisible character), has no link (nor anything the link pattern
    takes for one), no two spaces in a row (letters spaced out between wide gaps), no chunk of
    dotted letters and no run of `SPACED_RUN` single letters (both are joined into one word and
    searched squashed too). What is left of normalizing it is reading each chunk, by the same
    `chunk_reading`; the result is the one the long way gives (tests compare the two on every
    tuning line and on generated texts)."""
    if not text.isascii():
        return None
    lowered = text.lower()
    # Most messages have nothing the link pattern could take for a link (`_may_have_link`).
    if "  " in lowered or (_may_have_link(lowered) and URL.search(lowered)):
        return None
    chunks = lowered.split()
    known = _simple_words(vocabulary).get
    # A number is itself (and numbers rarely repeat: they are not kept).
    found = [known(chunk) or (chunk if chunk.isdigit() else None) for chunk in chunks]
    words = cast("list[str]", found)
    tricks = _NO_TRICKS
    if None in found:  # a chunk not read before, or not one plain word
        read, tricks = _words_of(chunks, found, vocabulary)
        if read is None:
            return None
        words = read
    return Normalized(
        words=tuple(words),
        expanded=expand(words),
        alternate="",
        squashed="".join(words),
        obfuscated=(),
        links=(),
        tricks=tricks,
        word_count=len(words),
    )


def _may_have_link(lowered: str) -> bool:
    return "://" in lowered or "www." in lowered or DOT_LETTER.search(lowered) is not None


def _words_of(
    chunks: list[str], found: list[str | None], vocabulary: frozenset[str]
) -> tuple[list[str] | None, frozenset[str]]:
    """The words of a plain text's chunks, and the tricks undone in them; None for words when
    a chunk is dotted letters or single letters run to a spaced-out word. `found`: each chunk's
    one plain word or number where it is known to be one, else None."""
    words: list[str] = []
    tricks: set[str] = set()
    singles = 0
    for chunk, plain in zip(chunks, found, strict=True):
        if plain is not None:  # one plain word or a number: neither a single letter nor obfuscated
            singles = 0
            words.append(plain)
            continue
        pieces, chunk_tricks = chunk_reading(chunk, vocabulary)
        for word, single, obfuscated in pieces:
            singles = singles + 1 if single else 0
            if obfuscated or singles >= SPACED_RUN:
                return None, _NO_TRICKS
            words.append(word)
        tricks.update(chunk_tricks)
    return words, frozenset(tricks)


# What a chunk of text (between spaces) reads as depends only on the chunk and the vocabulary,
# and people repeat their words: the readings are kept, per vocabulary (profiled: reading each
# chunk anew was most of a message's normalization). Bounded, so that a flood of distinct junk
# cannot grow them.
Pieces = tuple[tuple[tuple[str, bool, bool], ...], frozenset[str]]
_READINGS: dict[frozenset[str], dict[str, Pieces]] = {}
# The same for the chunks that read as one plain word (no single letter, no trick undone): the
# word, so that a plain message's words are one look-up each.
_SIMPLE_WORDS: dict[frozenset[str], dict[str, str]] = {}
MAX_CHUNKS = 50_000  # per vocabulary
MAX_VOCABULARIES = 2  # the rules in force and the ones before: at most 100,000 readings in all
_NO_TRICKS: frozenset[str] = frozenset()


def _readings(vocabulary: frozenset[str]) -> dict[str, Pieces]:
    kept = _READINGS.get(vocabulary)
    if kept is None:
        if len(_READINGS) >= MAX_VOCABULARIES:
            _READINGS.clear()
            _SIMPLE_WORDS.clear()
        kept = _READINGS[vocabulary] = {}
        _SIMPLE_WORDS[vocabulary] = {}
    return kept


def _simple_words(vocabulary: frozenset[str]) -> dict[str, str]:
    kept = _SIMPLE_WORDS.get(vocabulary)
    if kept is None:
        _readings(vocabulary)
        kept = _SIMPLE_WORDS[vocabulary]
    return kept


def chunk_reading(chunk: str, vocabulary: frozenset[str]) -> Pieces:
    """What one chunk of folded text (between spaces) reads as: its words, (skeleton, single
    letter written alone, obfuscated), and the tricks undone in it."""
    if chunk.isdigit() and chunk.isascii():
        return ((chunk, False, False),), _NO_TRICKS  # a number is itself, and rarely repeats
    if NUMBER_PARTS.fullmatch(chunk):  # 3.5, 1,000, 12:30, 2026-12-03: its numbers, not kept either
        return tuple((part, False, False) for part in NUMBER_SEPARATOR.split(chunk)), _NO_TRICKS
    kept = _readings(vocabulary)
    found = kept.get(chunk)
    if found is None:
        found = _chunk_pieces(chunk, vocabulary)
        simple = _SIMPLE_WORDS[vocabulary]
        if len(kept) >= MAX_CHUNKS:
            kept.clear()
            simple.clear()
        kept[chunk] = found
        pieces, tricks = found
        if len(pieces) == 1 and not pieces[0][1] and not pieces[0][2] and not tricks:
            simple[chunk] = pieces[0][0]
    return found


def _chunk_pieces(chunk: str, vocabulary: frozenset[str]) -> Pieces:
    """One chunk's words, (skeleton, single letter written alone, obfuscated), and the tricks
    undone in it."""
    chunk = chunk.replace("\u2019", "'")
    contraction = CONTRACTIONS.get(chunk.strip('.,;:?!"()'))
    if contraction:  # "i'd" is "i would", not "id"
        return tuple((word, False, False) for word in contraction.split()), frozenset()
    possessive = POSSESSIVE.fullmatch(chunk)
    if possessive and possessive.group(1) not in IS_STEMS:  # "your school's page": the school
        chunk = possessive.group(1) + possessive.group(2)
    chunk = chunk.replace("'", "")
    starred = STARRED.fullmatch(chunk.strip('.,;:?!"()'))
    if starred:
        return ((starred.group(1) + "stars", False, False),), frozenset()
    chunk = chunk.strip('.,;:?!"()[]{}<>*-_~^`=/\\#%&')  # edge punctuation is not leet
    chunk = chunk.lstrip("@")  # mentions
    parts = [p for p in WORD_SEPARATORS.split(chunk) if p]
    dotted = len(parts) > 1 and all(len(p) <= DOTTED_PIECE for p in parts)
    if dotted and any(p.isalpha() for p in parts):  # "k.i.l.l", not "1.99" or "3/14"
        word, _ = _word("".join(parts), vocabulary)
        return ((word, False, True),), frozenset(("spacing",))
    pieces: list[tuple[str, bool, bool]] = []
    leet_read = False
    for part in parts:
        word, leet = _word(part, vocabulary)
        leet_read = leet_read or leet
        if word:
            pieces.append((word, len(part) == 1 and part.isalpha(), False))
    return tuple(pieces), frozenset(("leet",)) if leet_read else frozenset()


def _assemble(
    pieces: list[tuple[str, bool, bool]], vocabulary: frozenset[str]
) -> tuple[list[str], list[bool], list[str]]:
    """Runs of single letters joined into one word; the plain word list kept beside it."""
    words: list[str] = []
    flags: list[bool] = []
    alternate: list[str] = []
    for single, group in itertools.groupby(pieces, key=lambda p: p[1]):
        run = list(group)
        alternate.extend(p[0] for p in run)
        if single and len(run) >= SPACED_RUN:
            words.append(_unrepeat("".join(p[0] for p in run), vocabulary))
            flags.append(True)
        else:
            words.extend(p[0] for p in run)
            flags.extend(p[2] for p in run)
    return words, flags, alternate


@functools.cache
def shorthand() -> dict[str, str]:
    return {fold(k): fold(v) for k, v in SHORTHAND.items()}
