"""What live events print: new messages, deletions, receipts, group changes, moderation
outcomes and staff access to the member's data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from keyhold.clients.chat.e2ee_commands import timer_text, unreadable
from keyhold.clients.chat.text import snippet
from keyhold.sdk import Event

if TYPE_CHECKING:
    from keyhold.clients.chat.session import Chat


async def on_event(chat: Chat, event: Event) -> None:
    handler = HANDLERS.get(event.type)
    if handler is not None:
        await handler(chat, event)


def _is_open(chat: Chat, event: Event) -> bool:
    return chat.open is not None and event.data.get("conversation_id") == chat.open.id


async def _on_message(chat: Chat, event: Event) -> None:
    msg = event.message
    if msg is None or (chat.view is not None and msg.id in chat.view.numbers):
        return
    if _is_open(chat, event):
        chat.screen.live(*chat.render(msg))
        if msg.sender != chat.me:
            await chat.client.mark(msg.conversation_id, msg.id, "read")  # shown is read
    elif msg.sender != chat.me:
        conv = await chat.conversation(msg.conversation_id)
        where = f" in {chat.label(conv)}" if conv is not None and conv.kind == "group" else ""
        if msg.deleted:
            text = "(message deleted)"
        elif msg.undecryptable is not None:
            text = unreadable(msg)
        else:
            text = msg.text or "(attachment)"
        chat.notice(
            (f"{msg.sender}{where}: ", "bold"),
            snippet(text),
            (f"   ({chat.open_hint(conv, msg.sender)})", "dim"),
        )


async def _on_deleted(chat: Chat, event: Event) -> None:
    if _is_open(chat, event) and chat.view is not None:
        number = chat.view.numbers.get(int(event.data.get("message_id") or 0))
        if number is not None:  # deleted, or disappeared on time: its text is not kept here either
            chat.view.messages.pop(number, None)
        chat.screen.live((f"#{number} was deleted" if number else "a message was deleted", "dim italic"))


async def _on_receipt(chat: Chat, event: Event) -> None:
    user = event.data.get("user")
    if _is_open(chat, event) and user != chat.me and event.data.get("receipt") == "read" and chat.view:
        number = chat.view.numbers.get(int(event.data.get("message_id") or 0))
        chat.screen.live((f"✓ {user} read" + (f" up to #{number}" if number else ""), "dim"))


async def _on_updated(chat: Chat, event: Event) -> None:
    conversation_id = event.data.get("conversation_id")
    if not isinstance(conversation_id, int):
        return
    is_open = _is_open(chat, event)
    chat.known.pop(conversation_id, None)
    change, by = event.data.get("change"), event.data.get("by")
    conv = await chat.conversation(conversation_id)
    if conv is not None and is_open and chat.view is not None:
        chat.view.conversation = conv
    label = chat.label(conv) if conv is not None else "a group"
    member = event.data.get("member")
    if change == "created" and by != chat.me:
        chat.notice(
            f"{by} started a conversation with you: {label}",
            (f"   ({chat.open_hint(conv, str(by))})", "dim"),
        )
    elif change == "member_removed" and member == chat.me:
        if is_open:
            chat.view = None
        chat.notice(f"{by} removed you from {label}")
    elif change == "timer" and by != chat.me:
        seconds = event.data.get("seconds")
        timer = timer_text(seconds if isinstance(seconds, int) else None)
        what = (
            "turned disappearing messages off"
            if timer == "off"
            else f"set disappearing messages to {timer}: messages sent from now on are deleted after that"
        )
        if is_open:
            chat.screen.live((f"{by} {what}", "yellow"))
        else:
            chat.notice(f"{by} {what} in {label}")
    elif not is_open or by == chat.me:
        return
    elif change == "members_added":
        chat.screen.live((f"{by} added {', '.join(event.data.get('members', []))}", "dim"))
    elif change == "member_left":
        chat.screen.live((f"{member} left", "dim"))
    elif change == "member_removed":
        chat.screen.live((f"{by} removed {member}", "dim"))
    elif change == "renamed":
        chat.screen.live((f"{by} renamed the group to {event.data.get('title')}", "dim"))
    elif change == "role_changed":
        chat.screen.live((f"{member} is now {event.data.get('role')}", "dim"))


async def _on_moderation(chat: Chat, event: Event) -> None:
    data = event.data
    note = f" — {data['note']}" if data.get("note") else ""
    if data.get("appeal"):
        chat.notice(f"your appeal of case {data.get('case_id')}: decision {data.get('action')}{note}")
        return
    action = str(data.get("action", "")).replace("_", " ")
    chat.notice(
        f"a moderator acted on your message (case {data.get('case_id')}): {action}{note}",
        (f"   (/appeal {data.get('case_id')} TEXT to appeal, once)", "dim"),
    )


async def _on_report_outcome(chat: Chat, event: Event) -> None:
    data = event.data
    note = f" — {data['note']}" if data.get("note") else ""
    action = str(data.get("action", "")).replace("_", " ")
    what = "the appeal was decided" if data.get("appeal") else "the moderators decided"
    chat.notice(f"your report (case {data.get('case_id')}): {what}: {action}{note}")


async def _on_access(chat: Chat, event: Event) -> None:
    chat.notice(
        "staff accessed data of yours under a case; the access log shows it (entry "
        f"{event.data.get('index')})",
        ("   (keyhold.sdk: client.access_events() verifies it)", "dim"),
    )


HANDLERS = {
    "message.new": _on_message,
    "message.deleted": _on_deleted,
    "receipt": _on_receipt,
    "conversation.updated": _on_updated,
    "moderation.action": _on_moderation,
    "report.outcome": _on_report_outcome,
    "access.visible": _on_access,
}
