"""Matrix's signed JSON: an object signed with Ed25519 over its canonical JSON form.

The signature covers the object without its `signatures` and `unsigned` members, encoded as
canonical JSON (sorted keys, no insignificant whitespace, UTF-8; the `canonicaljson`
library's encoding), and sits in `signatures[<user id>][<algorithm>:<key id>]` as unpadded
base64. Device keys, one-time keys, fallback keys and cross-signing keys are all signed this
way (Matrix client-server specification, "Signing JSON"). Keys and signatures travel as
unpadded standard base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from typing import Any

import canonicaljson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_UNPADDED_BASE64 = re.compile(r"^[A-Za-z0-9+/]*$")


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def decode_base64(text: str) -> bytes:
    """Unpadded (or padded) standard base64; ValueError for anything else."""
    stripped = text.rstrip("=")
    if not _UNPADDED_BASE64.match(stripped) or len(stripped) % 4 == 1:
        raise ValueError("not base64")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64") from exc


def signing_bytes(obj: Mapping[str, Any]) -> bytes:
    """What a signature covers. ValueError if the object has no canonical JSON form (a float,
    a string that is not valid Unicode)."""
    unsigned = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    try:
        return bytes(canonicaljson.encode_canonical_json(unsigned))
    except (TypeError, ValueError, UnicodeError, RecursionError) as exc:
        raise ValueError("the object has no canonical JSON form") from exc


def signed_digest(obj: Mapping[str, Any]) -> str:
    """SHA-256 of what the object's signatures cover, unpadded base64: what a key-transparency
    entry commits to (signatures added later and `unsigned` do not change it)."""
    return encode_base64(hashlib.sha256(signing_bytes(obj)).digest())


def ed25519_public_key(key_b64: str) -> Ed25519PublicKey:
    """An Ed25519 public key from its unpadded base64; ValueError if it is not one."""
    raw = decode_base64(key_b64)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signed_json(obj: Mapping[str, Any], user_id: str, key_id: str, public_key_b64: str) -> bool:
    """Whether `obj` carries a valid signature by `user_id`'s key `key_id` (e.g.
    `ed25519:DEVICE`), whose public key is `public_key_b64`. False for any malformation."""
    signatures = obj.get("signatures")
    by_user = signatures.get(user_id) if isinstance(signatures, Mapping) else None
    signature = by_user.get(key_id) if isinstance(by_user, Mapping) else None
    if not isinstance(signature, str):
        return False
    try:
        public_key = ed25519_public_key(public_key_b64)
        public_key.verify(decode_base64(signature), signing_bytes(obj))
    except (ValueError, InvalidSignature):
        return False
    return True


def sign_json(obj: Mapping[str, Any], user_id: str, key_id: str, private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of `obj` with `user_id`'s signature by `key_id` added beside any it had."""
    return with_signature(obj, user_id, key_id, encode_base64(private_key.sign(signing_bytes(obj))))


def with_signature(obj: Mapping[str, Any], user_id: str, key_id: str, signature: str) -> dict[str, Any]:
    """A copy of `obj` with this signature (unpadded base64) added beside any it had."""
    signatures = {user: dict(keys) for user, keys in dict(obj.get("signatures") or {}).items()}
    signatures.setdefault(user_id, {})[key_id] = signature
    return {**obj, "signatures": signatures}
