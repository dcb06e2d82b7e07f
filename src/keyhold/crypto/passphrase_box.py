"""Bytes sealed under a passphrase: AES-256-GCM with a key derived by argon2id (t=3, 64 MiB,
4 lanes) from the passphrase and a random salt that travels with the sealed bytes. For a
client's own secrets at rest (an e2ee device's state file); the service holds no such key."""

from __future__ import annotations

import os

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SALT_BYTES = 16
NONCE_BYTES = 12
ARGON2_TIME_COST, ARGON2_MEMORY_KIB, ARGON2_PARALLELISM = 3, 64 * 1024, 4


class WrongPassphrase(Exception):
    """The sealed bytes do not open: another passphrase, or damage."""


class PassphraseBox:
    def __init__(self, passphrase: str) -> None:
        self._passphrase = passphrase.encode()
        self._salt = b""
        self._key = b""

    def _use_salt(self, salt: bytes) -> None:
        if salt != self._salt:  # argon2id is slow on purpose: once per salt
            self._salt = salt
            self._key = hash_secret_raw(
                self._passphrase, salt, ARGON2_TIME_COST, ARGON2_MEMORY_KIB, ARGON2_PARALLELISM, 32, Type.ID
            )

    def _ensure_key(self) -> None:
        if not self._key:
            self._use_salt(os.urandom(SALT_BYTES))

    def subkey(self, purpose: bytes) -> bytes:
        """A 32-byte key for `purpose`, derived from this box's key (HKDF-SHA256)."""
        self._ensure_key()
        return HKDF(hashes.SHA256(), 32, salt=None, info=purpose).derive(self._key)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """Salt, nonce and ciphertext; `context` is bound to it (associated data)."""
        self._ensure_key()
        nonce = os.urandom(NONCE_BYTES)
        return self._salt + nonce + AESGCM(self._key).encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        if len(sealed) < SALT_BYTES + NONCE_BYTES + 16:
            raise WrongPassphrase("too short to be sealed bytes")
        self._use_salt(sealed[:SALT_BYTES])
        nonce = sealed[SALT_BYTES : SALT_BYTES + NONCE_BYTES]
        try:
            return AESGCM(self._key).decrypt(nonce, sealed[SALT_BYTES + NONCE_BYTES :], context)
        except InvalidTag:
            raise WrongPassphrase("the passphrase is wrong or the bytes are damaged") from None
