"""A device's verifications (issue 8, item 9): SAS requests to and from other devices
(`sas.SasVerification` runs each), what it knows of its contacts' identities (`trust.Trust`),
safety numbers, and the member's cross-signing keys, which the member's first e2ee device makes
and holds."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from keyhold.sdk.e2ee.cross_signing import CrossSigningKeys
from keyhold.sdk.e2ee.safety_numbers import SafetyNumber
from keyhold.sdk.e2ee.sas import (
    EXPIRY_SECONDS,
    MAX_PENDING_REQUESTS,
    PREFIX,
    REQUEST_MAX_AGE_MS,
    REQUEST_MAX_AHEAD_MS,
    SAS_METHOD,
    SasVerification,
    VerificationUnavailable,
)
from keyhold.sdk.e2ee.trust import Trust, master_public, username_of
from keyhold.sdk.errors import KeyholdError

if TYPE_CHECKING:
    from keyhold.sdk.e2ee.machine import CryptoMachine, PeerDevice

log = logging.getLogger("keyhold.sdk.verification")

Post = Callable[[str, dict[str, Any]], Awaitable[Any]]


class Verifier:
    """A device's verifications and what it knows of its contacts' identities
    (`CryptoMachine.verification`)."""

    def __init__(self, machine: CryptoMachine) -> None:
        self._machine = machine
        self.trust = Trust(machine.user_id)
        self.cross_signing: CrossSigningKeys | None = None  # held only by the device that made them
        self._sessions: dict[str, SasVerification] = {}
        self._incoming: asyncio.Queue[SasVerification] = asyncio.Queue(MAX_PENDING_REQUESTS)

    @property
    def user_id(self) -> str:
        return self._machine.user_id

    @property
    def device_id(self) -> str:
        return self._machine.device.device_id

    @property
    def device_ed25519(self) -> str:
        return self._machine.device.ed25519

    # -- state -------------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        return {
            "trust": self.trust.export(),
            "cross_signing": self.cross_signing.export_private() if self.cross_signing is not None else None,
        }

    def restore(self, saved: Any) -> None:
        if not isinstance(saved, Mapping):
            return
        self.trust = Trust.restore(self.user_id, saved.get("trust"))
        if isinstance(saved.get("cross_signing"), Mapping):
            self.cross_signing = CrossSigningKeys.from_private(self.user_id, saved["cross_signing"])

    def observe(self, user_id: str, answer: Mapping[str, Any], devices: Iterable[PeerDevice]) -> None:
        """Called with every keys/query answer the device gets (`CryptoMachine.devices_of`)."""
        master_keys = answer.get("master_keys")
        if self.trust.observe(
            user_id, master_keys.get(user_id) if isinstance(master_keys, Mapping) else None, devices
        ):
            self._machine.on_change()

    def check(self, user_ids: Iterable[str]) -> None:
        """Before encrypting to these members: IdentityChanged if one's identity changed."""
        self.trust.check(user_ids)

    def accept_identity(self, user_id: str, expected: list[str] | None = None) -> bool:
        if not self.trust.accept(user_id, expected):
            return False
        self._machine.on_change()
        return True

    def master_of(self, user_id: str) -> str | None:
        if user_id == self.user_id:
            return self.own_master()
        contact = self.trust.contacts.get(user_id)
        return contact.seen_master if contact is not None else None

    def own_master(self) -> str | None:
        return self.cross_signing.public("master") if self.cross_signing is not None else None

    async def device(self, user_id: str, device_id: str) -> PeerDevice | None:
        for refresh in (False, True):
            for device in (await self._machine.devices_of([user_id], refresh)).get(user_id, []):
                if device.device_id == device_id:
                    return device
        return None

    def verified(self, user_id: str, device_id: str, ed25519: str, master: str | None) -> None:
        self.trust.mark_verified(user_id, device_id, ed25519, master)
        self._machine.on_change()

    async def send(self, event_type: str, user_id: str, devices: list[str], content: dict[str, Any]) -> None:
        body = {"messages": {user_id: dict.fromkeys(devices, content)}}
        await self._machine._put(f"/e2ee/sendToDevice/{event_type}/{uuid.uuid4().hex}", body)

    # -- SAS -----------------------------------------------------------------------------------

    async def start(self, user_id: str, device_id: str | None = None) -> SasVerification:
        devices = [
            d.device_id
            for d in (await self._machine.devices_of([user_id], refresh=True)).get(user_id, [])
            if not (user_id == self.user_id and d.device_id == self.device_id)
        ]
        if device_id is not None:
            devices = [d for d in devices if d == device_id]
        if not devices:
            which = f"no e2ee device {device_id}" if device_id else "no other e2ee device"
            raise VerificationUnavailable(f"{username_of(user_id)} has {which}")
        verification = SasVerification(self, secrets.token_hex(16), user_id, devices, incoming=False)
        self._keep(verification)
        await verification._send(
            "request",
            {"from_device": self.device_id, "methods": [SAS_METHOD], "timestamp": int(time.time() * 1000)},
        )
        return verification

    async def next_request(self, timeout: float = 30.0) -> SasVerification:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while True:
                verification = await self._incoming.get()
                if verification.state == "incoming":
                    return verification

    def _keep(self, verification: SasVerification) -> None:
        now = time.monotonic()
        for txn, old in list(self._sessions.items()):
            if now - old._created > 2 * EXPIRY_SECONDS:
                del self._sessions[txn]
        self._sessions[verification.transaction_id] = verification

    async def handle(self, event: Mapping[str, Any]) -> None:
        """An `m.key.verification.*` to-device event (plaintext). Whatever it holds, it ends
        here: a malformed or unexpected one at most cancels its own verification."""
        kind, content, sender = (
            str(event.get("type", "")).removeprefix(PREFIX),
            event.get("content"),
            event.get("sender"),
        )
        if not isinstance(content, Mapping) or not isinstance(sender, str):
            return
        txn = content.get("transaction_id")
        if not isinstance(txn, str) or not 0 < len(txn) <= 255:
            return
        if kind == "request":
            await self._on_request(sender, txn, content)
            return
        verification = self._sessions.get(txn)
        if verification is None or verification.other_user_id != sender:
            return  # an unknown transaction (a to-device event does not say which device sent it)
        await verification.receive(kind, content)

    async def _on_request(self, sender: str, txn: str, content: Mapping[str, Any]) -> None:
        device, methods, timestamp = (
            content.get("from_device"),
            content.get("methods"),
            content.get("timestamp"),
        )
        if (
            txn in self._sessions
            or not isinstance(device, str)
            or not device
            or not isinstance(methods, list)
        ):
            return
        if SAS_METHOD not in methods or (sender == self.user_id and device == self.device_id):
            return
        now = int(time.time() * 1000)
        if (
            not isinstance(timestamp, int)
            or not -REQUEST_MAX_AHEAD_MS <= now - timestamp <= REQUEST_MAX_AGE_MS
        ):
            return  # stale or from the future: Matrix says ignore it
        # One unanswered request per member: a contact sending many cannot crowd out others'
        # requests nor replace the one the member is looking at.
        if any(
            v.other_user_id == sender
            and v.incoming
            and v.state == "incoming"
            and time.monotonic() - v._created < EXPIRY_SECONDS
            for v in self._sessions.values()
        ):
            return
        # The device it names must be one of the sender's, as published (and logged).
        published = (await self._machine.devices_of([sender])).get(sender, [])
        if not any(d.device_id == device and d.log_problem is None for d in published):
            return
        verification = SasVerification(self, txn, sender, [device], incoming=True)
        try:
            self._incoming.put_nowait(verification)
        except asyncio.QueueFull:
            return  # nobody is taking requests: not kept
        self._keep(verification)

    # -- safety numbers ------------------------------------------------------------------------

    async def safety_number(self, user_id: str) -> SafetyNumber:
        theirs = (await self._machine.devices_of([user_id], refresh=True)).get(user_id, [])
        if not theirs:
            raise VerificationUnavailable(f"{username_of(user_id)} has no end-to-end encryption device")
        if (problem := self._machine.log_problem_of(user_id)) is not None:
            raise VerificationUnavailable(f"{username_of(user_id)}'s keys do not check out: {problem}")
        their_master = self.master_of(user_id)
        if their_master is None:
            raise VerificationUnavailable(f"{username_of(user_id)} has no master key (cross-signing) yet")
        mine = self.own_master()
        if mine is None:
            answer = await self._machine._post("/e2ee/keys/query", {"device_keys": {self.user_id: []}})
            if (self.user_id, "master") in await self._machine.key_log.check_answer(answer):
                raise VerificationUnavailable("your master key does not check out against the key-transparency log")
            mine = master_public((answer.get("master_keys") or {}).get(self.user_id), self.user_id)
        if mine is None:
            raise VerificationUnavailable("you have no master key (cross-signing) yet")
        return SafetyNumber(self.user_id, mine, user_id, their_master)

    # -- cross-signing -------------------------------------------------------------------------

    async def bootstrap(self) -> None:
        """A member's first e2ee device makes the member's cross-signing keys, publishes them,
        signs itself with the self-signing key (and the master key with its device key), and
        keeps the private keys in its state. Other devices find a master key and do nothing."""
        if self.cross_signing is not None:
            return
        try:
            answer = await self._machine._post("/e2ee/keys/query", {"device_keys": {self.user_id: []}})
            if master_public((answer.get("master_keys") or {}).get(self.user_id), self.user_id) is not None:
                return
            await self._publish(CrossSigningKeys(self.user_id), None)
        except KeyholdError as exc:
            # Another device of the member published keys meanwhile (401: replacing needs the
            # password; 409: changed meanwhile), or the account may not act: no cross-signing.
            log.info("cross-signing not set up on this device: %s", exc.status)

    async def reset_cross_signing(self, password: str) -> None:
        """New cross-signing keys for the member, replacing the published ones (needs the
        password). Contacts see an identity change; their verifications of the old key end."""
        await self._publish(CrossSigningKeys(self.user_id), password)

    async def _publish(self, keys: CrossSigningKeys, password: str | None) -> None:
        body: dict[str, Any] = keys.upload_body()
        if password is not None:
            body["auth"] = {"type": "m.login.password", "password": password}
        await self._machine._post("/e2ee/keys/device_signing/upload", body)
        self.cross_signing = keys
        self._machine.on_change()  # the private keys are kept before anything else
        master = keys.public("master")
        signatures = {
            self.device_id: keys.sign_with("self_signing", self._machine.device.device_keys()),
            master: self._machine.device.sign(keys.key_object("master")),
        }
        await self._machine._post("/e2ee/keys/signatures/upload", {self.user_id: signatures})

    async def sign_master(self, user_id: str, master: str) -> None:
        """After a verification of another member's master key: sign it with the user-signing
        key (as Matrix clients do), if this device holds it. Best effort."""
        if self.cross_signing is None or user_id == self.user_id:
            return
        try:
            answer = await self._machine._post("/e2ee/keys/query", {"device_keys": {user_id: []}})
            obj = (answer.get("master_keys") or {}).get(user_id)
            if isinstance(obj, Mapping) and master_public(obj, user_id) == master:
                signed = self.cross_signing.sign_with("user_signing", obj)
                await self._machine._post("/e2ee/keys/signatures/upload", {user_id: {master: signed}})
        except (KeyholdError, ValueError) as exc:
            log.info("could not publish the signature of a verified master key: %s", type(exc).__name__)
