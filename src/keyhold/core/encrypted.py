"""Messages of `e2ee` conversations as the service handles them: opaque Megolm ciphertext in
Matrix's `m.room.encrypted` content, checked for shape and size, stored as sent, and handed
back with an `event` in the Matrix shape a client's crypto core decrypts
(`OlmMachine.decryptRoomEvent` takes it as it is). The service never holds a key that opens it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from keyhold.clock import iso
from keyhold.core.errors import invalid
from keyhold.core.matrix_ids import event_id, room_id, user_id
from keyhold.core.text_rules import CONTROL_CHARACTERS
from keyhold.crypto.franking import VERSION as FRANKING_VERSION
from keyhold.crypto.signed_json import decode_base64, encode_base64
from keyhold.store.rows import AnyRow

MEGOLM = "m.megolm.v1.aes-sha2"
# A 4,000-character message is ~22 KB of Megolm ciphertext in base64: room to spare, and
# below the 64 KiB a request body may have.
MAX_ENCRYPTED_BYTES = 48 * 1024
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]+={0,2}\Z")
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")
# The fields the service relies on: base64, so they hold no control character either.
_BASE64_FIELDS = ("ciphertext", "session_id")


def encode_encrypted(content: Mapping[str, Any]) -> bytes:
    """The content as stored, after the checks the service relies on: Megolm, a ciphertext and
    a session id in base64, and no control character anywhere. Other fields (`sender_key`,
    `device_id`, a client's own) pass as sent."""
    if content.get("algorithm") != MEGOLM:
        raise invalid(f"encrypted.algorithm must be {MEGOLM!r}")
    for name in _BASE64_FIELDS:
        value = content.get(name)
        if not isinstance(value, str) or not value:
            raise invalid(f"encrypted.{name} must be a non-empty string")
        # Both are base64 in every Megolm client: anything else there is not ciphertext.
        if not _BASE64_TEXT.match(value):
            raise invalid(f"encrypted.{name} must be base64")
    _refuse_control_characters(content)
    try:
        encoded = orjson.dumps(content)
    except orjson.JSONEncodeError:
        raise invalid("encrypted is not plain JSON (an unpaired surrogate, or a number beyond 64 bits?)") from None
    if len(encoded) > MAX_ENCRYPTED_BYTES:
        raise invalid(f"encrypted is larger than {MAX_ENCRYPTED_BYTES} bytes")
    return encoded


def _refuse_control_characters(content: Mapping[str, Any]) -> None:
    """The other fields pass through as sent, but like every string a client submits, none
    may hold a control character (the edge checked the keys already). A loop, not recursion:
    a field may nest as deep as the JSON parser allows."""
    for field, top in content.items():
        if field in _BASE64_FIELDS:  # checked as base64 already: the bulk of the content
            continue
        pending = [top]
        while pending:
            value = pending.pop()
            if isinstance(value, str):
                if _CONTROL.search(value):
                    raise invalid(f"encrypted.{field} must not contain control characters")
            elif isinstance(value, Mapping):
                pending.extend(value.values())
            elif isinstance(value, list):
                pending.extend(value)


def check_franking(franking: Mapping[str, Any]) -> bytes:
    """The commitment of a send's `franking` (version 1), checked for shape."""
    version = franking.get("version")
    if type(version) is not int or version != FRANKING_VERSION:
        raise invalid(f"franking.version must be {FRANKING_VERSION}")
    value = franking.get("commitment")
    try:
        commitment = decode_base64(value) if isinstance(value, str) else b""
    except ValueError:
        commitment = b""
    if len(commitment) != 32:
        raise invalid("franking.commitment must be 32 bytes in unpadded base64")
    if set(franking) - {"version", "commitment"}:
        raise invalid("franking holds only version and commitment")
    return commitment


def franking_record(key_id: str, commitment: bytes, tag: bytes) -> dict[str, Any]:
    """A franked message's franking as stored (JSON) and delivered."""
    return {"version": FRANKING_VERSION, "commitment": encode_base64(commitment), "key_id": key_id, "tag": encode_base64(tag)}


def render_encrypted(
    message_id: int,
    conversation_id: int,
    sender: str,
    sent_ms: int,
    content: Mapping[str, Any] | None,
    server_name: str,
    attachment: dict[str, Any] | None = None,
    franking: Mapping[str, Any] | None = None,
    sender_device: str | None = None,
    expires_ms: int | None = None,
) -> dict[str, Any]:
    """An e2ee message as members get it; without content (deleted) it is a tombstone. A
    franked one carries its commitment and the service's tag (what a report hands back)."""
    return {
        "id": message_id,
        "conversation_id": conversation_id,
        "sender": sender,
        "kind": "e2ee",
        "text": None,
        "event": None
        if content is None
        else {
            "type": "m.room.encrypted",
            "event_id": event_id(message_id),
            "sender": user_id(sender, server_name),
            "origin_server_ts": sent_ms,
            "room_id": room_id(conversation_id, server_name),
            "content": content,
        },
        "attachment": None if content is None else attachment,
        "sent_at": iso(sent_ms),
        "expires_at": None if expires_ms is None else iso(expires_ms),
        "deleted": content is None,
        "franked": franking is not None,
        "franking": None if franking is None or content is None else {**franking, "sender_device": sender_device},
    }


def render_encrypted_row(row: AnyRow, server_name: str, attachment: dict[str, Any] | None = None) -> dict[str, Any]:
    content = None if row.deleted_ms is not None or row.body is None else orjson.loads(row.body)
    franking = None if row.franking is None else orjson.loads(row.franking)
    return render_encrypted(
        row.id, row.conversation_id, row.sender, row.sent_ms, content, server_name, attachment, franking,
        row.sender_device, row.expires_ms,
    )  # fmt: skip


def e2ee_attachment(attachment_id: str, size: int) -> dict[str, Any]:
    """An e2ee attachment as the service knows it: opaque bytes of a size. Its name and type
    are inside the encrypted message that refers to it."""
    return {"id": attachment_id, "filename": None, "content_type": "application/octet-stream", "size": size}
