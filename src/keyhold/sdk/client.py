"""Async Python client for Keyhold's public API (httpx for REST, websockets for the stream).

c = await Client.login("http://127.0.0.1:8000", "alice", "correct horse")
conv = await c.start_conversation(["bob"])
await c.send(conv.id, "hi")
async for event in c.events(since=0):
    ...
await c.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import quote

import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from keyhold.crypto.encrypted_file import (
    PLAINTEXT_SHA256_FIELD,
    AttachmentError,
    decrypt_attachment,
    encrypt_attachment,
    sha256_b64,
)
from keyhold.crypto.franking import KEY_FIELD as FRANKING_KEY_FIELD
from keyhold.sdk.e2ee.device import OlmDevice
from keyhold.sdk.e2ee.machine import CryptoMachine, UndecryptableError
from keyhold.sdk.e2ee.safety_numbers import SafetyNumber
from keyhold.sdk.e2ee.sas import SasVerification, VerificationUnavailable
from keyhold.sdk.e2ee.state import StateError, StateFile
from keyhold.sdk.e2ee.verification import Verifier
from keyhold.sdk.errors import KeyholdConnectionError, KeyholdError, KeyholdTimeout
from keyhold.sdk.verify import verify_access_events

API = "/api/v1"
# How long an idle connection is reused (httpx's default, stated: the server keeps idle
# connections open for longer, `cli.serve.IDLE_CONNECTION_SECONDS`, so that a request never
# races the server closing the connection it was sent on).
KEEPALIVE_SECONDS = 5.0
# `events()` waits this long before connecting again when the member already has as many
# streams open as the server allows (close code 4429): only a stream closing makes room.
STREAMS_FULL_RETRY_SECONDS = 5.0
E2EE_FILES = (
    "in an end-to-end encrypted conversation a file goes with send_file, which encrypts it on "
    "this device: an upload's key must travel inside the encrypted message"
)
log = logging.getLogger("keyhold.sdk")


@dataclass(frozen=True)
class Attachment:
    id: str
    filename: str | None  # None in e2ee conversations: the name is inside the encrypted message
    content_type: str
    size: int


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    sender: str
    text: str | None
    sent_at: str
    kind: str = "text"
    deleted: bool = False
    attachment: Attachment | None = None
    # An e2ee message this device could not read: why (it is returned, never dropped).
    undecryptable: str | None = None
    # Franked by its sender: a report can reveal it verifiably (`Client.report(..., reveal=)`).
    franked: bool = False
    evidence: dict[str, Any] | None = field(default=None, repr=False)
    expires_at: str | None = None  # a disappearing message: when the server deletes it
    # An e2ee file's key and hashes, from the decrypted message (`Client.download_file`).
    e2ee_file: dict[str, Any] | None = field(default=None, repr=False)
    # Held by the safety scanning for a moderator ("pending_review", then "refused" if it was);
    # only its sender sees it so. `support`: resources offered to the sender (docs/safety.md).
    status: str | None = None
    support: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], crypto: CryptoMachine | None = None) -> Message:
        """A message as the API sent it; an e2ee one decrypted by `crypto` (this device)."""
        att = data.get("attachment")
        attachment = Attachment(**att) if att else None
        text, undecryptable, evidence, e2ee_file = data.get("text"), None, None, None
        event, franking = data.get("event"), data.get("franking")
        if data.get("kind") == "e2ee" and isinstance(event, dict):
            try:
                if crypto is None:
                    raise UndecryptableError("this client has no end-to-end encryption device")
                decrypted = crypto.decrypt(event, franking if isinstance(franking, dict) else None)
                text = decrypted.text
                attachment, e2ee_file = _e2ee_file(attachment, decrypted.content)
                if isinstance(franking, dict):
                    evidence = {
                        "message_id": data["id"],
                        "content": decrypted.content,
                        "franking_key": decrypted.content.get(FRANKING_KEY_FIELD),
                        "tag": franking.get("tag"),
                    }
            except UndecryptableError as exc:
                undecryptable = str(exc)
            except (ValueError, TypeError, KeyError, AttributeError):
                undecryptable = "it is malformed"  # what a hostile server or sender made up
        return cls(
            id=data["id"],
            conversation_id=data["conversation_id"],
            sender=data["sender"],
            text=text,
            sent_at=data["sent_at"],
            kind=data.get("kind", "text"),
            deleted=bool(data.get("deleted")),
            attachment=attachment,
            undecryptable=undecryptable,
            franked=bool(data.get("franked")),
            evidence=evidence,
            expires_at=data.get("expires_at"),
            e2ee_file=e2ee_file,
            status=data.get("status"),
            support=data.get("support"),
        )


def _e2ee_file(
    attachment: Attachment | None, content: dict[str, Any]
) -> tuple[Attachment | None, dict[str, Any] | None]:
    """An e2ee message's attachment with the name and type its decrypted content gives, and the
    file's key, if the content names this very attachment."""
    file = content.get("file")
    if attachment is None or not isinstance(file, dict) or file.get("url") != attachment.id:
        return attachment, None
    info = content.get("info")
    info = info if isinstance(info, dict) else {}
    named = Attachment(
        attachment.id,
        str(content.get("filename") or content.get("body") or "file"),
        str(info.get("mimetype") or "application/octet-stream"),
        attachment.size,
    )
    return named, {"file": file, PLAINTEXT_SHA256_FIELD: content.get(PLAINTEXT_SHA256_FIELD)}


@dataclass(frozen=True)
class Conversation:
    id: int
    kind: str
    encryption: str
    readable_by: str
    members: list[str]
    title: str = ""
    unread: int = 0
    last_message: dict[str, Any] | None = None
    owner: str | None = None  # groups only
    admins: list[str] = field(default_factory=list)
    disappear_after_seconds: int | None = None  # disappearing messages' timer (None: off)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Conversation:
        return cls(
            id=data["id"],
            kind=data["kind"],
            encryption=data["encryption"],
            readable_by=data["readable_by"],
            members=list(data["members"]),
            title=data.get("title", ""),
            unread=int(data.get("unread", 0)),
            last_message=data.get("last_message"),
            owner=data.get("owner"),
            admins=list(data.get("admins") or []),
            disappear_after_seconds=data.get("disappear_after_seconds"),
        )


@dataclass(frozen=True)
class Event:
    type: str
    seq: int
    data: dict[str, Any] = field(default_factory=dict)
    message: Message | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], crypto: CryptoMachine | None = None) -> Event:
        raw = data.get("message")
        return cls(
            type=data["type"],
            seq=int(data.get("seq", 0)),
            data=data,
            message=Message.from_json(raw, crypto) if isinstance(raw, dict) else None,
        )


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {
            "title": response.reason_phrase,
            "detail": response.text[:200],
            "status": response.status_code,
        }
    retry_after = response.headers.get("retry-after")
    raise KeyholdError(
        response.status_code, problem, float(retry_after) if retry_after and retry_after.isdigit() else None
    )


def _ws_url(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url.removeprefix("https://").rstrip("/") + API + "/stream"
    return "ws://" + base_url.removeprefix("http://").rstrip("/") + API + "/stream"


class ApiSession:
    """An HTTP session to the API (signed in with `token`, or not): what member and staff
    clients share. `transport` is httpx's seam: pass `httpx.ASGITransport(app)` to talk to an
    application in memory, or a transport of your own to observe or alter traffic in tests."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token or ""
        self._verify = verify
        self._transport = transport
        self._http = httpx.AsyncClient(
            base_url=self.base_url + API,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=timeout,
            verify=_ssl_context(verify),
            transport=transport,
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _response(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The server's answer, or a `KeyholdError` (a refusal, or the network failing)."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise KeyholdTimeout(f"no answer from {self.base_url} in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise KeyholdConnectionError(f"cannot reach {self.base_url} ({type(exc).__name__})") from exc
        _raise_for(response)
        return response

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._response(method, path, **kwargs)
        return None if response.status_code == 204 else response.json()

    async def transparency_head(self) -> dict[str, Any]:
        """The newest signed tree head of the access log (public); check it with
        `keyhold.sdk.verify_tree_head`."""
        return dict(await self._request("GET", "/transparency/sth"))


class Client(ApiSession):
    """A signed-in member. Create with `Client.register(...)` or `Client.login(...)`."""

    def __init__(
        self,
        base_url: str,
        username: str,
        token: str,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        device_id: str | None = None,
        user_id: str | None = None,
    ) -> None:
        super().__init__(base_url, token, verify, timeout=timeout, transport=transport)
        self.username = username
        self.device_id = device_id  # the device this client's token belongs to
        self.user_id = user_id  # the full id, "@name:server"
        # This device's end-to-end encryption (Olm/Megolm), set up by `login` and `register`.
        self.crypto: CryptoMachine | None = None
        self.e2ee_unavailable = "this client was made without end-to-end encryption (e2ee=False)"
        self._state: StateFile | None = None
        self._encryption: dict[int, str] = {}  # conversation id -> its model (it never changes)

    async def close(self) -> None:
        await super().close()
        if self._state is not None:
            self._state.close()
            self._state = None

    async def _start_crypto(self, state: StateFile | None, saved: dict[str, Any] | None) -> None:
        """Make this device an end-to-end encryption device: its Olm account restored from
        `saved`, or a new one whose keys are published; kept in `state` if given (else in
        memory for the life of this client)."""
        if self.user_id is None or self.device_id is None:
            return  # an old server: no devices, no e2ee

        async def put(path: str, body: dict[str, Any]) -> Any:
            return await self._request("PUT", path, json=body)

        if saved is not None and state is not None:
            if saved.get("user_id") != self.user_id:
                raise StateError(f"{state.path} belongs to {saved.get('user_id')}, not {self.user_id}")
            self.crypto = CryptoMachine.restore(saved, state.pickle_key(), self._post, put, self._get)
        else:
            self.crypto = CryptoMachine(OlmDevice(self.user_id, self.device_id), self._post, put, self._get)
        if state is not None:
            machine, key = self.crypto, state.pickle_key()
            machine.on_change = lambda: state.save(machine.export(key))
            self._state = state
        if saved is None:
            try:
                await self.crypto.publish()
            except KeyholdError as exc:
                if exc.status not in (400, 403):
                    raise
                # This device id published other keys before (a sign-in again without its
                # state file), or the account may not act (suspended: it may only appeal).
                # The sign-in stands; e2ee sends say why they cannot be made.
                self.crypto = None
                self.e2ee_unavailable = str(exc.problem.get("detail", exc))
        if self.crypto is not None:
            await self.crypto.verification.bootstrap()  # the member's first device: cross-signing keys

    async def _check_restored_device(self, password: str, state_path: object) -> None:
        """A restored device must still be the one the server publishes. A removed device
        signed in again from its old state file is removed again (it had no keys left, so
        nothing is lost) instead of coming back to life."""
        assert self.crypto is not None and self.user_id is not None and self.device_id is not None
        answer = await self._post("/e2ee/keys/query", {"device_keys": {self.user_id: [self.device_id]}})
        published = (answer.get("device_keys", {}).get(self.user_id) or {}).get(self.device_id)
        if published is None:
            await self._request("DELETE", f"/devices/{quote(self.device_id, safe='')}", json={"password": password})
            raise StateError(
                f"{state_path}: device {self.device_id} was removed from your account, so its state cannot be "
                "used again (move the file away to start a new device)"
            )
        keys = published.get("keys", {}) if isinstance(published, dict) else {}
        if keys.get(f"ed25519:{self.device_id}") != self.crypto.device.ed25519:
            await self.logout()
            raise StateError(f"{state_path}: the server publishes other keys for device {self.device_id}")

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        return await self._request("POST", path, json=body)

    async def _get(self, path: str) -> Any:
        return await self._request("GET", path)

    def _room_id(self, conversation_id: int) -> str:
        server = (self.user_id or ":").split(":", 1)[1]
        return f"!{conversation_id}:{server}"

    def _full_id(self, username: str) -> str:
        server = (self.user_id or ":").split(":", 1)[1]
        return f"@{username}:{server}"

    # -- sessions ----------------------------------------------------------------------------

    @classmethod
    async def register(
        cls,
        base_url: str,
        username: str,
        password: str,
        birthdate: str = "2000-01-01",
        region: str = "us",
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        device_id: str | None = None,
        device_name: str | None = None,
        e2ee: bool = True,
        state_path: str | Path | None = None,
        passphrase: str | None = None,
    ) -> Client:
        body = {"username": username, "password": password, "birthdate": birthdate, "region": region}
        async with ApiSession(base_url, verify=verify, transport=transport) as anonymous:
            await anonymous._request("POST", "/accounts", json=body)
        return await cls.login(
            base_url,
            username,
            password,
            verify=verify,
            transport=transport,
            device_id=device_id,
            device_name=device_name,
            e2ee=e2ee,
            state_path=state_path,
            passphrase=passphrase,
        )

    @classmethod
    async def login(
        cls,
        base_url: str,
        username: str,
        password: str,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        device_id: str | None = None,
        device_name: str | None = None,
        e2ee: bool = True,
        state_path: str | Path | None = None,
        passphrase: str | None = None,
    ) -> Client:
        """Sign in on a device: `device_id` signs in again on one of yours (its earlier token
        ends), or names a new one; without it the server makes one up (`client.device_id`).
        With `e2ee` (the default) the device gets an Olm account, in memory for the life of
        the client, and publishes its keys: it can then read and write e2ee conversations
        from its creation on. With `state_path` and `passphrase` the device's state is kept
        in that file (encrypted; see `keyhold.sdk.e2ee.state`) and a later sign-in with the
        same file is the same device, with its sessions; only one client at a time may have
        the file open. Without its state file, signing in again on a device that published
        keys signs in without e2ee (`crypto` is None; `e2ee_unavailable` says why)."""
        state = StateFile(Path(state_path), passphrase or "") if e2ee and state_path is not None else None
        client: Client | None = None
        try:
            saved = state.load() if state is not None else None
            if saved is not None:
                owner = str(saved.get("user_id", "")).removeprefix("@").split(":", 1)[0]
                if owner.lower() != username.lower():
                    # Checked before signing in: a sign-in would make that device id one of yours.
                    raise StateError(f"{state_path} is the state of another member's device")
                if device_id is not None and device_id != saved.get("device_id"):
                    raise StateError(f"{state_path} is the state of device {saved.get('device_id')}, not {device_id}")
                device_id = str(saved["device_id"])
            body: dict[str, Any] = {"username": username, "password": password}
            if device_id is not None:
                body["device_id"] = device_id
            if device_name is not None:
                body["device_name"] = device_name
            async with ApiSession(base_url, verify=verify, transport=transport) as anonymous:
                data = await anonymous._request("POST", "/sessions", json=body)
            client = cls(
                base_url,
                data["username"],
                data["token"],
                verify=verify,
                transport=transport,
                device_id=data.get("device_id"),
                user_id=data.get("user_id"),
            )
            if e2ee:
                await client._start_crypto(state, saved)
                if saved is not None:
                    await client._check_restored_device(password, state_path)
            return client
        except BaseException:
            if client is not None:
                await client.close()
            if state is not None:
                state.close()  # the file is free again for the next attempt
            raise

    async def logout(self) -> None:
        await self._request("DELETE", "/sessions/current")

    async def logout_everywhere(self) -> int:
        return int((await self._request("DELETE", "/sessions"))["revoked"])

    # -- account and people ------------------------------------------------------------------

    async def me(self) -> dict[str, Any]:
        return dict(await self._request("GET", "/account"))

    async def set_display_name(self, display_name: str) -> dict[str, Any]:
        return dict(await self._request("PATCH", "/account", json={"display_name": display_name}))

    async def change_password(self, current_password: str, new_password: str) -> None:
        body = {"current_password": current_password, "new_password": new_password}
        await self._request("PUT", "/account/password", json=body)

    async def delete_account(self, password: str) -> None:
        await self._request("POST", "/account/delete", json={"password": password})

    # -- devices ------------------------------------------------------------------------------

    async def devices(self) -> list[dict[str, Any]]:
        """My devices: `device_id`, `display_name`, `created_at`, `last_seen_at`, `current`."""
        return list((await self._request("GET", "/devices"))["devices"])

    async def rename_device(self, device_id: str, display_name: str) -> dict[str, Any]:
        path = f"/devices/{quote(device_id, safe='')}"
        return dict(await self._request("PATCH", path, json={"display_name": display_name}))

    async def remove_device(self, device_id: str, password: str) -> None:
        """Remove one of my devices (this one too): its tokens end, its open streams close."""
        await self._request("DELETE", f"/devices/{quote(device_id, safe='')}", json={"password": password})

    async def user(self, username: str) -> dict[str, Any]:
        """A member's public profile: username, display name, region, created_at."""
        return dict(await self._request("GET", f"/users/{username}"))

    async def follow(self, username: str) -> None:
        await self._request("PUT", f"/following/{username}")

    async def unfollow(self, username: str) -> None:
        await self._request("DELETE", f"/following/{username}")

    async def relations(self) -> dict[str, list[str]]:
        return dict(await self._request("GET", "/relations"))

    async def friends(self) -> list[str]:
        return list((await self.relations())["friends"])

    # -- who may message me (docs/safety.md) ---------------------------------------------------

    async def block(self, username: str) -> None:
        await self._request("PUT", f"/blocks/{username}")

    async def unblock(self, username: str) -> None:
        await self._request("DELETE", f"/blocks/{username}")

    async def blocked(self) -> list[str]:
        return [item["username"] for item in (await self._request("GET", "/blocks"))["items"]]

    async def set_dm_audience(self, audience: str) -> dict[str, Any]:
        """Who may start a conversation with me: "everyone", "friends" or "no_one"."""
        return dict(await self._request("PUT", "/account/messaging", json={"dm_audience": audience}))

    async def requests(self, limit: int = 50, before: int | None = None) -> list[Conversation]:
        """My message requests: conversations (and group adds) from non-friends not accepted yet."""
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        data = await self._request("GET", "/requests", params=params)
        return [self._remember(Conversation.from_json(c)) for c in data["items"]]

    async def accept_request(self, conversation_id: int) -> None:
        await self._request("POST", f"/requests/{conversation_id}/accept")

    async def decline_request(self, conversation_id: int, block: bool = False) -> None:
        """Delete a request (its sender is not told); with `block`, block its sender too."""
        if block:
            await self._request("POST", f"/requests/{conversation_id}/block")
        else:
            await self._request("DELETE", f"/requests/{conversation_id}")

    # -- conversations -----------------------------------------------------------------------

    async def start_conversation(
        self, usernames: list[str], encryption: str = "standard", title: str = "", kind: str | None = None
    ) -> Conversation:
        body: dict[str, Any] = {"members": usernames, "encryption": encryption, "title": title}
        if kind:
            body["kind"] = kind
        return self._remember(Conversation.from_json(await self._request("POST", "/conversations", json=body)))

    def _remember(self, conversation: Conversation) -> Conversation:
        self._encryption[conversation.id] = conversation.encryption
        return conversation

    async def conversations(self, limit: int = 50, before: int | None = None) -> list[Conversation]:
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        data = await self._request("GET", "/conversations", params=params)
        return [self._remember(Conversation.from_json(c)) for c in data["items"]]

    async def conversation(self, conversation_id: int) -> Conversation:
        return self._remember(Conversation.from_json(await self._request("GET", f"/conversations/{conversation_id}")))

    async def add_members(self, conversation_id: int, usernames: list[str]) -> Conversation:
        data = await self._request(
            "POST", f"/conversations/{conversation_id}/members", json={"members": usernames}
        )
        return Conversation.from_json(data)

    async def leave(self, conversation_id: int) -> None:
        await self._request("DELETE", f"/conversations/{conversation_id}/members/me")

    async def remove_member(self, conversation_id: int, username: str) -> Conversation:
        """Remove someone from a group (its owner and admins; an admin by the owner only)."""
        data = await self._request("DELETE", f"/conversations/{conversation_id}/members/{username}")
        return Conversation.from_json(data)

    async def rename(self, conversation_id: int, title: str) -> Conversation:
        data = await self._request("PATCH", f"/conversations/{conversation_id}", json={"title": title})
        return Conversation.from_json(data)

    async def set_timer(self, conversation_id: int, seconds: int | None) -> Conversation:
        """Disappearing messages: each message sent from now on is deleted `seconds` after it
        was sent, for everyone and on the server (None: off). The SDK keeps no copy of
        message text, so nothing remains on this side either."""
        path = f"/conversations/{conversation_id}/timer"
        return self._remember(Conversation.from_json(await self._request("PUT", path, json={"seconds": seconds})))

    async def set_role(self, conversation_id: int, username: str, role: str) -> Conversation:
        """`admin` (the owner and admins may promote) or `member` (the owner demotes)."""
        path = f"/conversations/{conversation_id}/members/{username}/role"
        return Conversation.from_json(await self._request("PUT", path, json={"role": role}))

    # -- messages ----------------------------------------------------------------------------

    async def _e2ee_members(self, conversation_id: int) -> list[str] | None:
        """The members' full ids if the conversation is e2ee; None if it is `standard`."""
        if self._encryption.get(conversation_id, "e2ee") != "e2ee":
            return None
        conversation = await self.conversation(conversation_id)
        if conversation.encryption != "e2ee":
            return None
        if self.crypto is None:
            raise KeyholdError(400, {"title": "No e2ee device", "detail": self.e2ee_unavailable})
        return [self._full_id(m) for m in conversation.members]

    async def send(
        self,
        conversation_id: int,
        text: str,
        idempotency_key: str | None = None,
        attachment_id: str | None = None,
    ) -> Message:
        """Send a text. In an e2ee conversation it is encrypted on this device first, its room
        key shared over Olm with every device of the current members. (A file goes with
        `send_file`; in an e2ee conversation an `attachment_id` alone is refused, as its key
        would be missing from the message.)"""
        return await self._send(conversation_id, text, idempotency_key, attachment_id, None)

    async def _send(
        self,
        conversation_id: int,
        text: str,
        idempotency_key: str | None,
        attachment_id: str | None,
        file_content: dict[str, Any] | None,
        e2ee_members: list[str] | None = None,
    ) -> Message:
        """`e2ee_members`: the members' full ids when the caller already fetched them for an
        e2ee conversation (else asked here)."""
        body: dict[str, Any] = {"text": text, "idempotency_key": idempotency_key or uuid.uuid4().hex}
        members = e2ee_members if e2ee_members is not None else await self._e2ee_members(conversation_id)
        if members is not None:
            if attachment_id and file_content is None:
                raise KeyholdError(400, {"title": "Use send_file", "detail": E2EE_FILES})
            assert self.crypto is not None
            room = self._room_id(conversation_id)
            body["encrypted"], body["franking"] = await self.crypto.encrypt(room, members, text, file_content)
            del body["text"]
        if attachment_id:
            body["attachment_id"] = attachment_id
        data = await self._request("POST", f"/conversations/{conversation_id}/messages", json=body)
        return Message.from_json(data, self.crypto)

    async def history(
        self, conversation_id: int, limit: int = 50, before: int | None = None, after: int | None = None
    ) -> list[Message]:
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        if after is not None:
            params["after"] = after
        data = await self._request("GET", f"/conversations/{conversation_id}/messages", params=params)
        if self.crypto is not None and any(m.get("kind") == "e2ee" for m in data["items"]):
            await self.sync_device_events()  # room keys that came while no stream was open
        return [Message.from_json(m, self.crypto) for m in data["items"]]

    async def sync_device_events(self) -> None:
        """Take in this device's pending to-device messages (room keys): a stream opened
        where the device last was, read up to `ready`, closed."""
        if self.crypto is not None:
            async with await self._open(self.crypto.since, device_events=False) as stream:
                await asyncio.wait_for(stream.ready.wait(), 30.0)

    async def delete_message(self, message_id: int) -> Message:
        return Message.from_json(await self._request("DELETE", f"/messages/{message_id}"), self.crypto)

    async def mark(self, conversation_id: int, message_id: int, receipt: str = "read") -> bool:
        body = {"type": receipt, "message_id": message_id}
        data = await self._request("POST", f"/conversations/{conversation_id}/receipts", json=body)
        return bool(data["changed"])

    async def upload(
        self, conversation_id: int, data: bytes, filename: str, content_type: str = "application/octet-stream"
    ) -> Attachment:
        """Upload a file of a `standard` conversation (then `send(..., attachment_id=)`). In an
        e2ee conversation use `send_file`, which encrypts it on this device first."""
        if await self._e2ee_members(conversation_id) is not None:
            raise KeyholdError(400, {"title": "Use send_file", "detail": E2EE_FILES})
        return await self._upload(conversation_id, data, filename, content_type)

    async def _upload(self, conversation_id: int, data: bytes, filename: str | None, content_type: str) -> Attachment:
        """`filename` None: no name at all (e2ee uploads: the name is inside the encrypted message)."""
        headers = {"Content-Type": content_type}
        if filename is not None:
            # The name goes in a header, never the URL (which proxies and logs keep).
            headers["Keyhold-Filename"] = quote(filename, safe="")
        result = await self._request(
            "POST",
            f"/conversations/{conversation_id}/attachments",
            content=data,
            headers=headers,
        )
        return Attachment(**result)

    async def send_file(
        self,
        conversation_id: int,
        data: bytes,
        filename: str,
        content_type: str = "application/octet-stream",
        text: str = "",
    ) -> Message:
        """Send a file, with an optional caption. In an e2ee conversation the file is encrypted
        on this device (Matrix's encrypted-attachment format) and only its ciphertext is
        uploaded, after the recipients' keys check out; its key, name and type travel inside
        the encrypted message."""
        members = await self._e2ee_members(conversation_id)
        if members is None:
            attachment = await self._upload(conversation_id, data, filename, content_type)
            return await self.send(conversation_id, text, attachment_id=attachment.id)
        assert self.crypto is not None
        await self.crypto.recipients(members)  # nothing is uploaded for a send that would be refused
        ciphertext, file = encrypt_attachment(data)
        attachment = await self._upload(conversation_id, ciphertext, None, "application/octet-stream")
        content = {
            "msgtype": "m.file",
            "filename": filename,
            "info": {"mimetype": content_type, "size": len(data)},
            "file": {"url": attachment.id, **file},
            PLAINTEXT_SHA256_FIELD: sha256_b64(data),
        }
        return await self._send(conversation_id, text or filename, None, attachment.id, content, members)

    async def download(self, attachment_id: str) -> bytes:
        """An attachment's stored bytes (in an e2ee conversation: its ciphertext; see
        `download_file`)."""
        return (await self._response("GET", f"/attachments/{attachment_id}")).content

    async def download_file(self, message: Message) -> bytes:
        """A message's file, decrypted on this device if the message is e2ee (its SHA-256
        checked against what the sender committed to)."""
        if message.attachment is None:
            raise KeyholdError(400, {"title": "No file", "detail": "this message carries no file"})
        data = await self.download(message.attachment.id)
        if message.kind != "e2ee":
            return data
        if message.e2ee_file is None:
            reason = message.undecryptable or "the message names no key for it"
            raise KeyholdError(0, {"title": "Undecryptable file", "detail": f"cannot open the file: {reason}"})
        try:
            return decrypt_attachment(data, message.e2ee_file["file"], message.e2ee_file.get(PLAINTEXT_SHA256_FIELD))
        except AttachmentError as exc:
            raise KeyholdError(0, {"title": "Undecryptable file", "detail": str(exc)}) from None

    # -- verification (keyhold.sdk.e2ee.verification; docs/e2ee.md, "Verification") -------------

    def _verifier(self) -> Verifier:
        if self.crypto is None:
            raise VerificationUnavailable(self.e2ee_unavailable)
        return self.crypto.verification

    async def safety_number(self, username: str) -> SafetyNumber:
        """The safety number (`.digits`, `.formatted`, `.qr_payload`) of me and `username`,
        from both master keys as the server shows them now."""
        return await self._verifier().safety_number(self._full_id(username))

    async def start_verification(self, username: str, device_id: str | None = None) -> SasVerification:
        """Ask one of `username`'s devices (or all: the first to accept wins) to verify by SAS."""
        return await self._verifier().start(self._full_id(username), device_id)

    async def next_verification_request(self, timeout: float = 30.0) -> SasVerification:  # noqa: ASYNC109 (the API the chat client uses)
        """The next incoming verification request (TimeoutError if none comes in time). Requests
        arrive over the stream: a stream of this client (`connect()`) must be open."""
        return await self._verifier().next_request(timeout)

    def is_verified(self, username: str) -> bool:
        return self.crypto is not None and self.crypto.verification.trust.is_verified(self._full_id(username))

    def accept_identity(self, username: str, changes: list[str] | None = None) -> bool:
        """Accept `username`'s changed keys: sends to them work again, unverified. With
        `changes` (an IdentityChanged's `.changes`, as shown to the member), only if those are
        still exactly the pending changes. Whether anything was accepted."""
        return self._verifier().accept_identity(self._full_id(username), changes)

    def forget_key_log_fork(self) -> None:
        """After a proven fork of the key-transparency log (`crypto.key_log.fork`: the reason,
        and the two heads the server signed that no proof joins) this device sends nothing.
        This makes it trust the server's log again: hand the evidence to the service's
        auditors first."""
        if self.crypto is not None:
            self.crypto.key_log.forget_fork()
            self.crypto.on_change()

    async def reset_cross_signing(self, password: str) -> None:
        """New cross-signing keys for me, held by this device (contacts see an identity change)."""
        await self._verifier().reset_cross_signing(password)

    # -- safety and governance -----------------------------------------------------------------

    async def report(
        self,
        conversation_id: int,
        message_ids: list[int],
        category: str,
        comment: str = "",
        reveal: Message | None = None,
    ) -> dict[str, Any]:
        """Report messages of one of my conversations to the moderators of my region:
        `{id, status, category, verified_sender}`; the outcome arrives as a `report.outcome`
        event. `reveal`: a franked e2ee message as this device decrypted it; the service
        checks it against its franking and the case shows moderators what it says, and
        nothing else of the conversation."""
        body: dict[str, Any] = {"conversation_id": conversation_id, "message_ids": message_ids, "category": category}
        if comment:
            body["comment"] = comment
        if reveal is not None:
            if reveal.evidence is None:
                raise ValueError("only a franked e2ee message this device decrypted can be revealed")
            body["franking"] = reveal.evidence
        return dict(await self._request("POST", "/reports", json=body))

    async def appeal(self, case_id: int, statement: str) -> None:
        """Appeal a moderation decision about me, once (works while suspended or banned)."""
        await self._request("POST", f"/reports/{case_id}/appeal", json={"statement": statement})

    async def access_events(self, pinned_key: bytes | str | None = None) -> list[dict[str, Any]]:
        """Staff access to my data, every entry verified (its member block, its inclusion in
        the log, the tree head's signature, by `pinned_key` when given); raises
        `VerificationError` if anything the server shows does not verify."""
        user_id = int((await self.me())["id"])
        data = await self._request("GET", "/account/access-events")
        return verify_access_events(data, user_id, pinned_key)

    # -- real time ---------------------------------------------------------------------------

    async def connect(self, since: int | Literal["latest"] = 0, device_events: bool = False) -> Stream:
        """Open the event stream after event `since` (`"latest"`: live events only, `ready`
        tells the position); use as an async context manager or call `close()`. Messages of
        e2ee conversations come decrypted; this device's `e2ee.*` events are handled by its
        crypto (not iterated) unless `device_events`, which hands them to you instead."""
        if self.crypto is not None and not device_events and (since == "latest" or since > self.crypto.since):
            # Connecting past device events deletes them: take them in first.
            await self.sync_device_events()
        return await self._open(since, device_events)

    async def _open(self, since: int | Literal["latest"], device_events: bool) -> Stream:
        try:
            ws = await websockets.connect(
                _ws_url(self.base_url) + f"?since={since}",
                additional_headers={"Authorization": f"Bearer {self.token}"},
                max_size=2**22,
                ssl=None if not self.base_url.startswith("https") else _ssl_context(self._verify),
            )
        except (OSError, websockets.InvalidHandshake) as exc:
            raise KeyholdConnectionError(
                f"cannot open the stream at {self.base_url} ({type(exc).__name__})"
            ) from exc
        return Stream(ws, None if device_events else self.crypto)

    async def events(self, since: int = 0) -> AsyncIterator[Event]:
        """Every event after `since`, replayed then live, reconnecting as needed: the stream
        resumes from the last seq seen, so nothing is missed and nothing repeats."""
        last = since
        while True:
            try:
                async with await self.connect(last) as stream:
                    async for event in stream:
                        if event.seq > last:
                            last = event.seq
                            yield event
            except (KeyholdConnectionError, websockets.ConnectionClosedError) as exc:
                # The session ended (4401) or the account may not act (4403): reconnecting
                # cannot help. Anything else (a restart, a network blip, falling behind) can;
                # too many of this member's streams open (4429) only once one closes.
                closed = exc.rcvd if isinstance(exc, websockets.ConnectionClosedError) else None
                if closed is not None and closed.code in (4401, 4403):
                    status = 401 if closed.code == 4401 else 403
                    raise KeyholdError(status, {"title": "Stream closed", "detail": closed.reason}) from exc
                full = closed is not None and closed.code == 4429
                await asyncio.sleep(STREAMS_FULL_RETRY_SECONDS if full else 0.2)


@functools.cache
def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context for one `verify` setting, shared by every session and stream of this
    process. Building one loads the CA bundle (~25 ms of CPU), which httpx otherwise does for
    each client: a process that logs in many members (the CLI's benches, a bot) paid it per
    member. `True` trusts what httpx trusts (certifi's bundle, or `SSL_CERT_FILE` /
    `SSL_CERT_DIR`) for the WebSocket too; a string is a CA file; `False` checks nothing."""
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context(verify=verify)


class Stream:
    """An open WebSocket: iterate events; `send` waits for the durable acknowledgement.

    The stream ends when `close()` is called, when the server closes the socket or the network
    fails, or when its reader task is cancelled (as `asyncio.run` does on exit). From then on
    iteration ends (after `close()` or a normal close by the server, 1000/1001) or raises
    `websockets.ConnectionClosedError`, and `next_event`, `send` and `mark`, including a `send`
    still waiting for its ack, raise `websockets.ConnectionClosed`.
    """

    def __init__(self, ws: ClientConnection, crypto: CryptoMachine | None = None) -> None:
        self._ws = ws
        self._crypto = crypto
        self._refs = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._closing = False  # close() was called
        self.ready = asyncio.Event()
        self.last_seq = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                frame = orjson.loads(raw)
                kind = frame.get("type")
                if kind in ("ack", "error", "pong") and frame.get("ref") in self._pending:
                    self._pending.pop(frame["ref"]).set_result(frame)
                elif kind == "ready":
                    self.last_seq = max(self.last_seq, int(frame["seq"]))
                    self.ready.set()
                elif kind == "error":
                    problem = frame.get("problem", {})
                    self._fail_all(KeyholdError(int(problem.get("status", 400)), problem))
                elif self._crypto is not None and str(kind).startswith("e2ee."):
                    try:
                        await self._crypto.handle(frame)  # room keys, key counts, device lists
                    except Exception as exc:  # a device event must never stop the reader
                        # e.g. a refused key upload: the next key counts event tries again
                        log.warning("a device event could not be handled: %s", type(exc).__name__)
                elif "seq" in frame:
                    self.last_seq = int(frame["seq"])
                    self._events.put_nowait(Event.from_json(frame, self._crypto))
        except websockets.ConnectionClosedError:
            pass  # an abnormal close ends the stream too; _closed_error() tells callers how
        finally:
            self._end()  # also when cancelled: nothing may be left waiting on a reader that is gone

    def _end(self) -> None:
        if self._ws.protocol.state is not State.CLOSED:
            # Cancelled (asyncio.run exiting, a cancelled close()) with the socket still open or
            # closing. Nobody will read it again: drop it now rather than leave it half-open.
            self._ws.transport.abort()
        self._fail_all(self._closed_error())
        self._events.put_nowait(None)

    def _closed_error(self) -> websockets.ConnectionClosed:
        # websockets' close_exc asserts the connection is CLOSED; after a cancellation or an
        # abort it may still be CLOSING (or OPEN), and then no close code is known anyway.
        if self._ws.protocol.state is State.CLOSED:
            return self._ws.protocol.close_exc
        return websockets.ConnectionClosedError(None, None)

    def _fail_all(self, exc: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    async def _call(self, frame: dict[str, Any]) -> dict[str, Any]:
        if self._reader.done():
            raise self._closed_error()  # the reader is gone: no answer could ever arrive
        ref = next(self._refs)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            await self._ws.send(orjson.dumps({**frame, "ref": ref}).decode())
            reply = await future
        finally:
            self._pending.pop(ref, None)  # sending failed or the caller was cancelled
        if reply["type"] == "error":
            problem = reply["problem"]
            raise KeyholdError(int(problem["status"]), problem)
        return reply

    async def send(self, conversation_id: int, text: str, idempotency_key: str | None = None) -> Message:
        frame = {
            "type": "send",
            "conversation_id": conversation_id,
            "text": text,
            "idempotency_key": idempotency_key or uuid.uuid4().hex,
        }
        return Message.from_json((await self._call(frame))["message"])

    async def mark(self, conversation_id: int, message_id: int, receipt: str = "read") -> None:
        frame = {
            "type": "receipt",
            "conversation_id": conversation_id,
            "receipt": receipt,
            "message_id": message_id,
        }
        await self._call(frame)

    async def _next(self) -> Event | None:
        """The next event, or None once the stream has ended."""
        event = await self._events.get()
        if event is None:
            self._events.put_nowait(None)  # the end marker stays for every later caller
        return event

    async def next_event(self, wait: float = 10.0) -> Event:
        event = await asyncio.wait_for(self._next(), wait)
        if event is None:
            raise self._closed_error()
        return event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while (event := await self._next()) is not None:
            yield event
        # Ends quietly after close() or a normal close; anything else is reported.
        closed = self._closed_error()
        if not self._closing and not isinstance(closed, websockets.ConnectionClosedOK):
            raise closed

    async def close(self) -> None:
        """Close the socket and stop the reader. Safe to call again, concurrently, or from any state."""
        self._closing = True
        try:
            with contextlib.suppress(Exception):  # already closed, or the network is gone: nothing to do
                await self._ws.close()
        finally:
            # Even when close() itself is cancelled midway: stop the reader, which drops a socket
            # still open and fails whatever waits on it.
            self._reader.cancel()
            # asyncio.wait, unlike awaiting the task, lets a cancellation of close() itself through.
            await asyncio.wait([self._reader])
            if not self._reader.cancelled():
                self._reader.exception()  # a reader that failed on a bad frame: seen, not logged at exit

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
