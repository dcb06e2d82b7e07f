"""Sealing message bodies and attachments under a conversation data key (DEK).

The API speaks in conversations, messages and attachments, not nonces and tags: every seal
binds its ciphertext to where it belongs (conversation, item id, sender, epoch), so a sealed
body copied into another row, conversation or epoch fails to open.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DEK_BYTES = 32
_NONCE_BYTES = 12
_FORMAT = b"\x01"


class SealError(Exception):
    """A sealed item did not authenticate: wrong key, wrong place, or tampered bytes."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def wrap_context(conversation_id: int, epoch: int) -> bytes:
    """What a wrapped DEK is bound to (passed to the KeyProvider)."""
    return struct.pack(">QI", conversation_id, epoch)


def _message_aad(conversation_id: int, message_id: int, sender_id: int, epoch: int) -> bytes:
    return b"keyhold/message/v1" + struct.pack(">QQQI", conversation_id, message_id, sender_id, epoch)


def _attachment_aad(
    conversation_id: int, attachment_id: str, uploader_id: int, epoch: int, part: bytes
) -> bytes:
    return (
        b"keyhold/attachment/v1"
        + struct.pack(">QQI", conversation_id, uploader_id, epoch)
        + attachment_id.encode()
        + b"|"
        + part
    )


class ConversationKey:
    """One epoch's DEK of one conversation, ready to seal and open."""

    __slots__ = ("_aead", "conversation_id", "epoch")

    def __init__(self, conversation_id: int, epoch: int, dek: bytes) -> None:
        self.conversation_id = conversation_id
        self.epoch = epoch
        self._aead = AESGCM(dek)

    def _seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _FORMAT:
            raise SealError("sealed item is malformed")
        try:
            return self._aead.decrypt(sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :], aad)
        except InvalidTag as exc:
            raise SealError("sealed item failed to authenticate") from exc

    def seal_message(self, message_id: int, sender_id: int, body: bytes) -> bytes:
        return self._seal(body, _message_aad(self.conversation_id, message_id, sender_id, self.epoch))

    def open_message(self, message_id: int, sender_id: int, sealed: bytes) -> bytes:
        return self._open(sealed, _message_aad(self.conversation_id, message_id, sender_id, self.epoch))

    def seal_attachment(self, attachment_id: str, uploader_id: int, part: bytes, data: bytes) -> bytes:
        """`part` names what is sealed (b"data" or b"meta") so the two cannot be swapped."""
        aad = _attachment_aad(self.conversation_id, attachment_id, uploader_id, self.epoch, part)
        return self._seal(data, aad)

    def open_attachment(self, attachment_id: str, uploader_id: int, part: bytes, sealed: bytes) -> bytes:
        aad = _attachment_aad(self.conversation_id, attachment_id, uploader_id, self.epoch, part)
        return self._open(sealed, aad)


def _document_aad(case_id: int, part: bytes) -> bytes:
    return b"keyhold/legal-document/v1" + struct.pack(">Q", case_id) + b"|" + part


def seal_document(dek: bytes, case_id: int, part: bytes, data: bytes) -> bytes:
    """Seal a legal document (or its metadata) under its own DEK, bound to its case."""
    nonce = os.urandom(_NONCE_BYTES)
    return _FORMAT + nonce + AESGCM(dek).encrypt(nonce, data, _document_aad(case_id, part))


def open_document(dek: bytes, case_id: int, part: bytes, sealed: bytes) -> bytes:
    try:
        return AESGCM(dek).decrypt(
            sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :], _document_aad(case_id, part)
        )
    except InvalidTag as exc:
        raise SealError("legal document failed to authenticate") from exc
