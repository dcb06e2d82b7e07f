"""Request bodies. Unknown fields and wrong types are refused (strict models)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_ID = 2**53 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Username = Annotated[str, Field(min_length=1, max_length=64)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterBody(Body):
    username: Username
    password: Annotated[str, Field(max_length=1024)]
    birthdate: Annotated[str, Field(max_length=10)]
    region: Annotated[str, Field(max_length=16)]


class LoginBody(Body):
    username: Username
    password: Annotated[str, Field(max_length=1024)]


class ProfileBody(Body):
    display_name: Annotated[str, Field(max_length=64)]


class PasswordChangeBody(Body):
    current_password: Annotated[str, Field(max_length=1024)]
    new_password: Annotated[str, Field(max_length=1024)]


class DeleteAccountBody(Body):
    password: Annotated[str, Field(max_length=1024)]


class StartConversationBody(Body):
    members: Annotated[list[Username], Field(min_length=1, max_length=64)]
    encryption: Literal["standard", "e2ee"] = "standard"
    title: Annotated[str, Field(max_length=100)] = ""
    kind: Literal["direct", "group"] | None = None


class AddMembersBody(Body):
    members: Annotated[list[Username], Field(min_length=1, max_length=64)]


class SendBody(Body):
    text: Annotated[str, Field(max_length=100_000)] = ""
    idempotency_key: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    attachment_id: Annotated[str, Field(min_length=1, max_length=40)] | None = None


class ReceiptBody(Body):
    type: Literal["delivered", "read"]
    message_id: Id


class StaffLoginBody(Body):
    username: Username
    password: Annotated[str, Field(max_length=1024)]
    totp: Annotated[str, Field(min_length=6, max_length=8)]


class ReportBody(Body):
    conversation_id: Id
    message_ids: Annotated[list[Id], Field(min_length=1, max_length=10)]
    category: Annotated[str, Field(max_length=40)]
    comment: Annotated[str, Field(max_length=1000)] = ""


class AppealBody(Body):
    statement: Annotated[str, Field(min_length=1, max_length=2000)]


class DecisionBody(Body):
    action: Annotated[str, Field(max_length=20)]
    note: Annotated[str, Field(max_length=1000)] = ""
    suspend_hours: Annotated[int, Field(ge=1, le=8760)] | None = None
    hotline_reference: Annotated[str, Field(min_length=1, max_length=100)] | None = None


class AppealDecisionBody(Body):
    uphold: bool
    note: Annotated[str, Field(max_length=1000)] = ""


class ReadBody(Body):
    message_ids: Annotated[list[Id], Field(min_length=1, max_length=200)]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


Text200 = Annotated[str, Field(min_length=1, max_length=200)]


class LegalCaseBody(Body):
    agency: Text200
    officer: Text200
    contact: Text200
    country: Annotated[str, Field(min_length=2, max_length=2)]
    process: Literal["subpoena", "court_order", "search_warrant", "emergency", "preservation", "mlat"]
    targets: Annotated[list[Username], Field(min_length=1, max_length=100)]
    date_from: Annotated[str, Field(min_length=10, max_length=10)]
    date_to: Annotated[str, Field(min_length=10, max_length=10)]
    categories: Annotated[
        list[Literal["subscriber_info", "connection_logs", "conversation_metadata", "message_content"]],
        Field(max_length=4),
    ] = []
    justification: Annotated[str, Field(max_length=4000)] = ""
    nondisclosure_until: Annotated[str, Field(min_length=10, max_length=10)] | None = None
    document_name: Annotated[str, Field(min_length=1, max_length=200)] = "request.pdf"
    # The legal process document, base64 (it is stored sealed; only its SHA-256 is in the clear).
    document_base64: Annotated[str, Field(min_length=4, max_length=28_000_000)]


class RefuseBody(Body):
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
