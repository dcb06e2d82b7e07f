"""A member's cross-signing keys (master, self-signing, user-signing): Ed25519 keys from
`cryptography`, as vodozemac's bindings have no standalone signing key; objects in Matrix's
shapes, signed the Matrix way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyhold.crypto.signed_json import decode_base64, encode_base64, sign_json


def _public(key: Ed25519PrivateKey) -> str:
    return encode_base64(
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


@dataclass
class CrossSigningKeys:
    user_id: str
    master: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    self_signing: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    user_signing: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def public(self, usage: str) -> str:
        return _public(self._key(usage))

    def _key(self, usage: str) -> Ed25519PrivateKey:
        return {"master": self.master, "self_signing": self.self_signing, "user_signing": self.user_signing}[
            usage
        ]

    def key_object(self, usage: str) -> dict[str, Any]:
        """The public key object of `usage`; the subkeys signed by the master key."""
        public = self.public(usage)
        obj: dict[str, Any] = {
            "user_id": self.user_id,
            "usage": [usage],
            "keys": {f"ed25519:{public}": public},
        }
        return obj if usage == "master" else self.sign_with("master", obj)

    def upload_body(self) -> dict[str, Any]:
        """The body of `keys/device_signing/upload`."""
        return {
            f"{usage}_key": self.key_object(usage) for usage in ("master", "self_signing", "user_signing")
        }

    def sign_with(self, usage: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        return sign_json(obj, self.user_id, f"ed25519:{self.public(usage)}", self._key(usage))

    def export_private(self) -> dict[str, str]:
        """The three private keys (raw, unpadded base64), for the device's sealed state file."""
        return {
            usage: encode_base64(
                self._key(usage).private_bytes(
                    serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
                )
            )
            for usage in USAGES
        }

    @classmethod
    def from_private(cls, user_id: str, saved: Mapping[str, Any]) -> CrossSigningKeys:
        keys = {
            usage: Ed25519PrivateKey.from_private_bytes(decode_base64(str(saved[usage]))) for usage in USAGES
        }
        return cls(user_id, keys["master"], keys["self_signing"], keys["user_signing"])


USAGES = ("master", "self_signing", "user_signing")
