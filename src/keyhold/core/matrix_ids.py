"""The identifiers end-to-end encryption speaks, in Matrix's forms: a member is
`@<username>:<server_name>`, a conversation `!<id>:<server_name>`, a message `$<id>`."""

from __future__ import annotations


def user_id(username: str, server_name: str) -> str:
    return f"@{username}:{server_name}"


def room_id(conversation_id: int, server_name: str) -> str:
    return f"!{conversation_id}:{server_name}"


def event_id(message_id: int) -> str:
    return f"${message_id}"
