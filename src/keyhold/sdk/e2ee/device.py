"""One device's Olm account and the signed key objects it publishes, in Matrix's shapes
(`device_keys`, signed one-time keys, a fallback key)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import vodozemac

from keyhold.crypto.signed_json import signing_bytes, with_signature

OLM_ALGORITHM = "m.olm.v1.curve25519-aes-sha2"
MEGOLM_ALGORITHM = "m.megolm.v1.aes-sha2"
ONE_TIME_KEY_ALGORITHM = "signed_curve25519"


class OlmDevice:
    def __init__(self, user_id: str, device_id: str, account: vodozemac.Account | None = None) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.account = account or vodozemac.Account()

    @property
    def ed25519(self) -> str:
        return str(self.account.ed25519_key.to_base64())

    @property
    def curve25519(self) -> str:
        return str(self.account.curve25519_key.to_base64())

    def sign(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `obj` with this device's signature added."""
        signature = str(self.account.sign(signing_bytes(obj)).to_base64())
        return with_signature(obj, self.user_id, f"ed25519:{self.device_id}", signature)

    def device_keys(self) -> dict[str, Any]:
        return self.sign(
            {
                "user_id": self.user_id,
                "device_id": self.device_id,
                "algorithms": [OLM_ALGORITHM, MEGOLM_ALGORITHM],
                "keys": {f"curve25519:{self.device_id}": self.curve25519, f"ed25519:{self.device_id}": self.ed25519},
            }
        )

    def new_one_time_keys(self, count: int) -> dict[str, Any]:
        """`count` fresh one-time keys, signed, as `keys/upload` takes them (marked published)."""
        self.account.generate_one_time_keys(count)
        keys = {
            f"{ONE_TIME_KEY_ALGORITHM}:{key_id}": self.sign({"key": key.to_base64()})
            for key_id, key in self.account.one_time_keys.items()
        }
        self.account.mark_keys_as_published()
        return keys

    def new_fallback_key(self) -> dict[str, Any]:
        account: Any = self.account  # the bindings' type stubs lack the fallback key methods
        account.generate_fallback_key()
        ((key_id, key),) = account.fallback_key.items()
        keys = {f"{ONE_TIME_KEY_ALGORITHM}:{key_id}": self.sign({"key": key.to_base64(), "fallback": True})}
        self.account.mark_keys_as_published()
        return keys
