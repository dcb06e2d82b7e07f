"""What a device knows of its contacts' identities: their master keys and devices as first
seen (trust on first use) or accepted after a change, what the server showed last, and what
this device verified. Kept in the device's state file; `Client.send` asks `Trust.check`
before anything leaves (`IdentityChanged`)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keyhold.crypto.signed_json import decode_base64
from keyhold.sdk.errors import KeyholdError

if TYPE_CHECKING:
    from keyhold.sdk.e2ee.machine import PeerDevice


class IdentityChanged(KeyholdError):
    """A contact's master key, or a known device's identity keys, changed since this device
    last accepted them: raised by `Client.send` (before anything leaves) until the app calls
    `client.accept_identity(username)`. `.username` and `.changes` say who and what."""

    def __init__(self, username: str, changes: list[str]) -> None:
        detail = f"{username}'s identity changed: {'; '.join(changes)}. Check their safety number or verify them, then accept_identity('{username}')"
        super().__init__(
            409, {"title": "Identity changed", "detail": detail, "username": username, "changes": changes}
        )
        self.username = username
        self.changes = changes


def username_of(user_id: str) -> str:
    return user_id[1:].split(":", 1)[0] if user_id.startswith("@") else user_id


def master_public(obj: Any, user_id: str) -> str | None:
    """The public key of a `master_keys` entry of a keys/query answer, if it is one of
    `user_id`'s with exactly one well-formed Ed25519 key."""
    if not isinstance(obj, Mapping) or obj.get("user_id") != user_id:
        return None
    usage, keys = obj.get("usage"), obj.get("keys")
    if (
        not isinstance(usage, list)
        or "master" not in usage
        or not isinstance(keys, Mapping)
        or len(keys) != 1
    ):
        return None
    ((key_id, key),) = keys.items()
    if not isinstance(key, str) or key_id != f"ed25519:{key}":
        return None
    try:
        return key if len(decode_base64(key)) == 32 else None
    except ValueError:
        return None


@dataclass
class Contact:
    """One contact's identity as this device knows it. `master` and `devices` are what it
    accepted (first seen, or accepted after a change); `seen_*` what the server showed last."""

    master: str | None = None
    devices: dict[str, str] = field(default_factory=dict)  # device id -> "ed25519 curve25519"
    seen_master: str | None = None
    seen_devices: dict[str, str] = field(default_factory=dict)
    verified_master: str | None = None
    verified_devices: dict[str, str] = field(default_factory=dict)  # device id -> ed25519

    @property
    def verified(self) -> bool:
        """Whether this device ever verified the contact (a master key or a device)."""
        return self.verified_master is not None or bool(self.verified_devices)

    def changes(self) -> list[str]:
        out: list[str] = []
        if self.master is not None and self.seen_master != self.master:
            out.append("their master key changed" if self.seen_master else "their master key was removed")
        for device, keys in sorted(self.seen_devices.items()):
            if device in self.devices and self.devices[device] != keys:
                out.append(f"the identity keys of their device {device} changed")
            elif device not in self.devices:
                # Only a verified contact's new devices wait here (see Trust.observe).
                out.append(f"they have a new device {device}, which nobody verified")
        return out


class Trust:
    """Trust on first use, identity changes and verified status, per contact (by user id);
    kept in the device's state file."""

    def __init__(self, own_user_id: str, contacts: dict[str, Contact] | None = None) -> None:
        self.own_user_id = own_user_id
        self.contacts = contacts or {}

    def export(self) -> dict[str, Any]:
        return {user: vars(contact) for user, contact in self.contacts.items()}

    @classmethod
    def restore(cls, own_user_id: str, saved: Any) -> Trust:
        contacts: dict[str, Contact] = {}
        if isinstance(saved, Mapping):
            for user, item in saved.items():
                contacts[str(user)] = Contact(
                    master=item.get("master"),
                    devices=dict(item.get("devices") or {}),
                    seen_master=item.get("seen_master"),
                    seen_devices=dict(item.get("seen_devices") or {}),
                    verified_master=item.get("verified_master"),
                    verified_devices=dict(item.get("verified_devices") or {}),
                )
        return cls(own_user_id, contacts)

    def observe(self, user_id: str, master_obj: Any, devices: Iterable[PeerDevice]) -> bool:
        """Take in a keys/query answer for `user_id` (their master key object and their
        self-signed devices). Returns whether anything this device keeps changed."""
        master = master_public(master_obj, user_id)
        seen = {d.device_id: f"{d.ed25519} {d.curve25519}" for d in devices}
        if user_id == self.own_user_id or (master is None and not seen):
            return False  # oneself, or a member the server shows nothing of (no longer a contact)
        contact = self.contacts.get(user_id)
        if contact is None:
            self.contacts[user_id] = Contact(master, dict(seen), master, dict(seen))
            return True
        before = copy.deepcopy(vars(contact))
        if contact.master is None and master is not None:
            contact.master = master  # a first master key: trusted on first use, as devices are
        if not contact.verified:
            for device, keys in seen.items():
                contact.devices.setdefault(device, keys)  # new devices: on first use; removed ones stay known
        else:
            # A verified contact's new device is not taken on first use: it may be one the
            # server added, and it would read everything sent to them. Nor is a device that
            # went away and came back (a removed, stolen laptop served again). They wait for
            # accept_identity.
            for device in [d for d in contact.devices if d not in seen and d not in contact.verified_devices]:
                del contact.devices[device]
        contact.seen_master, contact.seen_devices = master, seen
        # A verified master key stays recorded: `is_verified` holds only while it is the one
        # shown, and an answer that lacks it once does not erase the verification for good.
        for device, ed25519 in list(contact.verified_devices.items()):
            if device in seen and seen[device].split(" ")[0] != ed25519:
                del contact.verified_devices[device]
        return vars(contact) != before

    def check(self, user_ids: Iterable[str]) -> None:
        """IdentityChanged for the first of these members whose identity changed unaccepted."""
        for user_id in user_ids:
            contact = self.contacts.get(user_id)
            if user_id != self.own_user_id and contact is not None and (changes := contact.changes()):
                raise IdentityChanged(username_of(user_id), changes)

    def accept(self, user_id: str, expected: list[str] | None = None) -> bool:
        """Accept the contact's keys as shown now; with `expected` (the changes an
        IdentityChanged reported), only if those are still exactly the changes, so that nothing
        is accepted that the member was not shown. Accepting takes "verified" away: what was
        accepted was not verified."""
        contact = self.contacts.get(user_id)
        if contact is None or not (changes := contact.changes()) or (expected is not None and changes != expected):
            return False
        contact.master = contact.seen_master
        contact.devices.update(contact.seen_devices)
        contact.verified_master, contact.verified_devices = None, {}
        return True

    def mark_verified(self, user_id: str, device_id: str, ed25519: str, master: str | None) -> None:
        contact = self.contacts.setdefault(user_id, Contact())
        contact.verified_devices[device_id] = ed25519
        seen = contact.seen_devices.get(device_id)
        if seen is not None and seen.split(" ")[0] == ed25519:
            contact.devices[device_id] = seen  # verified now: accepted as it is
        if master is not None:
            contact.verified_master = master
            if contact.seen_master == master:
                contact.master = master

    def is_verified(self, user_id: str) -> bool:
        """A verified master key that is still the member's (or, for a member without one, a
        verified device whose keys are unchanged), and no unaccepted change."""
        contact = self.contacts.get(user_id)
        if contact is None or contact.changes():
            return False
        if contact.seen_master is not None:
            return contact.verified_master == contact.seen_master
        return bool(contact.verified_devices) and all(
            contact.seen_devices.get(device, "").split(" ")[0] == ed25519
            for device, ed25519 in contact.verified_devices.items()
        )
