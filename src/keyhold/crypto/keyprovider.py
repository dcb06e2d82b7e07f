"""Region key-encryption keys (KEKs) behind a narrow seam: wrap and unwrap a data key.

A `KeyProvider` never hands out a KEK. Callers give it a data key (DEK) plus the context the
wrap is bound to (conversation and epoch), and get back an opaque blob tagged with the KEK
version that made it. The local key-file provider keeps KEKs in `keys.json` (mode 0600);
an HSM provider (PKCS#11) implements the same two methods with keys that never leave the
token; `InMemoryKeyProvider` is the twin for tests.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEK_BYTES = 32
_NONCE_BYTES = 12


class KeyProviderError(Exception):
    """A wrap or unwrap could not be done (unknown region or version, tampered blob)."""


@dataclass(frozen=True)
class WrappedKey:
    kek_version: int
    blob: bytes


class KeyProvider(Protocol):
    def wrap(self, region: str, dek: bytes, context: bytes) -> WrappedKey: ...

    def unwrap(self, region: str, wrapped: WrappedKey, context: bytes) -> bytes: ...


class ManagedKeyProvider(KeyProvider, Protocol):
    """What `keyhold keys` needs on top of wrapping: versions and rotation."""

    def versions(self) -> dict[str, list[int]]: ...

    def current_version(self, region: str) -> int: ...

    def rotate(self, region: str) -> int: ...


def _aad(region: str, version: int, context: bytes) -> bytes:
    # Binds the wrap to its region, KEK version and conversation/epoch: a wrapped DEK copied
    # to another row, region or version does not unwrap.
    return b"keyhold/kek-wrap/v1|" + region.encode() + b"|" + str(version).encode() + b"|" + context


class InMemoryKeyProvider:
    """AES-256-GCM KEKs held in process memory, one list of versions per region."""

    def __init__(self, keks: dict[str, dict[int, bytes]] | None = None) -> None:
        self._lock = threading.Lock()
        self._keks: dict[str, dict[int, bytes]] = {r: dict(v) for r, v in (keks or {}).items()}
        self._aeads: dict[tuple[str, int], AESGCM] = {}

    def ensure_regions(self, regions: tuple[str, ...] | list[str]) -> None:
        for region in regions:
            if region not in self._keks:
                self.rotate(region)

    def versions(self) -> dict[str, list[int]]:
        return {r: sorted(v) for r, v in self._keks.items()}

    def current_version(self, region: str) -> int:
        versions = self._keks.get(region)
        if not versions:
            raise KeyProviderError(f"no key-encryption key for region {region!r}")
        return max(versions)

    def rotate(self, region: str) -> int:
        with self._lock:
            versions = self._keks.setdefault(region, {})
            new_version = max(versions, default=0) + 1
            versions[new_version] = AESGCM.generate_key(bit_length=256)
            self._persist()
        return new_version

    def wrap(self, region: str, dek: bytes, context: bytes) -> WrappedKey:
        version = self.current_version(region)
        nonce = os.urandom(_NONCE_BYTES)
        blob = nonce + self._aead(region, version).encrypt(nonce, dek, _aad(region, version, context))
        return WrappedKey(version, blob)

    def unwrap(self, region: str, wrapped: WrappedKey, context: bytes) -> bytes:
        aead = self._aead(region, wrapped.kek_version)
        nonce, ciphertext = wrapped.blob[:_NONCE_BYTES], wrapped.blob[_NONCE_BYTES:]
        try:
            return aead.decrypt(nonce, ciphertext, _aad(region, wrapped.kek_version, context))
        except InvalidTag as exc:
            raise KeyProviderError(
                f"wrapped key for region {region!r} (KEK v{wrapped.kek_version}) failed to authenticate"
            ) from exc

    def _aead(self, region: str, version: int) -> AESGCM:
        aead = self._aeads.get((region, version))
        if aead is None:
            try:
                aead = AESGCM(self._keks[region][version])
            except KeyError as exc:
                raise KeyProviderError(f"no KEK version {version} for region {region!r}") from exc
            self._aeads[(region, version)] = aead
        return aead

    def _persist(self) -> None:
        """Nothing to persist in memory; the key-file provider writes here."""


class KeyFileProvider(InMemoryKeyProvider):
    """KEKs in a local JSON file readable only by the service account (the embedded default).

    Anyone who can read both this file and the database can read `standard` messages; the
    operator docs say so and point to the HSM provider for deployments that need more.
    """

    FORMAT = 1

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime_ns = 0
        super().__init__(self._load())

    def _load(self) -> dict[str, dict[int, bytes]]:
        keks: dict[str, dict[int, bytes]] = {}
        if self.path.exists():
            self._mtime_ns = self.path.stat().st_mtime_ns
            data = json.loads(self.path.read_text())
            if data.get("format") != self.FORMAT:
                raise KeyProviderError(f"{self.path}: unsupported key file format {data.get('format')!r}")
            for region, versions in data["regions"].items():
                keks[region] = {int(v): base64.b64decode(k) for v, k in versions.items()}
        return keks

    def _refresh(self) -> None:
        """`keyhold keys rotate` may run beside a live server: pick up a changed key file."""
        try:
            changed = self.path.stat().st_mtime_ns != self._mtime_ns
        except FileNotFoundError:
            return
        if changed:
            with self._lock:
                self._keks = self._load()

    def current_version(self, region: str) -> int:
        self._refresh()
        return super().current_version(region)

    def _aead(self, region: str, version: int) -> AESGCM:
        if version not in self._keks.get(region, {}):
            self._refresh()
        return super()._aead(region, version)

    def _persist(self) -> None:
        data = {
            "format": self.FORMAT,
            "regions": {
                region: {str(v): base64.b64encode(k).decode() for v, k in sorted(versions.items())}
                for region, versions in self._keks.items()
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._mtime_ns = self.path.stat().st_mtime_ns
