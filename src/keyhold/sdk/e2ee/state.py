"""A device's end-to-end encryption state on disk: one file, sealed under the member's
passphrase (`keyhold.crypto.passphrase_box`: argon2id, AES-256-GCM), written whole
(temporary file, fsync, rename).

While a client has the file open it holds an exclusive lock on `<file>.lock`: a second client
of the same device would carry a second copy of its Olm and Megolm sessions, and the older
copy reuses message indices that receivers then refuse. So a second open fails instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from keyhold.crypto.passphrase_box import PassphraseBox, WrongPassphrase

MAGIC = b"KHE2E1"


class StateError(Exception):
    """The state file cannot be used: a wrong passphrase, damage, or another client has it."""


class StateFile:
    def __init__(self, path: Path, passphrase: str) -> None:
        if not passphrase:
            raise StateError("a passphrase is needed to keep end-to-end encryption state on disk")
        self.path = path
        self._box = PassphraseBox(passphrase)
        self._lock = self._take_lock()

    def _take_lock(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(f"{self.path} is in use by another client of this device") from None
        return fd

    def pickle_key(self) -> bytes:
        """The 32-byte key vodozemac pickles sessions under (they are sealed again in the file)."""
        return self._box.subkey(b"keyhold e2ee pickle key")

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None if there is no file yet."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if not data.startswith(MAGIC):
            raise StateError(f"{self.path} is not a Keyhold e2ee state file")
        try:
            plain = self._box.open(data[len(MAGIC) :], MAGIC)
        except WrongPassphrase:
            raise StateError(f"{self.path}: wrong passphrase, or the file is damaged") from None
        loaded: dict[str, Any] = json.loads(plain)
        return loaded

    def save(self, state: dict[str, Any]) -> None:
        sealed = MAGIC + self._box.seal(json.dumps(state).encode(), MAGIC)
        # A fresh temporary file of our own (0600, never an existing file or a planted
        # symlink), written whole, then renamed over the old one and the rename made durable.
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(sealed)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def close(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)  # releases the lock
            self._lock = -1
