"""`keyhold chat`, the terminal client for members (on the SDK only)."""

from keyhold.clients.chat.command import chat
from keyhold.clients.chat.session import Chat
from keyhold.clients.chat.text import COMMANDS_HELP

__all__ = ["COMMANDS_HELP", "Chat", "chat"]
