"""Sealed attachment bytes as files under `<home>/blobs` (only ciphertext ever lands here)."""

from __future__ import annotations

import os
import re
from pathlib import Path

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, blob_id: str) -> Path:
        if not _SAFE_ID.match(blob_id):
            raise ValueError("invalid blob id")
        # Two-level fan-out keeps directories small on file systems that slow down with size.
        return self.root / blob_id[-2:] / blob_id

    def write(self, blob_id: str, sealed: bytes) -> None:
        path = self._path(blob_id)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(sealed)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def read(self, blob_id: str) -> bytes:
        return self._path(blob_id).read_bytes()

    def delete(self, blob_id: str) -> None:
        self._path(blob_id).unlink(missing_ok=True)
