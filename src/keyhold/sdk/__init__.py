"""Python SDK for Keyhold's public API."""

from keyhold.sdk.client import Attachment, Client, Conversation, Event, KeyholdError, Message, Stream
from keyhold.sdk.staff import LegalRequest, StaffClient
from keyhold.sdk.verify import VerificationError, my_access_events, verify_access_event, verify_tree_head

__all__ = [
    "Attachment",
    "Client",
    "Conversation",
    "Event",
    "KeyholdError",
    "LegalRequest",
    "Message",
    "StaffClient",
    "Stream",
    "VerificationError",
    "my_access_events",
    "verify_access_event",
    "verify_tree_head",
]
