"""Python SDK for Keyhold's public API."""

from keyhold.sdk.client import Attachment, Client, Conversation, Event, KeyholdError, Message, Stream

__all__ = ["Attachment", "Client", "Conversation", "Event", "KeyholdError", "Message", "Stream"]
