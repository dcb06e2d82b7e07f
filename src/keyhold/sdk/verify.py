"""Client-side checks of the access log: signed tree heads and a member's own access events.

Pure functions over what the public API returns; nothing here trusts the server, and nothing
here talks to it (`Client.access_events` fetches, then calls `verify_access_events`).

    head = await client.transparency_head()
    assert verify_tree_head(head, pinned_key="…hex…")
    events = await client.access_events()   # raises VerificationError if any proof fails

What is checked for an access event (an item of `/api/v1/account/access-events`):
- the tree head is signed by its Ed25519 key (and that key is the pinned one, if given):
  `b"keyhold-sth/v1" || size (8 bytes BE) || root || timestamp_ms (8 bytes BE)`;
- the entry bytes are the leaf at `index` of that tree (RFC 9162 inclusion proof, leaf hash
  `SHA-256(0x00 || entry)`), so the service cannot show one member an entry that auditors do
  not see;
- the member's block is committed to by the entry (its hash `leaf_hash(b"keyhold-block/v1" ||
  block)` is one of the entry's `subjects`), names the same index and the member, and the
  summary fields of the item (type, messages) are the ones in the signed bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from keyhold.crypto.merkle import (
    HASH_SIZE,
    STH_PREFIX,
    block_hash,
    head_signature_valid,
    leaf_hash,
    sth_message,
    verify_consistency,
    verify_inclusion,
)
from keyhold.sdk.errors import KeyholdError

__all__ = [
    "VerificationError",
    "block_hash",
    "sth_message",
    "verify_access_event",
    "verify_access_events",
    "verify_consistency_between",
    "verify_tree_head",
]


class VerificationError(KeyholdError):
    """Something the server returned does not verify (a signature, a proof, a commitment)."""

    def __init__(self, reason: str) -> None:
        super().__init__(0, {"title": "Verification failed", "detail": reason})
        self.reason = reason


def _hex(value: object, length: int | None = None) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    if length is not None and len(raw) != length:
        return None
    return raw


def _key_bytes(key: bytes | str | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return _hex(key, 32)


def _int(value: object) -> int | None:
    # bool is an int in Python; a JSON `true` is not a size.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_head(head: Mapping[str, Any]) -> tuple[int, bytes, int, bytes, bytes] | None:
    """(size, root, timestamp_ms, signature, public key) of a tree head as the API returns it."""
    size, timestamp = _int(head.get("size")), _int(head.get("timestamp_ms"))
    root = _hex(head.get("root"), HASH_SIZE)
    signature = _hex(head.get("signature"), 64)
    public_key = _hex(head.get("public_key"), 32)
    if size is None or timestamp is None or root is None or signature is None or public_key is None:
        return None
    return size, root, timestamp, signature, public_key


def verify_tree_head(
    head_json: Mapping[str, Any], pinned_key: bytes | str | None = None, prefix: bytes = STH_PREFIX
) -> bool:
    """Whether a tree head (as `/transparency/sth` returns it) carries a valid Ed25519 signature
    by its public key, and, when `pinned_key` (raw 32 bytes or hex) is given, that key is it.
    An empty log's head (size 0, unsigned) does not verify: there is nothing signed to trust.
    `prefix` names the log (the key-transparency log's heads: `KEY_STH_PREFIX`)."""
    parsed = parse_head(head_json)
    if parsed is None:
        return False
    size, root, timestamp, signature, public_key = parsed
    if pinned_key is not None:
        pinned = _key_bytes(pinned_key)
        if pinned is None or pinned != public_key:
            return False
    return head_signature_valid(public_key, signature, size, root, timestamp, prefix)


def parse_proof(proof_hex: object) -> list[bytes] | None:
    """A proof as the API returns it (a list of hex hashes), or None if it is not one."""
    if not isinstance(proof_hex, list):
        return None
    proof = [_hex(p, HASH_SIZE) for p in proof_hex]
    return [p for p in proof if p is not None] if all(p is not None for p in proof) else None


def verify_consistency_between(
    old_head: Mapping[str, Any], new_head: Mapping[str, Any], proof_hex: list[str], prefix: bytes = STH_PREFIX
) -> bool:
    """Whether `new_head` extends `old_head` (append-only), given the consistency proof the
    API returns for their sizes. Both heads must also carry valid signatures by the same key."""
    old, new = parse_head(old_head), parse_head(new_head)
    if old is None or new is None or old[4] != new[4]:
        return False
    if not (verify_tree_head(old_head, prefix=prefix) and verify_tree_head(new_head, prefix=prefix)):
        return False
    proof = parse_proof(proof_hex)
    return proof is not None and verify_consistency(old[0], new[0], old[1], new[1], proof)


def verify_access_event(
    item: Mapping[str, Any],
    head_json: Mapping[str, Any],
    user_id: int | None = None,
    pinned_key: bytes | str | None = None,
) -> bool:
    """Whether one access event verifies against a signed tree head: see the module docstring.
    `user_id`, when known, must be the member the block names."""
    if not verify_tree_head(head_json, pinned_key):
        return False
    parsed_head = parse_head(head_json)
    assert parsed_head is not None
    size, root = parsed_head[0], parsed_head[1]
    entry_text, block_text, index = item.get("entry"), item.get("block"), _int(item.get("index"))
    if not isinstance(entry_text, str) or not isinstance(block_text, str) or index is None:
        return False
    entry_bytes, block_bytes = entry_text.encode(), block_text.encode()
    try:
        entry = orjson.loads(entry_bytes)
        block = orjson.loads(block_bytes)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(entry, dict) or not isinstance(block, dict):
        return False
    subjects = entry.get("subjects")
    if not isinstance(subjects, list) or block_hash(block_bytes) not in subjects:
        return False
    if entry.get("idx") != index or block.get("idx") != index:
        return False
    named = block.get("user")
    if _int(named) is None or (user_id is not None and named != user_id):
        return False
    # The convenience fields must say what the signed bytes say.
    if "type" in item and item["type"] != entry.get("type"):
        return False
    if "messages" in item and item["messages"] != block.get("messages"):
        return False
    proof = parse_proof(item.get("inclusion_proof"))
    return proof is not None and verify_inclusion(leaf_hash(entry_bytes), index, size, proof, root)


def verify_access_events(
    data: Mapping[str, Any], user_id: int, pinned_key: bytes | str | None = None
) -> list[dict[str, Any]]:
    """Verify every item of `/account/access-events` (as returned) against the tree head
    returned with them, each block naming `user_id`; raise `VerificationError` if anything
    fails, else return the items."""
    items = data.get("items")
    head = data.get("tree_head")
    if not isinstance(items, list):
        raise VerificationError("the response has no list of items")
    if not items:
        return []
    if not isinstance(head, dict) or not verify_tree_head(head, pinned_key):
        raise VerificationError("the signed tree head does not verify")
    for item in items:
        if not isinstance(item, dict) or not verify_access_event(item, head, user_id, pinned_key):
            where = item.get("index") if isinstance(item, dict) else "?"
            raise VerificationError(f"access event at index {where} does not verify")
    return [dict(item) for item in items]
