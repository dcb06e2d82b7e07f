"""Python SDK for Keyhold's public API."""

from keyhold.sdk.client import Attachment, Client, Conversation, Event, Message, Stream
from keyhold.sdk.e2ee.safety_numbers import SafetyNumber
from keyhold.sdk.e2ee.sas import SasCodes, SasVerification, VerificationCancelled, VerificationUnavailable
from keyhold.sdk.e2ee.transparency import KeyTransparencyError
from keyhold.sdk.e2ee.trust import IdentityChanged
from keyhold.sdk.errors import KeyholdConnectionError, KeyholdError, KeyholdTimeout
from keyhold.sdk.staff import LegalRequest, StaffClient
from keyhold.sdk.verify import VerificationError, verify_access_event, verify_access_events, verify_tree_head

__all__ = [
    "Attachment",
    "Client",
    "Conversation",
    "Event",
    "IdentityChanged",
    "KeyTransparencyError",
    "KeyholdConnectionError",
    "KeyholdError",
    "KeyholdTimeout",
    "LegalRequest",
    "Message",
    "SafetyNumber",
    "SasCodes",
    "SasVerification",
    "StaffClient",
    "Stream",
    "VerificationCancelled",
    "VerificationError",
    "VerificationUnavailable",
    "verify_access_event",
    "verify_access_events",
    "verify_tree_head",
]
