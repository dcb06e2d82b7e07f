"""To-device messages (`PUT sendToDevice/{event_type}/{txn_id}`): what one device sends
another directly — Olm-encrypted room keys, verification steps — delivered over the stream
as `e2ee.to_device` to that device's connections only, kept until the device reconnects past
it. The service stores the content as sent and reads nothing in it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.clock import now_ms
from keyhold.core.accounts import Member, require_live_session
from keyhold.core.errors import Problem, forbidden, invalid
from keyhold.core.writer import EventSink, PendingEvent, Writer
from keyhold.e2ee.ids import user_id
from keyhold.e2ee.people import reachable
from keyhold.store import contacts as contact_store
from keyhold.store import e2ee_keys as store

MAX_MESSAGES = 1000
# One message's content: room keys and verification steps are a few hundred bytes.
MAX_CONTENT_BYTES = 16 * 1024
ALL_DEVICES = "*"


# Which of these accounts may not message anyone (under the direct-messaging age), each with
# its refusal: filled at wiring time (`core.contacts.ContactGate.messaging_off`).
MessagingOff = Callable[[AsyncConnection, Collection[int]], Awaitable[dict[int, Problem]]]


async def nobody_off(_conn: AsyncConnection, _user_ids: Collection[int]) -> dict[int, Problem]:
    return {}


class ToDevice:
    def __init__(self, writer: Writer, server_name: str) -> None:
        self._writer = writer
        self._server = server_name
        self.messaging_off: MessagingOff = nobody_off

    async def send(
        self, member: Member, event_type: str, txn_id: str, messages: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Queue each message for its device (`*`: every device of the user). Sent again with
        the same `txn_id` from the same device, nothing is queued twice. Users the sender may
        not reach, and devices they do not have, are skipped without a word, as unknown ones."""
        device = member.device_id
        if device is None:
            raise forbidden("this token belongs to no device: sign in again to get one")
        if sum(len(by_device) for by_device in messages.values()) > MAX_MESSAGES:
            raise invalid(f"at most {MAX_MESSAGES} messages per request")
        contents: dict[tuple[str, str], str] = {}
        for uid, by_device in messages.items():
            for target, content in by_device.items():
                if not isinstance(content, Mapping):
                    raise invalid("each message's content is a JSON object")
                try:
                    encoded = orjson.dumps(content)
                except orjson.JSONEncodeError:
                    raise invalid(
                        "a message's content is not plain JSON (an unpaired surrogate, or a number beyond 64 bits?)"
                    ) from None
                if len(encoded) > MAX_CONTENT_BYTES:
                    raise invalid(f"a message's content is at most {MAX_CONTENT_BYTES} bytes")
                contents[uid, target] = encoded.decode()
        sender = user_id(member.username, self._server)

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            await require_live_session(conn, member)
            if not await store.first_to_device_txn(conn, member.id, device, txn_id, now_ms()):
                return
            # A conversation deleted as a message request is no channel for its sender any more.
            seen, _ = await reachable(conn, member, list(messages), self._server, with_declined=False)
            # A channel beside conversations: closed to and from those who may message no one.
            off = await self.messaging_off(conn, {member.id, *seen.values()})
            if member.id in off:
                raise off[member.id]
            # Dropped for whoever blocks the sender, as a message would be (silently: to-device
            # delivery is best effort anyway).
            blockers = await contact_store.blockers_among(conn, member.id, set(seen.values()))
            for uid, account in seen.items():
                if account in blockers or account in off:
                    continue
                existing = set(await store.device_ids_of(conn, account))
                for target in messages[uid]:
                    content = orjson.loads(contents[uid, target])
                    targets = sorted(existing) if target == ALL_DEVICES else [target] if target in existing else []
                    for one in targets:
                        event = {"type": event_type, "sender": sender, "content": content}
                        sink.add(PendingEvent([account], "e2ee.to_device", data={"event": event}, device_id=one))

        await self._writer.run(run)
