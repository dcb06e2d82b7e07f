"""Opaque bearer tokens: 256 random bits for the holder, only a SHA-256 digest stored."""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import hashes

TOKEN_PREFIX = "kh_"  # noqa: S105 - a marker for secret scanners, not a secret


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    # A fast hash is enough: the token has 256 bits of entropy, unlike a password.
    digest = hashes.Hash(hashes.SHA256())
    digest.update(token.encode())
    return digest.finalize()
