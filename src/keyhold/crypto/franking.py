"""Message franking (version 1): how a recipient of an e2ee message can prove to a moderator
what its sender wrote, without the service ever holding a key to the conversation.

The sender picks a fresh 32-byte franking key `kf`, puts it inside the encrypted content
(`keyhold.franking_key`, unpadded base64) and sends, outside the ciphertext, the commitment

    HMAC-SHA256(kf, LP(canonical JSON of the content without keyhold.franking_key)
                    || LP(room id) || LP(sender user id) || LP(sender device id))

where LP(x) is x's UTF-8 bytes preceded by their length as 4 bytes, big-endian, and the
canonical JSON is Matrix's (`canonicaljson`: sorted keys, no whitespace, UTF-8). The service
binds the commitment to the message with its own MAC (`keyhold.crypto.franking_keys`). A
recipient checks the commitment when it decrypts; a report reveals the content and `kf`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import canonicaljson

VERSION = 1
KEY_FIELD = "keyhold.franking_key"
KEY_BYTES = 32


def length_prefixed(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def canonical(content: Mapping[str, Any]) -> bytes:
    """The content a commitment covers: canonical JSON, without the franking key."""
    try:
        return bytes(canonicaljson.encode_canonical_json({k: v for k, v in content.items() if k != KEY_FIELD}))
    except (TypeError, ValueError, UnicodeError, RecursionError) as exc:
        raise ValueError("the content has no canonical JSON form") from exc


def commitment(franking_key: bytes, content: Mapping[str, Any], room_id: str, sender: str, device_id: str) -> bytes:
    if len(franking_key) != KEY_BYTES:
        raise ValueError(f"a franking key is {KEY_BYTES} bytes")
    message = length_prefixed(canonical(content), room_id.encode(), sender.encode(), device_id.encode())
    return hmac.new(franking_key, message, hashlib.sha256).digest()


def commitment_matches(
    expected: bytes, franking_key: bytes, content: Mapping[str, Any], room_id: str, sender: str, device_id: str
) -> bool:
    try:
        return hmac.compare_digest(expected, commitment(franking_key, content, room_id, sender, device_id))
    except ValueError:
        return False
