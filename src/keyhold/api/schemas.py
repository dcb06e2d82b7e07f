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
