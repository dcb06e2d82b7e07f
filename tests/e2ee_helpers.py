"""Members with a real Olm device (vodozemac) for tests of the key directory, and the raw
Matrix-shaped calls (no SDK wrapper in between: the tests are about the wire)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import vodozemac

from conftest import PASSWORD, Server, raw, unique
from keyhold.sdk import Client
from keyhold.sdk.e2ee.device import OlmDevice


@dataclass
class Member:
    client: Client
    device: OlmDevice

    @property
    def user_id(self) -> str:
        assert self.client.user_id is not None
        return self.client.user_id

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await raw(self.client, "POST", f"/e2ee/{path}", json=body)

    async def upload(self, one_time_keys: int = 0, fallback: bool = False) -> httpx.Response:
        body: dict[str, Any] = {"device_keys": self.device.device_keys()}
        if one_time_keys:
            body["one_time_keys"] = self.device.new_one_time_keys(one_time_keys)
        if fallback:
            body["fallback_keys"] = self.device.new_fallback_key()
        return await self.post("keys/upload", body)

    async def query(self, *user_ids: str) -> dict[str, Any]:
        response = await self.post("keys/query", {"device_keys": {uid: [] for uid in user_ids}})
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def claim(self, wanted: dict[str, dict[str, str]]) -> dict[str, Any]:
        response = await self.post("keys/claim", {"one_time_keys": wanted, "timeout": 10000})
        assert response.status_code == 200, response.text
        return dict(response.json())


async def member_with_device(server: Server) -> Member:
    """A member whose device keys the test makes (not the SDK's own e2ee device)."""
    client = await Client.register(server.url, unique(), PASSWORD, birthdate="1990-05-17", e2ee=False)
    assert client.user_id is not None and client.device_id is not None
    return Member(client, OlmDevice(client.user_id, client.device_id))


async def published(server: Server, one_time_keys: int = 0, fallback: bool = False) -> Member:
    member = await member_with_device(server)
    response = await member.upload(one_time_keys, fallback)
    assert response.status_code == 200, response.text
    return member


async def sharing(server: Server, count: int) -> list[Member]:
    """`count` members with published keys, all in one group conversation."""
    members = [await published(server) for _ in range(count)]
    others = [m.client.username for m in members[1:]]
    await members[0].client.start_conversation(others, kind="group" if len(others) > 1 else None)
    return members


class Megolm:
    """A sender's Megolm session (vodozemac) and the matching inbound session a recipient
    would get over Olm: here handed over directly, as the tests are about the server."""

    def __init__(self) -> None:
        self.outbound = vodozemac.GroupSession()
        self.inbound = vodozemac.InboundGroupSession(self.outbound.session_key)

    def content(self, plaintext: str, room_id: str = "!1:keyhold.local") -> dict[str, Any]:
        payload = json.dumps({"type": "m.room.message", "room_id": room_id, "content": {"body": plaintext}})
        message = self.outbound.encrypt(payload.encode())
        return {
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": message.to_base64(),
            "session_id": self.outbound.session_id,
            "sender_key": "unused-by-the-server",
            "device_id": "unused-by-the-server",
        }

    def open(self, content: dict[str, Any]) -> str:
        decrypted = self.inbound.decrypt(vodozemac.MegolmMessage.from_base64(content["ciphertext"]))
        return str(json.loads(decrypted.plaintext)["content"]["body"])
