"""Request bodies of the end-to-end encryption endpoints: the Matrix client-server
specification's shapes. Unlike Keyhold's own bodies, fields the server does not use (a
claim's `timeout`, an `auth` session id) are ignored, as a Matrix server ignores them; the
key objects inside are checked by `keyhold.e2ee.shapes` and otherwise kept as sent."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

from keyhold.api.schemas import DEVICE_ID_PATTERN, Text

UserIdText = Annotated[Text, StringConstraints(min_length=1, max_length=128)]
DeviceIdText = Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN)]
# A device id, or "*" for every device of the user (sendToDevice).
DeviceOrAll = Annotated[str, StringConstraints(pattern=rf"^(\*|{DEVICE_ID_PATTERN[1:-1]})$")]
AlgorithmText = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.]{1,48}$")]
KeyObject = dict[Text, Any]


class MatrixBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class KeysUploadBody(MatrixBody):
    device_keys: KeyObject | None = None
    one_time_keys: KeyObject | None = None
    fallback_keys: KeyObject | None = None


class KeysQueryBody(MatrixBody):
    # An empty list asks for every device of the user.
    device_keys: dict[UserIdText, Annotated[list[DeviceIdText], Field(max_length=1000)]]


class KeysClaimBody(MatrixBody):
    one_time_keys: dict[UserIdText, dict[DeviceIdText, AlgorithmText]]


class PasswordAuth(MatrixBody):
    """Matrix's user-interactive authentication, password stage only."""

    type: Text | None = None
    password: Annotated[Text, StringConstraints(max_length=1024)] | None = None


class DeviceSigningUploadBody(MatrixBody):
    master_key: KeyObject | None = None
    self_signing_key: KeyObject | None = None
    user_signing_key: KeyObject | None = None
    auth: PasswordAuth | None = None


class SignaturesUploadBody(RootModel[dict[UserIdText, dict[Text, Any]]]):
    """`{user id: {device id or master public key: signed object}}`."""


class SendToDeviceBody(MatrixBody):
    # {user id: {device id or "*": content}}
    messages: dict[UserIdText, dict[DeviceOrAll, dict[Text, Any]]]


EVENT_TYPE_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
TXN_ID_PATTERN = r"^[A-Za-z0-9_.~=-]{1,128}$"
