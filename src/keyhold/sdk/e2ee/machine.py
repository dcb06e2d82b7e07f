"""A device's end-to-end encryption, on vodozemac: Olm sessions with other devices, Megolm
sessions per conversation, and every check Matrix leaves to the client.

What it checks, because the server is not trusted to:
- a room key arrives Olm-encrypted to this device's Curve25519 key, and its payload names
  this member and this device's Ed25519 key as recipient, and its sender and the sender
  device's Ed25519 key as published for the device whose Curve25519 key sent it;
- a message decrypts with a room key that came that way from the member the server says sent
  it, its plaintext names the conversation it was delivered in, and its Megolm index was not
  seen before under another message id (a replay).

Outbound Megolm sessions rotate whenever the set of devices they reach changes (a member
joins or leaves, a device is added or removed), after 100 messages and after 7 days. A device
reads from its creation on: nobody shares older room keys with it.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import vodozemac

import keyhold.crypto.franking as franking
from keyhold.crypto.signed_json import decode_base64, encode_base64, signing_bytes, verify_signed_json
from keyhold.sdk.e2ee.device import MEGOLM_ALGORITHM, OLM_ALGORITHM, ONE_TIME_KEY_ALGORITHM, OlmDevice
from keyhold.sdk.e2ee.sas import PREFIX as VERIFICATION_PREFIX
from keyhold.sdk.e2ee.transparency import KeyLogView, KeyTransparencyError
from keyhold.sdk.e2ee.verification import Verifier
from keyhold.sdk.errors import KeyholdError

ROTATE_AFTER_MESSAGES = 100
ROTATE_AFTER_SECONDS = 7 * 24 * 3600
# Keep this many one-time keys published (vodozemac holds at most 50).
ONE_TIME_KEYS_TARGET = 50
# Where an Olm payload carries the sender's newest key-log head (other clients ignore it).
KEY_LOG_HEAD_FIELD = "keyhold.key_log_head"
# Bytes of to-device messages per request: under the server's 64 KiB body limit.
TO_DEVICE_BUDGET = 48 * 1024

Post = Callable[[str, dict[str, Any]], Awaitable[Any]]
Put = Callable[[str, dict[str, Any]], Awaitable[Any]]
Get = Callable[[str], Awaitable[Any]]


class UndecryptableError(Exception):
    """A message this device cannot read, and why (no room key, a check failed)."""


@dataclass(frozen=True)
class Decrypted:
    text: str
    content: dict[str, Any]  # the decrypted event content (what a franked report reveals)
    sender_device: str | None  # the device whose room key opened it, if its keys are known


@dataclass(frozen=True)
class PeerDevice:
    user_id: str
    device_id: str
    ed25519: str
    curve25519: str
    # Why its keys do not check out against the key-transparency log (None: they do). Such a
    # device is neither encrypted to nor trusted as the sender of a room key.
    log_problem: str | None = None


@dataclass
class Outbound:
    session: vodozemac.GroupSession
    recipients: frozenset[tuple[str, str, str]]  # (user, device, curve25519)
    created: float
    sent: int = 0


@dataclass
class Inbound:
    session: vodozemac.InboundGroupSession
    room_id: str
    sender: str
    sender_key: str  # the Curve25519 key of the device that shared it
    seen: dict[int, str] = field(default_factory=dict)  # message index -> event id


class CryptoMachine:
    def __init__(self, device: OlmDevice, post: Post, put: Put, get: Get | None = None) -> None:
        self.device = device
        self._post = post
        self._put = put
        self._get = get
        # The key-transparency log as this device saw it (pinned service key, newest head).
        self.key_log = KeyLogView()
        self.key_log.fetch_consistency = self._consistency_proof
        self._olm: dict[str, list[vodozemac.Session]] = {}  # by the peer's Curve25519 key
        self._outbound: dict[str, Outbound] = {}  # by room id
        self._inbound: dict[tuple[str, str], Inbound] = {}  # by (room id, session id)
        self._devices: dict[str, dict[str, PeerDevice]] = {}  # keys/query answers, by user
        self._log_problems: dict[str, str | None] = {}  # why a member's keys fail the key log
        self._valid_signatures: set[tuple[str, bytes]] = set()  # device self-signatures checked
        # The last stream seq whose device events (to-device messages) were handled.
        self.since = 0
        # Called after every change of the sessions or the account (the client saves them).
        self.on_change: Callable[[], None] = lambda: None
        # SAS verification, contacts' identities (trust on first use), cross-signing keys.
        self.verification = Verifier(self)

    # -- state -------------------------------------------------------------------------------

    def export(self, pickle_key: bytes) -> dict[str, Any]:
        """Everything this device must keep, its sessions pickled (encrypted) by vodozemac."""
        return {
            "user_id": self.user_id,
            "device_id": self.device.device_id,
            "account": self.device.account.pickle(pickle_key),
            "since": self.since,
            "olm": {key: [s.pickle(pickle_key) for s in sessions] for key, sessions in self._olm.items()},
            "inbound": [
                {
                    "room_id": i.room_id,
                    "sender": i.sender,
                    "sender_key": i.sender_key,
                    "session": i.session.pickle(pickle_key),
                    "seen": {str(index): event for index, event in i.seen.items()},
                }
                for i in self._inbound.values()
            ],
            "verification": self.verification.export(),
            "key_log": self.key_log.export(),
            "outbound": {
                room: {
                    "session": o.session.pickle(pickle_key),
                    "recipients": sorted(list(r) for r in o.recipients),
                    "created": o.created,
                    "sent": o.sent,
                }
                for room, o in self._outbound.items()
            },
        }

    @classmethod
    def restore(
        cls, state: Mapping[str, Any], pickle_key: bytes, post: Post, put: Put, get: Get | None = None
    ) -> CryptoMachine:
        account = vodozemac.Account.from_pickle(state["account"], pickle_key)
        machine = cls(OlmDevice(state["user_id"], state["device_id"], account), post, put, get)
        machine.since = int(state.get("since", 0))
        machine.key_log = KeyLogView.restore(state.get("key_log"))
        machine.key_log.fetch_consistency = machine._consistency_proof
        machine.verification.restore(state.get("verification"))
        for key, pickles in state.get("olm", {}).items():
            machine._olm[key] = [vodozemac.Session.from_pickle(p, pickle_key) for p in pickles]
        for item in state.get("inbound", []):
            session = vodozemac.InboundGroupSession.from_pickle(item["session"], pickle_key)
            inbound = Inbound(session, item["room_id"], item["sender"], item["sender_key"])
            inbound.seen = {int(index): event for index, event in item.get("seen", {}).items()}
            machine._inbound[item["room_id"], session.session_id] = inbound
        for room, item in state.get("outbound", {}).items():
            machine._outbound[room] = Outbound(
                vodozemac.GroupSession.from_pickle(item["session"], pickle_key),
                frozenset((str(u), str(d), str(c)) for u, d, c in item["recipients"]),
                float(item["created"]),
                int(item["sent"]),
            )
        return machine

    @property
    def user_id(self) -> str:
        return self.device.user_id

    # -- publishing ----------------------------------------------------------------------

    async def publish(self) -> None:
        """Upload the device keys, a full set of one-time keys and a fallback key."""
        await self._post(
            "/e2ee/keys/upload",
            {
                "device_keys": self.device.device_keys(),
                "one_time_keys": self.device.new_one_time_keys(ONE_TIME_KEYS_TARGET),
                "fallback_keys": self.device.new_fallback_key(),
            },
        )
        self.on_change()

    async def replenish(self, unused_fallback: list[str]) -> None:
        """After a claim: top the one-time keys up to the target, and replace a used fallback
        key. The counts are asked afresh: an event's may be old (a replay), and the account
        keeps only 50 private one-time keys, so publishing more would strand some."""
        counts = (await self._post("/e2ee/keys/upload", {})).get("one_time_key_counts", {})
        body: dict[str, Any] = {}
        have = int(counts.get(ONE_TIME_KEY_ALGORITHM, 0))
        if have < ONE_TIME_KEYS_TARGET // 2:
            body["one_time_keys"] = self.device.new_one_time_keys(ONE_TIME_KEYS_TARGET - have)
        if ONE_TIME_KEY_ALGORITHM not in unused_fallback:
            body["fallback_keys"] = self.device.new_fallback_key()
        if body:
            await self._post("/e2ee/keys/upload", body)
            self.on_change()

    # -- device events from the stream ------------------------------------------------------

    async def handle(self, frame: Mapping[str, Any]) -> None:
        """An `e2ee.*` event from the stream. Whatever another device sent, however malformed,
        is taken in or dropped here: it can never stop this device from reading on."""
        kind = frame.get("type")
        try:
            if kind == "e2ee.to_device" and isinstance(frame.get("event"), Mapping):
                await self._to_device(frame["event"])
            elif kind == "e2ee.key_counts":
                counts = frame.get("one_time_key_counts", {})
                low = int(counts.get(ONE_TIME_KEY_ALGORITHM, 0)) < ONE_TIME_KEYS_TARGET // 2
                unused = [str(t) for t in frame.get("unused_fallback_key_types", [])]
                if low or ONE_TIME_KEY_ALGORITHM not in unused:
                    await self.replenish(unused)
            elif kind == "e2ee.device_lists":
                for user in [*frame.get("changed", []), *frame.get("left", [])]:
                    self._devices.pop(str(user), None)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            pass  # malformed: dropped, as garbage from anyone is
        finally:
            seq = frame.get("seq")
            if kind in ("e2ee.to_device", "e2ee.key_counts") and isinstance(seq, int) and seq > self.since:
                self.since = seq  # handled or dropped: never replayed again
                self.on_change()

    async def _to_device(self, event: Mapping[str, Any]) -> None:
        content = event.get("content")
        if str(event.get("type")).startswith(VERIFICATION_PREFIX):
            await self.verification.handle(event)  # SAS steps travel in the clear, as in Matrix
            return
        if event.get("type") != "m.room.encrypted" or not isinstance(content, Mapping):
            return  # other plaintext to-device events: not handled here
        ciphertext = content.get("ciphertext")
        if content.get("algorithm") != OLM_ALGORITHM or not isinstance(ciphertext, Mapping):
            return
        sender, sender_key = str(event.get("sender")), str(content.get("sender_key"))
        mine = ciphertext.get(self.device.curve25519)
        if not isinstance(mine, Mapping) or mine.get("type") not in (0, 1) or not isinstance(mine.get("body"), str):
            return  # not for this device, or not an Olm message
        try:
            payload = json.loads(self._olm_decrypt(sender_key, int(mine["type"]), str(mine["body"])))
        except (vodozemac.OlmDecryptionException, vodozemac.SessionCreationException, ValueError, KeyError):
            return  # garbage or a replay: a room key that does not arrive cannot be trusted anyway
        if not isinstance(payload, dict) or not await self._payload_checks_out(payload, sender, sender_key):
            return
        if payload.get("type") == "m.room_key":
            key = payload.get("content", {})
            if key.get("algorithm") == MEGOLM_ALGORITHM:
                try:
                    session = vodozemac.InboundGroupSession(vodozemac.SessionKey(str(key["session_key"])))
                except (vodozemac.SessionKeyDecodeException, KeyError):
                    return
                room_id, session_id = str(key.get("room_id")), str(key.get("session_id"))
                if session.session_id == session_id and (room_id, session_id) not in self._inbound:
                    self._inbound[room_id, session_id] = Inbound(session, room_id, sender, sender_key)
        if await self.key_log.check_gossip(payload.get(KEY_LOG_HEAD_FIELD), sender):
            self.on_change()

    def _olm_decrypt(self, sender_key: str, message_type: int, body: str) -> str:
        message = vodozemac.AnyOlmMessage.from_parts(message_type, decode_base64(body))
        pre_key = message.to_pre_key() if message_type == 0 else None
        sessions = self._olm.setdefault(sender_key, [])
        for session in sessions:
            if pre_key is not None and not session.session_matches(pre_key):
                continue
            try:
                return bytes(session.decrypt(message)).decode()
            except vodozemac.OlmDecryptionException:
                continue
        if pre_key is None:
            raise ValueError("no Olm session with that device")
        session, plaintext = self.device.account.create_inbound_session(
            vodozemac.Curve25519PublicKey.from_base64(sender_key), pre_key
        )
        sessions.append(session)
        return bytes(plaintext).decode()

    async def _payload_checks_out(self, payload: Mapping[str, Any], sender: str, sender_key: str) -> bool:
        if payload.get("recipient") != self.user_id or payload.get("sender") != sender:
            return False
        if payload.get("recipient_keys", {}).get("ed25519") != self.device.ed25519:
            return False
        claimed = payload.get("keys", {}).get("ed25519")
        for refresh in (False, True):
            known = [
                d
                for d in (await self.devices_of([sender], refresh)).get(sender, [])
                if d.curve25519 == sender_key and d.log_problem is None
            ]
            if known:
                device = known[0]
                return bool(device.ed25519 == claimed and payload.get("sender_device", device.device_id) == device.device_id)
        return False

    # -- keys of others ----------------------------------------------------------------------

    async def _consistency_proof(self, first: int, second: int) -> Any:
        """The key log's consistency proof between two sizes; None if the server gives none."""
        if self._get is None:
            return None
        try:
            answer = await self._get(f"/e2ee/transparency/consistency?from={first}&to={second}")
        except KeyholdError:
            return None  # no proof (a refusal, an error, no answer): nothing is concluded from it
        proof = answer.get("proof") if isinstance(answer, Mapping) else None
        return proof if isinstance(proof, list) else None

    def log_problem_of(self, user: str) -> str | None:
        """Why one of the member's keys, in the newest answer about them, failed the key log."""
        return self._log_problems.get(user)

    async def devices_of(self, users: list[str], refresh: bool = False) -> dict[str, list[PeerDevice]]:
        """The devices of these members, as published and self-signed (checked here)."""
        wanted = [u for u in users if refresh or u not in self._devices]
        if wanted:
            answer = await self._post("/e2ee/keys/query", {"device_keys": {u: [] for u in wanted}})
            newest = self.key_log.newest
            unlogged = await self.key_log.check_answer(answer)
            if self.key_log.newest is not newest:
                self.on_change()  # the newest head accepted outlives a restart
            for user in wanted:
                found: dict[str, PeerDevice] = {}
                for device_id, keys in (answer.get("device_keys", {}).get(user) or {}).items():
                    device = _checked_device(user, device_id, keys, self._valid_signatures)
                    if device is not None:
                        found[device_id] = replace(device, log_problem=unlogged.get((user, f"device:{device_id}")))
                self._devices[user] = found
                # Any key of a member the log does not back (a cross-signing key too, even one
                # no device uses) stops sends to that member; what the log backs is remembered.
                problems = [reason for (of, slot), reason in unlogged.items() if of == user]
                self._log_problems[user] = f"{problems[0]}" if problems else None
                backed = [d for d in found.values() if d.log_problem is None]
                self.verification.observe(user, answer if (user, "master") not in unlogged else {}, backed)
        return {u: list(self._devices.get(u, {}).values()) for u in users}

    # -- sending -----------------------------------------------------------------------------

    async def recipients(self, members: list[str]) -> dict[str, list[PeerDevice]]:
        """The members' devices as published now, once everything checks out: the key log
        (KeyTransparencyError) and the identities this device knows (IdentityChanged). Nothing
        may be sent, not even an encrypted file, before this passes."""
        before = (self.key_log.fork, self.key_log.pending)
        try:
            await self.key_log.settle()
        finally:
            if (self.key_log.fork, self.key_log.pending) != before:
                self.on_change()  # a pending head settled, or a fork proven: kept either way
        devices = await self.devices_of(members, refresh=True)
        if self.key_log.fork is not None:  # proven by a room key that came in meanwhile
            raise KeyTransparencyError(f"not sending: {self.key_log.fork['reason']}")
        for user in members:
            for d in devices.get(user, []):
                if d.log_problem is not None:
                    raise KeyTransparencyError(f"not sending: {d.user_id}'s device {d.device_id}: {d.log_problem}")
            if (problem := self.log_problem_of(user)) is not None:
                raise KeyTransparencyError(f"not sending: a key of {user}: {problem}")
        self.verification.check(members)  # IdentityChanged: a contact's keys changed unaccepted
        return devices

    async def encrypt(
        self, room_id: str, members: list[str], plaintext: str, extra: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """`m.room.encrypted` content of a message for the conversation `room_id`, after sharing
        its room key with every device of `members` (this member's other devices too), and its
        franking: a fresh franking key goes inside, its commitment outside. `extra` adds to the
        event content (an encrypted file's `msgtype`, `file`, `info`...)."""
        devices = await self.recipients(members)
        recipients = frozenset(
            (d.user_id, d.device_id, d.curve25519)
            for user in members
            for d in devices.get(user, [])
            if not (d.user_id == self.user_id and d.device_id == self.device.device_id)
        )
        outbound = self._outbound.get(room_id)
        if (
            outbound is None
            or outbound.recipients != recipients
            or outbound.sent >= ROTATE_AFTER_MESSAGES
            or time.time() - outbound.created >= ROTATE_AFTER_SECONDS
        ):
            outbound = await self._new_outbound(room_id, recipients, devices)
        franking_key = secrets.token_bytes(franking.KEY_BYTES)
        content = {"msgtype": "m.text", **(extra or {}), "body": plaintext, franking.KEY_FIELD: encode_base64(franking_key)}
        committed = franking.commitment(franking_key, content, room_id, self.user_id, self.device.device_id)
        payload = {"type": "m.room.message", "room_id": room_id, "content": content}
        message = outbound.session.encrypt(json.dumps(payload).encode())
        outbound.sent += 1
        self.on_change()  # before the message leaves: a restart must not reuse its index
        encrypted = {
            "algorithm": MEGOLM_ALGORITHM,
            "sender_key": self.device.curve25519,
            "ciphertext": message.to_base64(),
            "session_id": outbound.session.session_id,
            "device_id": self.device.device_id,
        }
        return encrypted, {"version": franking.VERSION, "commitment": encode_base64(committed)}

    async def _new_outbound(
        self, room_id: str, recipients: frozenset[tuple[str, str, str]], devices: dict[str, list[PeerDevice]]
    ) -> Outbound:
        session = vodozemac.GroupSession()
        key = {
            "algorithm": MEGOLM_ALGORITHM,
            "room_id": room_id,
            "session_id": session.session_id,
            "session_key": session.session_key.to_base64(),
        }
        # This device reads its own messages back with the same key.
        self._inbound[room_id, session.session_id] = Inbound(
            vodozemac.InboundGroupSession(session.session_key), room_id, self.user_id, self.device.curve25519
        )
        peers = [d for user_devices in devices.values() for d in user_devices if (d.user_id, d.device_id, d.curve25519) in recipients]
        await self._share(peers, "m.room_key", key)
        outbound = Outbound(session, recipients, time.time())
        self._outbound[room_id] = outbound
        return outbound

    async def _share(self, peers: list[PeerDevice], event_type: str, content: dict[str, Any]) -> None:
        """Send `content` to each device, Olm-encrypted, in as few to-device requests as fit
        the server's body limit (an Olm-encrypted room key is about 1.3 KB)."""
        await self._ensure_olm_sessions(peers)
        messages: dict[str, dict[str, Any]] = {}
        size = 0
        for peer in peers:
            sessions = self._olm.get(peer.curve25519)
            if not sessions:
                continue  # no one-time or fallback key to start a session with: it cannot read
            payload = {
                "type": event_type,
                "content": content,
                "sender": self.user_id,
                "sender_device": self.device.device_id,
                "keys": {"ed25519": self.device.ed25519},
                "recipient": peer.user_id,
                "recipient_keys": {"ed25519": peer.ed25519},
                # The newest key-log head this device accepted, for the recipient to compare
                # with its own: a log forked for one member shows up at the others.
                KEY_LOG_HEAD_FIELD: self.key_log.newest,
            }
            message_type, body = sessions[0].encrypt(json.dumps(payload).encode()).to_parts()
            encrypted = {
                "algorithm": OLM_ALGORITHM,
                "sender_key": self.device.curve25519,
                "ciphertext": {peer.curve25519: {"type": message_type, "body": encode_base64(bytes(body))}},
            }
            added = len(json.dumps(encrypted)) + len(peer.user_id) + len(peer.device_id) + 16
            if messages and size + added > TO_DEVICE_BUDGET:
                await self._send_to_devices(messages)
                messages, size = {}, 0
            messages.setdefault(peer.user_id, {})[peer.device_id] = encrypted
            size += added
        if messages:
            await self._send_to_devices(messages)

    async def _send_to_devices(self, messages: dict[str, dict[str, Any]]) -> None:
        await self._put(f"/e2ee/sendToDevice/m.room.encrypted/{uuid.uuid4().hex}", {"messages": messages})

    async def _ensure_olm_sessions(self, peers: list[PeerDevice]) -> None:
        missing = [p for p in peers if not self._olm.get(p.curve25519)]
        if not missing:
            return
        wanted: dict[str, dict[str, str]] = {}
        for peer in missing:
            wanted.setdefault(peer.user_id, {})[peer.device_id] = ONE_TIME_KEY_ALGORITHM
        claimed = (await self._post("/e2ee/keys/claim", {"one_time_keys": wanted})).get("one_time_keys", {})
        for peer in missing:
            for key in (claimed.get(peer.user_id, {}).get(peer.device_id) or {}).values():
                if not isinstance(key, Mapping) or not verify_signed_json(
                    key, peer.user_id, f"ed25519:{peer.device_id}", peer.ed25519
                ):
                    continue  # a one-time key its device did not sign: the server's, not theirs
                session = self.device.account.create_outbound_session(
                    vodozemac.Curve25519PublicKey.from_base64(peer.curve25519),
                    vodozemac.Curve25519PublicKey.from_base64(str(key["key"])),
                )
                self._olm.setdefault(peer.curve25519, []).insert(0, session)

    # -- reading -----------------------------------------------------------------------------

    def decrypt(self, event: Mapping[str, Any], franked: Mapping[str, Any] | None = None) -> Decrypted:
        """An `m.room.encrypted` event decrypted, or UndecryptableError saying why not. With
        `franked` (the message's franking as delivered), its commitment must open with the
        franking key inside and bind this conversation, the sender and the device whose room
        key opened it; otherwise the message is "unverifiable" and its text not shown."""
        content = event.get("content")
        room_id = str(event.get("room_id"))
        if not isinstance(content, Mapping) or content.get("algorithm") != MEGOLM_ALGORITHM:
            raise UndecryptableError("not a Megolm message")
        inbound = self._inbound.get((room_id, str(content.get("session_id"))))
        if inbound is None:
            raise UndecryptableError("no room key for it reached this device")
        if inbound.sender != event.get("sender"):
            raise UndecryptableError("its room key came from someone other than its sender")
        try:
            decrypted = inbound.session.decrypt(vodozemac.MegolmMessage.from_base64(str(content.get("ciphertext"))))
        except (vodozemac.MegolmDecryptionException, vodozemac.DecodeException) as exc:
            raise UndecryptableError(f"it does not decrypt ({type(exc).__name__})") from None
        event_id = str(event.get("event_id"))
        index = decrypted.message_index
        if index in inbound.seen and inbound.seen[index] != event_id:
            raise UndecryptableError("a replay: its ciphertext was already used by another message")
        if index not in inbound.seen:
            inbound.seen[index] = event_id
            self.on_change()  # the replay record survives a restart
        try:
            payload = json.loads(bytes(decrypted.plaintext))
        except ValueError:
            raise UndecryptableError("its plaintext is not JSON") from None
        if not isinstance(payload, dict):
            raise UndecryptableError("its plaintext is not an event")
        if payload.get("room_id") != room_id:
            raise UndecryptableError("it was written for another conversation")
        content = payload.get("content")
        body = content.get("body") if isinstance(content, dict) else None
        if not isinstance(content, dict) or not isinstance(body, str):
            raise UndecryptableError("it carries no text")
        device = self._device_with_key(inbound.sender, inbound.sender_key)
        if franked is not None:
            self._check_franking(franked, content, room_id, inbound.sender, device)
        return Decrypted(body, content, device)

    def _device_with_key(self, user: str, curve25519: str) -> str | None:
        if user == self.user_id and curve25519 == self.device.curve25519:
            return self.device.device_id
        found = [d.device_id for d in self._devices.get(user, {}).values() if d.curve25519 == curve25519]
        return found[0] if found else None

    @staticmethod
    def _check_franking(
        franked: Mapping[str, Any], content: Mapping[str, Any], room_id: str, sender: str, device: str | None
    ) -> None:
        claimed_device = franked.get("sender_device")
        if device is not None and claimed_device != device:
            raise UndecryptableError("unverifiable: franked for another device than the one that sent it")
        try:
            key = decode_base64(str(content.get(franking.KEY_FIELD)))
            committed = decode_base64(str(franked.get("commitment")))
        except ValueError:
            raise UndecryptableError("unverifiable: its franking key or commitment is malformed") from None
        if not franking.commitment_matches(committed, key, content, room_id, sender, str(claimed_device)):
            raise UndecryptableError("unverifiable: its franking commitment does not match what it says")


def _checked_device(user: str, device_id: str, keys: Any, valid: set[tuple[str, bytes]]) -> PeerDevice | None:
    """A device from a keys/query answer, if its keys name it and are self-signed. `valid`
    remembers the (signature, signed bytes) pairs already checked: every send asks for the
    same devices again."""
    if not isinstance(keys, Mapping) or keys.get("user_id") != user or keys.get("device_id") != device_id:
        return None
    published = keys.get("keys") or {}
    ed25519, curve25519 = published.get(f"ed25519:{device_id}"), published.get(f"curve25519:{device_id}")
    if not isinstance(ed25519, str) or not isinstance(curve25519, str):
        return None
    signature = (keys.get("signatures") or {}).get(user, {}).get(f"ed25519:{device_id}")
    try:
        seen = (str(signature), signing_bytes(keys))
    except (ValueError, AttributeError):
        return None
    if seen not in valid:
        if not verify_signed_json(keys, user, f"ed25519:{device_id}", ed25519):
            return None
        if len(valid) > 10_000:
            valid.clear()
        valid.add(seen)
    return PeerDevice(user, device_id, ed25519, curve25519)
