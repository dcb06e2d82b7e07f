"""Checks on the Matrix key objects a device uploads: what the server relies on (owner,
device, identity keys, signatures) is checked; every other field passes through untouched,
as Matrix clients add fields of their own. Refusals are 400s naming what was wrong."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import canonicaljson
import orjson

from keyhold.core.errors import Problem
from keyhold.crypto.signed_json import decode_base64, ed25519_public_key, verify_signed_json
from keyhold.e2ee.ids import KEY_NAME

# One key object, as stored: a device's keys list a few algorithms and signatures.
MAX_OBJECT_BYTES = 8192
# Unclaimed one-time keys a device may hold per algorithm (vodozemac keeps at most 50).
MAX_ONE_TIME_KEYS = 100
CROSS_SIGNING_USAGES = ("master", "self_signing", "user_signing")


def bad_keys(detail: str) -> Problem:
    return Problem(400, "invalid-keys", "Invalid keys", detail)


def bad_signature(detail: str) -> Problem:
    return Problem(400, "invalid-signature", "Invalid signature", detail)


def stored_json(obj: Any, what: str) -> str:
    """The object as it is kept and handed out: JSON, ASCII (any character escaped), bounded.
    Everything in it, the unsigned parts too, must be JSON every reader can carry: whatever
    one device stores here, every contact's query returns."""
    _signatures_shape(obj, what)
    try:
        canonicaljson.encode_canonical_json(obj)
        orjson.dumps(obj)
    except (TypeError, ValueError, UnicodeError, RecursionError):
        raise bad_keys(f"{what} is not plain JSON (an unpaired surrogate, or a number beyond 64 bits?)") from None
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    if len(text) > MAX_OBJECT_BYTES:
        raise bad_keys(f"{what} is over {MAX_OBJECT_BYTES} bytes")
    return text


def _signatures_shape(obj: Any, what: str) -> None:
    """`signatures` is {user id: {key id: unpadded base64}}; `unsigned` an object."""
    if not isinstance(obj, Mapping):
        return
    if "unsigned" in obj and not isinstance(obj["unsigned"], Mapping):
        raise bad_keys(f"{what}.unsigned must be an object")
    signatures = obj.get("signatures", {})
    if not isinstance(signatures, Mapping) or not all(
        isinstance(by_user, Mapping)
        and all(isinstance(v, str) and SIGNATURE.fullmatch(v) for v in by_user.values())
        for by_user in signatures.values()
    ):
        raise bad_keys(f"{what}.signatures must be {{user id: {{key id: signature in unpadded base64}}}}")


# A 32-byte key and a 64-byte signature, in unpadded standard base64 (as Matrix writes them).
PUBLIC_KEY = re.compile(r"[A-Za-z0-9+/]{43}")
SIGNATURE = re.compile(r"[A-Za-z0-9+/]{86}")


def _public_key(value: Any, what: str) -> str:
    if not isinstance(value, str) or not PUBLIC_KEY.fullmatch(value):
        raise bad_keys(f"{what} must be a 32-byte key in unpadded base64")
    decode_base64(value)  # 43 characters of the alphabet always decode
    return value


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise bad_keys(f"{what} must be an object")
    return value


@dataclass(frozen=True)
class DeviceKeys:
    ed25519: str
    curve25519: str
    json: str


def device_keys(obj: Any, user_id: str, device_id: str) -> DeviceKeys:
    """The uploading device's own keys, self-signed with its Ed25519 key."""
    keys = _object(obj, "device_keys")
    if keys.get("user_id") != user_id:
        raise bad_keys(f"device_keys.user_id must be {user_id}, the signed-in member")
    if keys.get("device_id") != device_id:
        raise bad_keys(f"device_keys.device_id must be {device_id}, the device this token belongs to")
    algorithms = keys.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise bad_keys("device_keys.algorithms must be a list of strings")
    published = _object(keys.get("keys"), "device_keys.keys")
    ed25519 = _public_key(published.get(f"ed25519:{device_id}"), f"device_keys.keys.ed25519:{device_id}")
    curve25519 = _public_key(published.get(f"curve25519:{device_id}"), f"device_keys.keys.curve25519:{device_id}")
    if not verify_signed_json(keys, user_id, f"ed25519:{device_id}", ed25519):
        raise bad_signature("device_keys is not signed by its own ed25519 key")
    return DeviceKeys(ed25519, curve25519, stored_json(keys, "device_keys"))


def signed_keys(
    obj: Any, what: str, user_id: str, device_id: str, ed25519: str, fallback: bool
) -> list[tuple[str, str, str]]:
    """One-time or fallback keys as (algorithm, key id, stored JSON). A key object must be
    signed by the device (`signed_` algorithms); a bare string is an unsigned key."""
    named = _object(obj, what)
    out: list[tuple[str, str, str]] = []
    for name, value in named.items():
        match = KEY_NAME.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            raise bad_keys(f"{what} are named <algorithm>:<key id>; {name[:80]!r} is not")
        algorithm, key_id = match.groups()
        if isinstance(value, str):
            if algorithm.startswith("signed_"):
                raise bad_keys(f"{what}.{name} must be a signed key object")
            _public_key(value, f"{what}.{name}")
        else:
            key = _object(value, f"{what}.{name}")
            _public_key(key.get("key"), f"{what}.{name}.key")
            if (algorithm.startswith("signed_") or "signatures" in key) and not verify_signed_json(
                key, user_id, f"ed25519:{device_id}", ed25519
            ):
                raise bad_signature(f"{what}.{name} is not signed by the device's ed25519 key")
        out.append((algorithm, key_id, stored_json(value, f"{what}.{name}")))
    if fallback and len({algorithm for algorithm, _, _ in out}) != len(out):
        raise bad_keys(f"{what} hold one key per algorithm")
    return out


@dataclass(frozen=True)
class CrossSigningKey:
    usage: str
    public_key: str
    json: str
    body: Mapping[str, Any]


def cross_signing_key(obj: Any, user_id: str, usage: str) -> CrossSigningKey:
    what = f"{usage}_key"
    key = _object(obj, what)
    if key.get("user_id") != user_id:
        raise bad_keys(f"{what}.user_id must be {user_id}, the signed-in member")
    usages = key.get("usage")
    if not isinstance(usages, list) or usage not in usages:
        raise bad_keys(f"{what}.usage must list {usage!r}")
    published = _object(key.get("keys"), f"{what}.keys")
    if len(published) != 1:
        raise bad_keys(f"{what}.keys must hold exactly one key")
    ((name, value),) = published.items()
    public_key = _public_key(value, f"{what}.keys")
    if name != f"ed25519:{public_key}":
        raise bad_keys(f"{what}.keys must name its key ed25519:<the key itself>")
    ed25519_public_key(public_key)
    return CrossSigningKey(usage, public_key, stored_json(key, what), key)
