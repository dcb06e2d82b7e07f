"""Finding plaintext where it must not be: secrets ("canaries") searched for in files, whole,
hex- or base64-encoded at every alignment, and as any 16-byte window of them."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

WINDOW = 16


def _encodings(secret: bytes) -> set[bytes]:
    """The secret itself plus the forms it would take if something hex- or base64-encoded it
    (every alignment of base64, standard and URL-safe)."""
    found = {secret, secret.hex().encode(), secret.hex().upper().encode()}
    for shift in range(3):
        part = secret[shift:]
        part = part[: len(part) - len(part) % 3]
        found.add(base64.b64encode(part))
        found.add(base64.urlsafe_b64encode(part))
    return found


def _windows(secret: bytes) -> set[bytes]:
    return {secret[i : i + WINDOW] for i in range(len(secret) - WINDOW + 1)}


class Canaries:
    def __init__(self, encoded: Sequence[bytes], raw: Sequence[bytes] = ()) -> None:
        """`encoded`: looked for whole, encoded, and as windows; `raw`: whole and as windows."""
        self.whole: set[bytes] = set().union(*(_encodings(s) for s in encoded)) | set(raw)
        self.windows: set[bytes] = set().union(*(_windows(s) for s in [*encoded, *raw]))

    def found_in(self, data: bytes) -> list[str]:
        """Descriptions of every canary found in `data` (whole or as a 16-byte window)."""
        found = [f"whole canary {n!r}" for n in self.whole if n in data]
        hits = [i for i in range(len(data) - WINDOW + 1) if data[i : i + WINDOW] in self.windows]
        if hits:
            found.append(
                f"{len(hits)} canary window(s), first at offset {hits[0]}: {data[hits[0] : hits[0] + WINDOW]!r}"
            )
        return found

    def scan(self, paths: list[Path]) -> dict[str, list[str]]:
        leaks = {}
        for path in paths:
            found = self.found_in(path.read_bytes())
            if found:
                leaks[str(path)] = found
        return leaks


def files_under(home: Path) -> list[Path]:
    return sorted(p for p in home.rglob("*") if p.is_file())
