"""Python SDK for Keyhold's public API."""

from keyhold.sdk.client import Attachment, Client, Conversation, Event, Message, Stream
from keyhold.sdk.errors import KeyholdConnectionError, KeyholdError, KeyholdTimeout
from keyhold.sdk.staff import LegalRequest, StaffClient
from keyhold.sdk.verify import VerificationError, verify_access_event, verify_access_events, verify_tree_head

__all__ = [
    "Attachment",
    "Client",
    "Conversation",
    "Event",
    "KeyholdConnectionError",
    "KeyholdError",
    "KeyholdTimeout",
    "LegalRequest",
    "Message",
    "StaffClient",
    "Stream",
    "VerificationError",
    "verify_access_event",
    "verify_access_events",
    "verify_tree_head",
]
