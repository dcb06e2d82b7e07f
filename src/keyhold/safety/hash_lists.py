"""The operator's lists of known-bad attachment hashes: `<home>/safety-hashes.toml`.

Any number of lists, each with the action it triggers and the category it is recorded under:

    [[lists]]
    name = "known-csam"            # lower-case letters, digits, '.', '_' and '-'
    category = "csam"              # lower-case; scanning.CATEGORIES or the operator's own
    action = "block"               # flag | hold | block
    kind = "pdq"                   # sha256 (exact bytes) | pdq (perceptual, images)
    max_distance = 31              # pdq only: bits of 256 that may differ (0-64, default 31)
    file = "hashes/csam-pdq.txt"   # one hex hash a line, '#' comments; relative to this file
    hashes = ["4529aa55...", ...]  # and/or inline

Categories are names, not a closed set: the text scanner's categories (`scam`, `hate`, ...)
and the ones hash lists usually carry (`csam`, `terror`, `ncii`) alike; a list's category is
what the verdict records. The distance bound: PDQ's authors recommend 31 of 256 bits; two
unrelated images differ in about 128, so beyond 64 unrelated images start to match.

A list is parsed once into the form it is matched in: SHA-256 digests in a set, PDQ hashes
packed into four arrays of 64-bit words (the first word of every hash, the second, ...),
compared all at once by XOR and popcount: a column at a time keeps numpy on long contiguous
arrays, six times faster than a row per hash (8 queries x 100,000 entries: about 3 ms).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from keyhold.safety.reloading import read_text, toml_tables

HASH_LISTS_FILE = "safety-hashes.toml"
ListAction = Literal["flag", "hold", "block"]
Kind = Literal["sha256", "pdq"]
LIST_ACTIONS: tuple[ListAction, ...] = get_args(ListAction)
KINDS: tuple[Kind, ...] = get_args(Kind)
PDQ_BITS = 256
PDQ_DEFAULT_MAX_DISTANCE = 31
PDQ_MAX_DISTANCE_LIMIT = 64
LIST_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
CATEGORY_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
HEX_HASH = re.compile(r"[0-9a-fA-F]{64}")  # SHA-256 and PDQ are both 256 bits
KEYS = ("name", "category", "action", "kind", "max_distance", "hashes", "file")

Packed = npt.NDArray[np.uint64]


class HashListError(ValueError):
    """The hash-list file is not valid; the message names the list, and the file and line."""


@dataclass(frozen=True, eq=False)
class HashList:
    name: str
    category: str
    action: ListAction
    kind: Kind
    max_distance: int  # pdq: the largest Hamming distance that matches; sha256: 0
    digests: frozenset[bytes]  # sha256 lists
    packed: Packed  # pdq lists: shape (4, n), word k of every hash in row k
    files: tuple[Path, ...]  # the hash files it was read from

    def __len__(self) -> int:
        return len(self.digests) if self.kind == "sha256" else int(self.packed.shape[1])


@dataclass(frozen=True)
class PdqMatch:
    hash_list: HashList
    distance: int
    variant: int  # which of the query hashes matched (for PDQ: which rotation or flip)


@dataclass(frozen=True)
class HashLists:
    lists: tuple[HashList, ...] = ()

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(path for hash_list in self.lists for path in hash_list.files)

    @property
    def has_pdq(self) -> bool:
        return any(hash_list.kind == "pdq" and len(hash_list) for hash_list in self.lists)

    def sha256_matches(self, digest: bytes) -> list[HashList]:
        return [h for h in self.lists if h.kind == "sha256" and digest in h.digests]

    def pdq_matches(self, hashes: Sequence[bytes]) -> list[PdqMatch]:
        """Each PDQ list's closest entry to any of `hashes`, if within its `max_distance`."""
        if not hashes:
            return []
        queries = pack(hashes).T
        found: list[PdqMatch] = []
        for hash_list in self.lists:
            if hash_list.kind != "pdq" or not len(hash_list):
                continue
            best_distance, best_variant = PDQ_BITS + 1, 0
            for variant, query in enumerate(queries):
                distances = distances_to(hash_list.packed, query)
                nearest = int(distances.min())
                if nearest < best_distance:
                    best_distance, best_variant = nearest, variant
            if best_distance <= hash_list.max_distance:
                found.append(PdqMatch(hash_list, best_distance, best_variant))
        return found


EMPTY = HashLists()


def pack(hashes: Sequence[bytes]) -> Packed:
    """256-bit hashes as four rows of 64-bit words, shape (4, n) (byte order within a word is
    irrelevant to popcount)."""
    if not hashes:
        return np.zeros((4, 0), dtype=np.uint64)
    return np.ascontiguousarray(np.frombuffer(b"".join(hashes), dtype=np.uint64).reshape(-1, 4).T)


def distances_to(packed: Packed, query: Packed) -> npt.NDArray[np.uint16]:
    """The Hamming distance from `query` (four words) to every hash in `packed`."""
    # uint16: a distance can be 256, one more than uint8 holds.
    total: npt.NDArray[np.uint16] = np.bitwise_count(packed[0] ^ query[0]).astype(np.uint16)
    for word in range(1, 4):
        total += np.bitwise_count(packed[word] ^ query[word])
    return total


def _hex_hash(text: str, where: str) -> bytes:
    if not HEX_HASH.fullmatch(text):
        shown = text if len(text) <= 24 else text[:24] + "..."
        raise HashListError(f"{where}: not a 64-digit hex hash ({shown!r})")
    return bytes.fromhex(text)


def _read_hash_file(path: Path, where: str) -> list[bytes]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HashListError(f"{where}: file {path} does not exist") from None
    except UnicodeDecodeError:
        raise HashListError(f"{where}: file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise HashListError(f"{where}: file {path} cannot be read ({exc.strerror})") from None
    hashes: list[bytes] = []
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.split("#", 1)[0].strip()
        if value:
            hashes.append(_hex_hash(value, f"{where}: {path} line {number}"))
    return hashes


def _choice(table: dict[str, Any], key: str, allowed: tuple[str, ...], where: str) -> Any:
    value = table.get(key)
    if value is None:
        raise HashListError(f"{where}: needs {key} ({' | '.join(allowed)})")
    if value not in allowed:
        raise HashListError(f"{where}.{key}: must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _max_distance(table: dict[str, Any], kind: Kind, where: str) -> int:
    if "max_distance" not in table:
        return PDQ_DEFAULT_MAX_DISTANCE if kind == "pdq" else 0
    if kind != "pdq":
        raise HashListError(f"{where}.max_distance: only pdq lists have a distance (sha256 matches exactly)")
    value = table["max_distance"]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= PDQ_MAX_DISTANCE_LIMIT:
        raise HashListError(
            f"{where}.max_distance: must be a whole number of bits from 0 to {PDQ_MAX_DISTANCE_LIMIT} "
            f"(PDQ recommends {PDQ_DEFAULT_MAX_DISTANCE})"
        )
    return value


def _parse_list(table: Any, index: int, base: Path, seen: set[str]) -> HashList:
    where = f"lists[{index}]"
    if not isinstance(table, dict):
        raise HashListError(f"{where}: must be a table ([[lists]])")
    name = table.get("name")
    if not isinstance(name, str) or not LIST_NAME.fullmatch(name):
        raise HashListError(f"{where}.name: a list name is lower-case letters, digits, '.', '_' and '-'")
    where = f"list {name!r}"
    if name in seen:
        raise HashListError(f"{where}: a second list with this name")
    seen.add(name)
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise HashListError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(KEYS)})")
    category = table.get("category")
    if not isinstance(category, str) or not CATEGORY_NAME.fullmatch(category):
        raise HashListError(f"{where}.category: a category is a lower-case name (letters, digits, '_')")
    action: ListAction = _choice(table, "action", LIST_ACTIONS, where)
    kind: Kind = _choice(table, "kind", KINDS, where)
    max_distance = _max_distance(table, kind, where)
    if "hashes" not in table and "file" not in table:
        raise HashListError(f'{where}: needs hashes = [...] or file = "..." (or both)')
    inline = table.get("hashes", [])
    if not isinstance(inline, list):
        raise HashListError(f"{where}.hashes: must be a list of hex strings")
    hashes = [
        _hex_hash(value if isinstance(value, str) else repr(value), f"{where}.hashes[{i}]")
        for i, value in enumerate(inline)
    ]
    files: tuple[Path, ...] = ()
    if "file" in table:
        if not isinstance(table["file"], str) or not table["file"]:
            raise HashListError(f"{where}.file: must be a path (relative to {base})")
        path = base / table["file"]
        hashes += _read_hash_file(path, where)
        files = (path,)
    unique = list(dict.fromkeys(hashes))
    if kind == "sha256":
        return HashList(name, category, action, kind, 0, frozenset(unique), pack([]), files)
    return HashList(name, category, action, kind, max_distance, frozenset(), pack(unique), files)


def parse(text: str, base: Path) -> HashLists:
    """The lists in `text`; `file =` paths are relative to `base` (the file's directory)."""
    data = toml_tables(text, HashListError, ("lists",), "unknown setting {name} (known: [[lists]])")
    tables = data.get("lists", [])
    if not isinstance(tables, list):
        raise HashListError("lists: must be an array of tables ([[lists]])")
    seen: set[str] = set()
    return HashLists(tuple(_parse_list(table, i, base, seen) for i, table in enumerate(tables)))


def load(path: Path) -> HashLists:
    """The lists in `path`, or none if there is no such file."""
    text = read_text(path, HashListError)
    return EMPTY if text is None else parse(text, path.parent)
