"""Attachments of `standard` conversations against the operator's hash lists: a `Verdict`.

The SHA-256 of the bytes is checked first (cheap, exact). If any PDQ list is configured and
the attachment is an image that may be decoded, its PDQ hash and those of its seven rotations
and flips are compared with every PDQ list: mirroring or turning an image is the first thing
someone dodging a list tries. The declared content type is the sender's claim, so it decides
nothing: every attachment is looked at. Matching never raises on what a sender uploads: data
that is not an image, too large to decode, or too flat to hash reliably is allowed, with a note
in `fired` saying why it was not matched perceptually. `e2ee` attachments never reach this:
the service cannot read them.

Decoding and hashing an image takes a few milliseconds of CPU: callers on the event loop run
`match` in a worker thread.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from keyhold.safety.hash_lists import (
    EMPTY,
    HASH_LISTS_FILE,
    PDQ_BITS,
    HashList,
    HashListError,
    HashLists,
    load,
)
from keyhold.safety.image_hashes import DEFAULT_MAX_PIXELS, PDQ_MIN_QUALITY, VARIANTS, NotHashable, pdq_hashes
from keyhold.safety.reloading import ReloadingFile
from keyhold.safety.scanning import ALLOW, Verdict, most_severe


def _verdict(hash_list: HashList, fired: str, score: float) -> Verdict:
    return Verdict(
        hash_list.action,
        hash_list.category,
        {hash_list.category: score},
        (fired,),
        f"attachments matching a list of known {hash_list.category.replace('_', ' ')} material are not accepted",
    )


class AttachmentMatcher:
    """Matches attachments against `<home>/safety-hashes.toml`, re-read when it (or a hash
    file it names) changes; while an edit does not parse, the last good lists stay in force
    and `error` says why."""

    def __init__(
        self,
        path: Path,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_quality: int = PDQ_MIN_QUALITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_pixels = max_pixels
        self.min_quality = min_quality
        self._file: ReloadingFile[HashLists] = ReloadingFile(
            path, load, EMPTY, errors=(HashListError,), also_watch=lambda lists: lists.files, clock=clock
        )

    @classmethod
    def for_home(
        cls, home: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_quality: int = PDQ_MIN_QUALITY
    ) -> AttachmentMatcher:
        return cls(home / HASH_LISTS_FILE, max_pixels=max_pixels, min_quality=min_quality)

    @property
    def lists(self) -> HashLists:
        return self._file.current()

    @property
    def error(self) -> str | None:
        return self._file.error

    def match(self, data: bytes, content_type: str | None) -> Verdict:
        lists = self._file.current()
        if not lists.lists:
            return ALLOW
        digest = hashlib.sha256(data).digest()
        verdicts = [_verdict(h, f"hash:{h.name}:sha256", 1.0) for h in lists.sha256_matches(digest)]
        if any(v.action == "block" for v in verdicts) or not lists.has_pdq:
            return most_severe(verdicts)
        try:
            pdq = pdq_hashes(data, self.max_pixels)
        except NotHashable as exc:
            return self._with_note(verdicts, f"hash:pdq:skipped:{exc.reason}")
        if pdq.quality < self.min_quality:
            return self._with_note(verdicts, f"hash:pdq:skipped:quality={pdq.quality}")
        for found in lists.pdq_matches(pdq.hashes):
            variant = "" if found.variant == 0 else f":{VARIANTS[found.variant]}"
            fired = f"hash:{found.hash_list.name}:pdq:distance={found.distance}{variant}"
            verdicts.append(_verdict(found.hash_list, fired, round(1 - found.distance / PDQ_BITS, 3)))
        return most_severe(verdicts)

    @staticmethod
    def _with_note(verdicts: list[Verdict], note: str) -> Verdict:
        verdict = most_severe(verdicts)
        return replace(verdict, fired=(*verdict.fired, note))
