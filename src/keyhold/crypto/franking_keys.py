"""The service's franking keys: HMAC-SHA256 keys that bind a franking commitment to the
message it came with (sender, device, conversation, message id, time), in a file of the data
dir (0600). The newest key tags new messages; older ones stay, by id, to check the tags of
messages sent under them. `rotate` adds a new key."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from keyhold.crypto.franking import length_prefixed


class FrankingKeys:
    def __init__(self, path: Path, keys: dict[str, bytes], current: str) -> None:
        self._path = path
        self._keys = keys
        self.current = current

    @classmethod
    def open(cls, path: Path) -> FrankingKeys:
        """The keys in `path`, made (one key) if the file does not exist yet."""
        if not path.exists():
            keys = cls(path, {}, "")
            keys.rotate()
            return keys
        data = json.loads(path.read_text())
        return cls(path, {kid: bytes.fromhex(key) for kid, key in data["keys"].items()}, data["current"])

    def rotate(self) -> str:
        """Add a new key and tag new messages with it; returns its id."""
        key_id = f"fk{len(self._keys) + 1}"
        self._keys[key_id] = secrets.token_bytes(32)
        self.current = key_id
        body = json.dumps({"current": key_id, "keys": {kid: key.hex() for kid, key in self._keys.items()}})
        temporary = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self._path)
        return key_id

    def _mac(self, key_id: str, commitment: bytes, sender: str, device: str, room: str, message_id: int, sent_ms: int) -> bytes:
        message = length_prefixed(
            commitment, sender.encode(), device.encode(), room.encode(), str(message_id).encode(), str(sent_ms).encode()
        )
        return hmac.new(self._keys[key_id], message, hashlib.sha256).digest()

    def tag(self, commitment: bytes, sender: str, device: str, room: str, message_id: int, sent_ms: int) -> tuple[str, bytes]:
        """(key id, tag) binding the commitment to this message."""
        return self.current, self._mac(self.current, commitment, sender, device, room, message_id, sent_ms)

    def verify(
        self, key_id: str, tag: bytes, commitment: bytes, sender: str, device: str, room: str, message_id: int, sent_ms: int
    ) -> bool:
        if key_id not in self._keys:
            return False
        return hmac.compare_digest(tag, self._mac(key_id, commitment, sender, device, room, message_id, sent_ms))
