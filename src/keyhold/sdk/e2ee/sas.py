"""Interactive SAS verification of one other device, over to-device messages in Matrix's
`m.key.verification.*` / `m.sas.v1` shapes, on vodozemac's `Sas`.

The SAS flow, to-device, in the clear (as Matrix sends it):

    requester                                 responder
    request   (to one or every device) ─────►
              ◄───────────────────────────── ready     (the first device to answer wins;
                                                        the others get cancel m.accepted)
    start     (m.sas.v1) ─────────────────►
              ◄───────────────────────────── accept    (commitment = sha256(its SAS key ‖
                                                        canonical JSON of start))
    key ──────────────────────────────────►
              ◄───────────────────────────── key       (checked against the commitment)
        (both show the same decimals and emoji; the users compare them)
    mac ──────────────────────────────────►  ◄── mac  (HMAC of the device key and, when this
                                                       device holds it, the master key)
    done ─────────────────────────────────►  ◄── done

Any mismatch, unexpected step, expiry or "no" from a user ends it with
`m.key.verification.cancel` and one of Matrix's codes. A verification whose MACs check marks
the other device, and the other member's master key if it was MAC-ed, verified on this device.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import canonicaljson
import vodozemac
from cryptography.hazmat.primitives import hashes

from keyhold.crypto.signed_json import encode_base64
from keyhold.sdk.e2ee.trust import username_of
from keyhold.sdk.errors import KeyholdError

if TYPE_CHECKING:
    from keyhold.sdk.e2ee.verification import Verifier

log = logging.getLogger("keyhold.sdk.verification")

PREFIX = "m.key.verification."
SAS_METHOD = "m.sas.v1"
KEY_AGREEMENT = "curve25519-hkdf-sha256"
HASH = "sha256"
MAC_METHOD = "hkdf-hmac-sha256.v2"
SAS_TYPES = ["decimal", "emoji"]
EXPIRY_SECONDS = 600  # Matrix: a verification that does not complete in 10 minutes times out
REQUEST_MAX_AGE_MS = 10 * 60 * 1000  # requests older than this, or ...
REQUEST_MAX_AHEAD_MS = 5 * 60 * 1000  # ... this far in the future, are ignored (Matrix)
MAX_PENDING_REQUESTS = 64

# Matrix's SAS emoji table (data-definitions/sas-emoji.json of the specification).
EMOJI: tuple[tuple[str, str], ...] = (
    ("🐶", "Dog"),
    ("🐱", "Cat"),
    ("🦁", "Lion"),
    ("🐎", "Horse"),
    ("🦄", "Unicorn"),
    ("🐷", "Pig"),
    ("🐘", "Elephant"),
    ("🐰", "Rabbit"),
    ("🐼", "Panda"),
    ("🐓", "Rooster"),
    ("🐧", "Penguin"),
    ("🐢", "Turtle"),
    ("🐟", "Fish"),
    ("🐙", "Octopus"),
    ("🦋", "Butterfly"),
    ("🌷", "Flower"),
    ("🌳", "Tree"),
    ("🌵", "Cactus"),
    ("🍄", "Mushroom"),
    ("🌏", "Globe"),
    ("🌙", "Moon"),
    ("☁️", "Cloud"),
    ("🔥", "Fire"),
    ("🍌", "Banana"),
    ("🍎", "Apple"),
    ("🍓", "Strawberry"),
    ("🌽", "Corn"),
    ("🍕", "Pizza"),
    ("🎂", "Cake"),
    ("❤️", "Heart"),
    ("😀", "Smiley"),
    ("🤖", "Robot"),
    ("🎩", "Hat"),
    ("👓", "Glasses"),
    ("🔧", "Spanner"),
    ("🎅", "Santa"),
    ("👍", "Thumbs Up"),
    ("☂️", "Umbrella"),
    ("⌛", "Hourglass"),
    ("⏰", "Clock"),
    ("🎁", "Gift"),
    ("💡", "Light Bulb"),
    ("📕", "Book"),
    ("✏️", "Pencil"),
    ("📎", "Paperclip"),
    ("✂️", "Scissors"),
    ("🔒", "Lock"),
    ("🔑", "Key"),
    ("🔨", "Hammer"),
    ("☎️", "Telephone"),
    ("🏁", "Flag"),
    ("🚂", "Train"),
    ("🚲", "Bicycle"),
    ("✈️", "Aeroplane"),
    ("🚀", "Rocket"),
    ("🏆", "Trophy"),
    ("⚽", "Ball"),
    ("🎸", "Guitar"),
    ("🎺", "Trumpet"),
    ("🔔", "Bell"),
    ("⚓", "Anchor"),
    ("🎧", "Headphones"),
    ("📁", "Folder"),
    ("📌", "Pin"),
)

FINISHED = ("done", "cancelled")

class VerificationUnavailable(KeyholdError):
    """Verification cannot be done (yet): no e2ee device, no master key, no such device, or
    a step asked for in the wrong state. Raised on this side; nothing was sent."""

    def __init__(self, detail: str) -> None:
        super().__init__(409, {"title": "Verification unavailable", "detail": detail})


class VerificationCancelled(KeyholdError):
    """The verification ended without success: `.code` is Matrix's cancel code (`m.user`,
    `m.timeout`, `m.mismatched_commitment`, `m.key_mismatch`, ...), `.reason` the text."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(
            409, {"title": "Verification cancelled", "detail": f"{reason} ({code})", "code": code}
        )
        self.code = code
        self.reason = reason


def _sha256_b64(data: bytes) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return encode_base64(digest.finalize())


def _canonical(content: Mapping[str, Any]) -> bytes:
    try:
        return bytes(canonicaljson.encode_canonical_json(dict(content)))
    except (TypeError, ValueError, UnicodeError, RecursionError) as exc:
        raise _Invalid("the start event has no canonical JSON form") from exc


class _Invalid(Exception):
    """A verification event that is malformed (cancelled with m.invalid_message)."""


# -- SAS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SasCodes:
    """What the two users compare: three 4-digit numbers, and seven emoji (symbol, name)
    from Matrix's table."""

    decimals: tuple[int, int, int]
    emoji: list[tuple[str, str]]


class SasVerification:
    """One SAS verification with one device of another member (or another of one's own).

    `state` goes: `requested` (sent, no device answered yet) or `incoming` (received, not yet
    accepted) → `ready` → `started` → `accepted` → `keys_exchanged` (`codes()` known) →
    `confirmed` (this side said they match and sent its MAC) → `verified` (the other side's
    MAC checked: its keys are verified here) → `done` (both sent done); or `cancelled`, with
    `cancel_code` and `cancel_reason`."""

    def __init__(
        self, verifier: Verifier, transaction_id: str, other_user_id: str, targets: list[str], incoming: bool
    ) -> None:
        self._verifier = verifier
        self.transaction_id = transaction_id
        self.other_user_id = other_user_id
        self.other_device: str | None = targets[0] if incoming else None
        self.incoming = incoming
        self.state = "incoming" if incoming else "requested"
        self.cancel_code: str | None = None
        self.cancel_reason: str | None = None
        self._targets = targets
        self._created = time.monotonic()
        self._we_started = False
        self._start: dict[str, Any] | None = None
        self._commitment: str | None = None
        self._sas: vodozemac.Sas | None = vodozemac.Sas()
        self._sas_key = str(self._sas.public_key.to_base64())
        self._established: vodozemac.EstablishedSas | None = None
        self._codes: SasCodes | None = None
        self._their_device_key: str | None = None  # their device's Ed25519 key, as published
        self._their_master: str | None = None  # their master key, as published
        self._their_mac: Mapping[str, Any] | None = None
        self._done_sent = False
        self._done_received = False
        self._seen: set[str] = set()  # event types received: each counts once (replays are ignored)
        self._changed = asyncio.Event()
        self._send_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<SasVerification {self.transaction_id} with {self.other_user_id}/{self.other_device} {self.state}>"

    @property
    def other_user(self) -> str:
        """The other member's username."""
        return username_of(self.other_user_id)

    # -- what the app calls ------------------------------------------------------------------

    async def accept(self) -> None:
        """Accept an incoming request (sends `ready`); the requester then starts SAS."""
        self._require(("incoming",), "accept")
        self.state = "ready"
        self._notify()
        await self._send("ready", {"from_device": self._verifier.device_id, "methods": [SAS_METHOD]})

    async def codes(self, timeout: float = 30.0) -> SasCodes:  # noqa: ASYNC109 (the API the chat client uses)
        """The short authentication string, once both SAS keys are exchanged. Raises
        VerificationCancelled if the verification ends first, or when `timeout` passes (then
        the verification is cancelled with m.timeout)."""
        await self._wait(lambda: self._codes is not None, timeout, "no SAS codes in time")
        assert self._codes is not None
        return self._codes

    async def confirm(self) -> None:
        """The user says both screens show the same codes: send this device's MAC."""
        self._require(("keys_exchanged",), "confirm")
        self.state = "confirmed"
        self._notify()
        await self._send("mac", self._our_mac())
        await self._check_their_mac()

    async def cancel(self, reason: str = "the user cancelled", code: str = "m.user") -> None:
        """End the verification (the user says no, or the codes differ: `code="m.mismatched_sas"`)."""
        await self._cancel(code, reason)

    async def done(self, timeout: float = 30.0) -> bool:  # noqa: ASYNC109 (the API the chat client uses)
        """Whether the verification succeeded: True once both sides are done (or, if the other
        side's `done` does not come in time, once its MAC checked here); False if it was
        cancelled, or timed out before the MACs (then it is cancelled with m.timeout)."""
        try:
            await self._wait(
                lambda: self.state == "done", timeout, "the verification did not complete in time"
            )
        except VerificationCancelled:
            return self.state == "verified"
        return True

    # -- waiting -------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _require(self, states: tuple[str, ...], action: str) -> None:
        if self.state == "cancelled":
            raise VerificationCancelled(self.cancel_code or "m.user", self.cancel_reason or "cancelled")
        if self.state not in states:
            raise VerificationUnavailable(f"cannot {action} a verification that is {self.state}")

    async def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                while not ready():
                    if self.state == "cancelled":
                        break
                    await self._changed.wait()
        except TimeoutError:
            if self.state != "verified":
                await self._cancel("m.timeout", what)
        if not ready():
            raise VerificationCancelled(self.cancel_code or "m.timeout", self.cancel_reason or what)

    # -- sending -------------------------------------------------------------------------------

    async def _send(self, kind: str, content: dict[str, Any], devices: list[str] | None = None) -> None:
        targets = devices or ([self.other_device] if self.other_device else self._targets)
        async with self._send_lock:  # in order: a MAC leaves before the done that follows it
            await self._verifier.send(
                PREFIX + kind, self.other_user_id, targets, {**content, "transaction_id": self.transaction_id}
            )

    async def _cancel(self, code: str, reason: str) -> None:
        if self.state in FINISHED:
            return
        self.state, self.cancel_code, self.cancel_reason = "cancelled", code, reason
        self._sas = self._established = None
        self._notify()
        try:
            await self._send("cancel", {"code": code, "reason": reason})
        except KeyholdError as exc:
            log.warning("could not send a verification cancel: %s", exc.status)

    # -- receiving -------------------------------------------------------------------------------

    async def receive(self, kind: str, content: Mapping[str, Any]) -> None:
        handler = {
            "ready": self._on_ready,
            "start": self._on_start,
            "accept": self._on_accept,
            "key": self._on_key,
            "mac": self._on_mac,
            "done": self._on_done,
            "cancel": self._on_cancel,
        }.get(kind)
        if handler is None or self.state in FINISHED or kind in self._seen:
            return  # an event type this flow does not use, a finished flow, or a replay
        self._seen.add(kind)
        if time.monotonic() - self._created > EXPIRY_SECONDS and kind != "cancel":
            await self._cancel("m.timeout", "the verification took longer than 10 minutes")
            return
        try:
            await handler(content)
        except _Invalid as exc:
            await self._cancel("m.invalid_message", str(exc))
        except KeyholdError as exc:  # the server refused a step: end it here
            if self.state not in FINISHED:
                self.state, self.cancel_code = "cancelled", "m.unexpected_message"
                self.cancel_reason = f"a verification step could not be sent ({exc.status})"
                self._notify()

    async def _unexpected(self, kind: str) -> None:
        await self._cancel("m.unexpected_message", f"unexpected m.key.verification.{kind} while {self.state}")

    async def _on_ready(self, content: Mapping[str, Any]) -> None:
        if self.incoming or self.state != "requested":
            return await self._unexpected("ready")
        device, methods = content.get("from_device"), content.get("methods")
        if not isinstance(device, str) or device not in self._targets:
            self._seen.discard("ready")  # not from a device asked: ignored
            return None
        if not isinstance(methods, list):
            raise _Invalid("ready without methods")
        self.other_device, self.state = device, "ready"
        others = [d for d in self._targets if d != device]
        if others:
            await self._send("cancel", {"code": "m.accepted", "reason": f"accepted on {device}"}, others)
        if SAS_METHOD not in methods:
            return await self._cancel("m.unknown_method", "the other device does not offer m.sas.v1")
        self._start = {
            "from_device": self._verifier.device_id,
            "method": SAS_METHOD,
            "key_agreement_protocols": [KEY_AGREEMENT],
            "hashes": [HASH],
            "message_authentication_codes": [MAC_METHOD],
            "short_authentication_string": list(SAS_TYPES),
            "transaction_id": self.transaction_id,
        }
        self._we_started, self.state = True, "started"
        self._notify()
        await self._send("start", self._start)
        return None

    async def _on_start(self, content: Mapping[str, Any]) -> None:
        if self.incoming and self.state == "ready":
            pass
        elif not self.incoming and self.state == "started" and self._we_started:
            # Both started: Matrix keeps the start of the smaller user id (then device id).
            mine = (self._verifier.user_id, self._verifier.device_id)
            if mine < (self.other_user_id, self.other_device or ""):
                return None
            self._we_started = False
        else:
            return await self._unexpected("start")
        if content.get("method") != SAS_METHOD:
            return await self._cancel("m.unknown_method", "only m.sas.v1 is supported")
        offered = {
            name: content.get(name)
            for name in (
                "key_agreement_protocols",
                "hashes",
                "message_authentication_codes",
                "short_authentication_string",
            )
        }
        if not all(isinstance(value, list) for value in offered.values()):
            raise _Invalid("start without the m.sas.v1 lists")
        sas = [t for t in SAS_TYPES if t in (offered["short_authentication_string"] or [])]
        if (
            KEY_AGREEMENT not in (offered["key_agreement_protocols"] or [])
            or HASH not in (offered["hashes"] or [])
            or MAC_METHOD not in (offered["message_authentication_codes"] or [])
            or not sas
        ):
            return await self._cancel("m.unknown_method", f"needs {KEY_AGREEMENT}, {HASH}, {MAC_METHOD}")
        self._start = dict(content)
        commitment = _sha256_b64(self._sas_key.encode() + _canonical(self._start))
        self.state = "accepted"
        self._notify()
        await self._send(
            "accept",
            {
                "method": SAS_METHOD,
                "key_agreement_protocol": KEY_AGREEMENT,
                "hash": HASH,
                "message_authentication_code": MAC_METHOD,
                "short_authentication_string": sas,
                "commitment": commitment,
            },
        )
        return None

    async def _on_accept(self, content: Mapping[str, Any]) -> None:
        if not self._we_started or self.state != "started":
            return await self._unexpected("accept")
        commitment = content.get("commitment")
        sas = content.get("short_authentication_string")
        if not isinstance(commitment, str) or not isinstance(sas, list):
            raise _Invalid("accept without commitment or SAS methods")
        if (
            content.get("method", SAS_METHOD) != SAS_METHOD
            or content.get("key_agreement_protocol") != KEY_AGREEMENT
            or content.get("hash") != HASH
            or content.get("message_authentication_code") != MAC_METHOD
            or not sas
            or any(t not in SAS_TYPES for t in sas)
        ):
            return await self._cancel("m.unknown_method", "the accept chose what was not offered")
        self._commitment, self.state = commitment, "accepted"
        self._notify()
        await self._send("key", {"key": self._sas_key})
        return None

    async def _on_key(self, content: Mapping[str, Any]) -> None:
        if self.state != "accepted" or (self._we_started and self._commitment is None):
            return await self._unexpected("key")
        key = content.get("key")
        if not isinstance(key, str):
            raise _Invalid("key without a key")
        if self._we_started:
            assert self._start is not None
            if _sha256_b64(key.encode() + _canonical(self._start)) != self._commitment:
                return await self._cancel(
                    "m.mismatched_commitment", "the other device's SAS key does not match its commitment"
                )
        device = await self._verifier.device(self.other_user_id, self.other_device or "")
        if device is None:
            return await self._cancel("m.key_mismatch", "the other device has no published keys")
        if self.state != "accepted" or self._sas is None:
            return None  # cancelled meanwhile
        try:
            self._established = self._sas.diffie_hellman(vodozemac.Curve25519PublicKey.from_base64(key))
        except (ValueError, vodozemac.KeyException) as exc:
            raise _Invalid("the SAS key is not a Curve25519 key") from exc
        self._sas = None
        self._their_device_key = device.ed25519
        self._their_master = self._verifier.master_of(self.other_user_id)
        me = f"{self._verifier.user_id}|{self._verifier.device_id}|{self._sas_key}"
        them = f"{self.other_user_id}|{self.other_device}|{key}"
        first, second = (me, them) if self._we_started else (them, me)
        sas_bytes = self._established.bytes(
            f"MATRIX_KEY_VERIFICATION_SAS|{first}|{second}|{self.transaction_id}"
        )
        d1, d2, d3 = sas_bytes.decimals
        self._codes = SasCodes((d1, d2, d3), [EMOJI[i] for i in sas_bytes.emoji_indices])
        self.state = "keys_exchanged"
        self._notify()
        if not self._we_started:
            await self._send("key", {"key": self._sas_key})
        return None

    async def _on_mac(self, content: Mapping[str, Any]) -> None:
        if self.state not in ("keys_exchanged", "confirmed"):
            return await self._unexpected("mac")
        self._their_mac = content  # checked once this side's user confirmed too
        await self._check_their_mac()
        return None

    async def _on_done(self, _content: Mapping[str, Any]) -> None:
        if self.state not in ("keys_exchanged", "confirmed", "verified"):
            return await self._unexpected("done")
        self._done_received = True
        self._finish()
        return None

    async def _on_cancel(self, content: Mapping[str, Any]) -> None:
        code, reason = content.get("code"), content.get("reason")
        self.state = "cancelled"
        self.cancel_code = code if isinstance(code, str) else "m.user"
        self.cancel_reason = (
            f"cancelled by the other side: {reason if isinstance(reason, str) else self.cancel_code}"
        )
        self._sas = self._established = None
        self._notify()

    # -- MACs ----------------------------------------------------------------------------------

    def _mac_info(self, sender: tuple[str, str], receiver: tuple[str, str]) -> str:
        return f"MATRIX_KEY_VERIFICATION_MAC{sender[0]}{sender[1]}{receiver[0]}{receiver[1]}{self.transaction_id}"

    def _our_mac(self) -> dict[str, Any]:
        assert self._established is not None
        base = self._mac_info(
            (self._verifier.user_id, self._verifier.device_id), (self.other_user_id, self.other_device or "")
        )
        keys = {f"ed25519:{self._verifier.device_id}": self._verifier.device_ed25519}
        master = self._verifier.own_master()
        if master is not None:
            keys[f"ed25519:{master}"] = master  # only a device that holds it vouches for it
        mac = {key_id: self._established.calculate_mac(key, base + key_id) for key_id, key in keys.items()}
        return {"mac": mac, "keys": self._established.calculate_mac(",".join(sorted(mac)), base + "KEY_IDS")}

    async def _check_their_mac(self) -> None:
        if self.state != "confirmed" or self._their_mac is None or self._established is None:
            return
        content, self._their_mac = self._their_mac, None
        mac, keys = content.get("mac"), content.get("keys")
        if (
            not isinstance(mac, Mapping)
            or not isinstance(keys, str)
            or not all(isinstance(v, str) for v in mac.values())
        ):
            return await self._cancel("m.invalid_message", "a MAC event without mac and keys")
        base = self._mac_info(
            (self.other_user_id, self.other_device or ""), (self._verifier.user_id, self._verifier.device_id)
        )
        try:
            self._established.verify_mac(",".join(sorted(mac)), base + "KEY_IDS", keys)
        except ValueError:
            return await self._cancel("m.key_mismatch", "the MAC of the key list does not match")
        device_key_id = f"ed25519:{self.other_device}"
        master_key_id = f"ed25519:{self._their_master}" if self._their_master else None
        verified_master: str | None = None
        for key_id, tag in mac.items():
            if key_id == device_key_id:
                key = self._their_device_key
            elif key_id == master_key_id:
                key = verified_master = self._their_master
            else:
                continue  # a key this side does not know of is not verified, nor held against it
            try:
                self._established.verify_mac(str(key), base + key_id, tag)
            except ValueError:
                return await self._cancel("m.key_mismatch", f"the MAC of {key_id} does not match")
        if device_key_id not in mac or self._their_device_key is None:
            return await self._cancel("m.key_mismatch", "the other device did not MAC its own key")
        self.state = "verified"
        self._notify()
        self._verifier.verified(
            self.other_user_id, self.other_device or "", self._their_device_key, verified_master
        )
        await self._send("done", {})
        self._done_sent = True
        self._finish()
        if verified_master is not None:
            await self._verifier.sign_master(self.other_user_id, verified_master)
        return None

    def _finish(self) -> None:
        if self.state == "verified" and self._done_sent and self._done_received:
            self.state = "done"
            self._established = None
            self._notify()
