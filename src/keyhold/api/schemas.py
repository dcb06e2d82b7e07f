"""Request bodies and the text types of every string a client submits.

Unknown fields and wrong types are refused (strict models). Every string — body fields, path
and query parameters, WebSocket frames — is one of the two text types below, so that control
characters are refused here, at the edge, the same way whichever database is behind: C0 and C1
controls and DEL in `Text`; `MultilineText` (message text, comments, notes) keeps newline and
tab. PostgreSQL refuses NUL in text, SQLite stores it; neither ever sees one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from keyhold.core.text_rules import CONTROL_CHARACTERS

MAX_ID = 2**53 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]

# Checked by pydantic's core (no Python call per field): C0 and C1 controls and DEL. Lone
# surrogates (`"\\ud800"` is valid JSON, but no UTF-8 text, and no database stores them) fail
# its string check before any pattern.
SINGLE_LINE = rf"^[^{CONTROL_CHARACTERS}]*$"
MULTILINE = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$"
# The words of the refusal; never the value, which may be a password.
CONTROL_REFUSED = "must not contain control characters or unpaired surrogates"

Text = Annotated[str, StringConstraints(pattern=SINGLE_LINE)]
MultilineText = Annotated[str, StringConstraints(pattern=MULTILINE)]
Username = Annotated[Text, Field(min_length=1, max_length=64)]


def refusal(error: Mapping[str, Any]) -> str:
    """What to tell a client about one validation error: pydantic's words, except for the
    text types, whose pattern means nothing to a reader."""
    kind = error.get("type")
    if kind == "string_unicode":
        return CONTROL_REFUSED
    if kind == "string_pattern_mismatch":
        pattern = (error.get("ctx") or {}).get("pattern")
        if pattern == SINGLE_LINE:
            return CONTROL_REFUSED
        if pattern == MULTILINE:
            return CONTROL_REFUSED + " (newline and tab are allowed)"
    return str(error.get("msg", "invalid"))


class Body(BaseModel):
    """A strict model: a request body or a WebSocket frame. That every string in it (and in
    every parameter) is a text type is checked once, by `tests/test_text_types.py`, over the
    validators themselves, rather than by scanning every value of every request again."""

    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterBody(Body):
    username: Username
    password: Annotated[Text, Field(max_length=1024)]
    birthdate: Annotated[Text, Field(max_length=10)]
    region: Annotated[Text, Field(max_length=16)]


# A device id: what the client chose at sign-in (Matrix clients use letters and digits);
# printable and short, since it names the device in keys and to-device messages.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_.=-]{1,64}$"
DeviceId = Annotated[Text, StringConstraints(pattern=DEVICE_ID_PATTERN)]
DeviceName = Annotated[Text, Field(min_length=1, max_length=100)]


class LoginBody(Body):
    username: Username
    password: Annotated[Text, Field(max_length=1024)]
    device_id: DeviceId | None = None
    device_name: DeviceName | None = None


class DeviceRenameBody(Body):
    display_name: DeviceName


class DeviceRemoveBody(Body):
    password: Annotated[Text, Field(max_length=1024)]


class ProfileBody(Body):
    display_name: Annotated[Text, Field(max_length=64)]


class PasswordChangeBody(Body):
    current_password: Annotated[Text, Field(max_length=1024)]
    new_password: Annotated[Text, Field(max_length=1024)]


class DeleteAccountBody(Body):
    password: Annotated[Text, Field(max_length=1024)]


class StartConversationBody(Body):
    members: Annotated[list[Username], Field(min_length=1, max_length=64)]
    encryption: Literal["standard", "e2ee"] = "standard"
    title: Annotated[Text, Field(max_length=100)] = ""
    kind: Literal["direct", "group"] | None = None


class RenameBody(Body):
    title: Annotated[Text, Field(min_length=1, max_length=100)]


class TimerBody(Body):
    # Seconds after which each message sent from now on disappears; null turns it off.
    seconds: int | None


class RoleBody(Body):
    role: Literal["admin", "member"]


class AddMembersBody(Body):
    members: Annotated[list[Username], Field(min_length=1, max_length=64)]


IdempotencyKey = Annotated[Text, Field(min_length=1, max_length=64)]
AttachmentId = Annotated[Text, Field(min_length=1, max_length=40)]
MessageText = Annotated[MultilineText, Field(max_length=100_000)]


# In an e2ee conversation: Matrix `m.room.encrypted` content, checked by `core.encrypted`.
EncryptedContent = dict[Text, Any]


# With encrypted content: {"version": 1, "commitment": <base64>} (docs/e2ee.md, franking).
FrankingBody = dict[Text, Any]


class SendBody(Body):
    text: MessageText = ""
    encrypted: EncryptedContent | None = None
    franking: FrankingBody | None = None
    idempotency_key: IdempotencyKey | None = None
    attachment_id: AttachmentId | None = None


class ReceiptBody(Body):
    type: Literal["delivered", "read"]
    message_id: Id


class StaffLoginBody(Body):
    username: Username
    password: Annotated[Text, Field(max_length=1024)]
    totp: Annotated[Text, Field(min_length=6, max_length=8)]


class RevealedBody(Body):
    """A franked e2ee message revealed by its reporter: the content their device decrypted
    (with `keyhold.franking_key` in it or given apart), the franking key and the service's tag."""

    message_id: Id
    content: dict[Text, Any]
    franking_key: Annotated[Text, Field(max_length=64)]
    tag: Annotated[Text, Field(max_length=64)]


class ReportBody(Body):
    conversation_id: Id
    message_ids: Annotated[list[Id], Field(min_length=1, max_length=10)]
    category: Annotated[Text, Field(max_length=40)]
    comment: Annotated[MultilineText, Field(max_length=1000)] = ""
    franking: RevealedBody | None = None


class AppealBody(Body):
    statement: Annotated[MultilineText, Field(min_length=1, max_length=2000)]


class DecisionBody(Body):
    action: Annotated[Text, Field(max_length=20)]
    note: Annotated[MultilineText, Field(max_length=1000)] = ""
    suspend_hours: Annotated[int, Field(ge=1, le=8760)] | None = None
    hotline_reference: Annotated[Text, Field(min_length=1, max_length=100)] | None = None


class AppealDecisionBody(Body):
    uphold: bool
    note: Annotated[MultilineText, Field(max_length=1000)] = ""


class ReadBody(Body):
    message_ids: Annotated[list[Id], Field(min_length=1, max_length=200)]
    reason: Annotated[Text, Field(min_length=1, max_length=500)]


Text200 = Annotated[Text, Field(min_length=1, max_length=200)]


class LegalCaseBody(Body):
    agency: Text200
    officer: Text200
    contact: Text200
    country: Annotated[Text, Field(min_length=2, max_length=2)]
    process: Literal["subpoena", "court_order", "search_warrant", "emergency", "preservation", "mlat"]
    targets: Annotated[list[Username], Field(min_length=1, max_length=100)]
    date_from: Annotated[Text, Field(min_length=10, max_length=10)]
    date_to: Annotated[Text, Field(min_length=10, max_length=10)]
    categories: Annotated[
        list[Literal["subscriber_info", "connection_logs", "conversation_metadata", "message_content"]],
        Field(max_length=4),
    ] = []
    justification: Annotated[MultilineText, Field(max_length=4000)] = ""
    nondisclosure_until: Annotated[Text, Field(min_length=10, max_length=10)] | None = None
    document_name: Annotated[Text, Field(min_length=1, max_length=200)] = "request.pdf"
    # The legal process document, base64 (it is stored sealed; only its SHA-256 is in the clear).
    document_base64: Annotated[Text, Field(min_length=4, max_length=28_000_000)]


class RefuseBody(Body):
    reason: Annotated[MultilineText, Field(min_length=1, max_length=2000)]
