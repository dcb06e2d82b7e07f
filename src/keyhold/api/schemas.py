"""Request bodies and the text types of every string a client submits.

Unknown fields and wrong types are refused (strict models). Every string — body fields, path
and query parameters, WebSocket frames — is one of the two text types below, so that control
characters are refused here, at the edge, the same way whichever database is behind: C0 and C1
controls and DEL in `Text`; `MultilineText` (message text, comments, notes) keeps newline and
tab. PostgreSQL refuses NUL in text, SQLite stores it; neither ever sees one.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

MAX_ID = 2**53 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]

# Also lone surrogates (`"\\ud800"` is valid JSON, but no UTF-8 text): no database stores them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_BUT_NEWLINE_AND_TAB = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# The words of the refusal; never the value, which may be a password.
CONTROL_REFUSED = "must not contain control characters or unpaired surrogates"


def _single_line(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError(CONTROL_REFUSED)
    return value


def _multiline(value: str) -> str:
    if _CONTROL_BUT_NEWLINE_AND_TAB.search(value):
        raise ValueError(CONTROL_REFUSED + " (newline and tab are allowed)")
    return value


Text = Annotated[str, AfterValidator(_single_line)]
MultilineText = Annotated[str, AfterValidator(_multiline)]
Username = Annotated[Text, Field(min_length=1, max_length=64)]


def _no_stray_controls(value: Any) -> None:
    """The backstop: whatever a model holds, no string in it carries a control character
    that even `MultilineText` refuses."""
    if isinstance(value, str):
        _multiline(value)
    elif isinstance(value, list | tuple):
        for item in value:
            _no_stray_controls(item)


class Body(BaseModel):
    """A strict model (request body or WebSocket frame) whose strings are checked even where a
    field forgot its text type."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _backstop(cls, value: Any) -> Any:
        _no_stray_controls(value)
        return value



class RegisterBody(Body):
    username: Username
    password: Annotated[Text, Field(max_length=1024)]
    birthdate: Annotated[Text, Field(max_length=10)]
    region: Annotated[Text, Field(max_length=16)]


class LoginBody(Body):
    username: Username
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


class RoleBody(Body):
    role: Literal["admin", "member"]


class AddMembersBody(Body):
    members: Annotated[list[Username], Field(min_length=1, max_length=64)]


IdempotencyKey = Annotated[Text, Field(min_length=1, max_length=64)]
AttachmentId = Annotated[Text, Field(min_length=1, max_length=40)]
MessageText = Annotated[MultilineText, Field(max_length=100_000)]


class SendBody(Body):
    text: MessageText = ""
    idempotency_key: IdempotencyKey | None = None
    attachment_id: AttachmentId | None = None


class ReceiptBody(Body):
    type: Literal["delivered", "read"]
    message_id: Id


class StaffLoginBody(Body):
    username: Username
    password: Annotated[Text, Field(max_length=1024)]
    totp: Annotated[Text, Field(min_length=6, max_length=8)]


class ReportBody(Body):
    conversation_id: Id
    message_ids: Annotated[list[Id], Field(min_length=1, max_length=10)]
    category: Annotated[Text, Field(max_length=40)]
    comment: Annotated[MultilineText, Field(max_length=1000)] = ""


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
