"""Files in e2ee conversations, in Matrix's encrypted-attachment format (`EncryptedFile`, `v2`):
used by clients, which hold the keys (the server only stores the ciphertext).

The sender encrypts the file with a fresh AES-256 key in CTR mode (`cryptography`), uploads only
the ciphertext, and puts the key, the IV and the ciphertext's SHA-256 inside the Megolm-encrypted
message that refers to it. So the server keeps opaque bytes and their size; name, type and key
travel end to end. The message also carries the plaintext's SHA-256 (`keyhold.plaintext_sha256`):
the franking commitment covers it, so a report of the message commits to the file too (CTR is
not a committing cipher: another key could make the same ciphertext say something else).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keyhold.crypto.signed_json import decode_base64, encode_base64

PLAINTEXT_SHA256_FIELD = "keyhold.plaintext_sha256"


class AttachmentError(Exception):
    """An encrypted file that cannot be opened: a wrong hash, key or format."""


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    # CTR is its own inverse: the same call encrypts and decrypts.
    transform = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return transform.update(data) + transform.finalize()


def sha256_b64(data: bytes) -> str:
    return encode_base64(hashlib.sha256(data).digest())


def encrypt_attachment(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """The ciphertext to upload, and the `file` object (without `url`) for the message."""
    key = secrets.token_bytes(32)
    # Matrix: a random 64-bit nonce, then a 64-bit block counter starting at zero.
    iv = secrets.token_bytes(8) + bytes(8)
    ciphertext = _aes_ctr(key, iv, data)
    file = {
        "v": "v2",
        "key": {
            "kty": "oct",
            "key_ops": ["encrypt", "decrypt"],
            "alg": "A256CTR",
            "k": base64.urlsafe_b64encode(key).decode().rstrip("="),
            "ext": True,
        },
        "iv": encode_base64(iv),
        "hashes": {"sha256": sha256_b64(ciphertext)},
    }
    return ciphertext, file


def decrypt_attachment(
    ciphertext: bytes, file: Mapping[str, Any], plaintext_sha256: str | None = None
) -> bytes:
    """The file, once its ciphertext's SHA-256 is the one the message names (and, if given, the
    plaintext's too); AttachmentError otherwise."""
    try:
        if file.get("v") != "v2":
            raise AttachmentError("not a v2 encrypted file")
        jwk, hashes = file["key"], file["hashes"]
        if jwk.get("alg") != "A256CTR" or jwk.get("kty") != "oct":
            raise AttachmentError("not an AES-256-CTR key")
        k = str(jwk["k"])
        key = base64.urlsafe_b64decode(k + "=" * (-len(k) % 4))
        iv = decode_base64(str(file["iv"]))
        expected = str(hashes["sha256"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise AttachmentError("the message's file object is malformed") from exc
    if len(key) != 32 or len(iv) != 16:
        raise AttachmentError("the file's key or IV has the wrong length")
    if sha256_b64(ciphertext) != expected:
        raise AttachmentError("the downloaded file is not the one the message names (SHA-256 differs)")
    plaintext = _aes_ctr(key, iv, ciphertext)
    if plaintext_sha256 is not None and sha256_b64(plaintext) != plaintext_sha256:
        raise AttachmentError("the file does not decrypt to what its sender committed to")
    return plaintext
