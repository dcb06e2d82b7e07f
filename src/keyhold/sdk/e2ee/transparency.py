"""Client-side checks of the key-transparency log, before this device encrypts to anyone.

Every `keys/query` answer carries `keyhold.transparency`: the log's newest signed tree head and,
per key served, the entry that published it with an inclusion proof (see
`keyhold.e2ee.key_log` on the server for the entry format). A device checks:
- the head's Ed25519 signature, under the key-log prefix, by the service key it pinned the
  first time it saw one (trust on first use; kept in its state file);
- that the head and the newest head it saw before are one append-only log: a consistency proof
  (`GET /e2ee/transparency/consistency?from=&to=`) between them. Holding only the newest head
  is enough: consistency is transitive, so a head consistent with it is consistent with every
  older head this device accepted;
- for each key, that the entry says "publish", names that member and key, commits to that key
  object's SHA-256, and is in the tree under that head.

What this catches: a key the server serves to some clients but never logged (a substituted
key), and a log whose history was rewritten after this device saw it (a fork). Devices also
send each other their newest heads inside Olm-encrypted room keys (`check_gossip`), so a fork
shown to one member from its first head on is caught by the members it writes to. What it
cannot catch: a key the server logged for everyone (only its member, who never published it,
can tell).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from keyhold.crypto.merkle import KEY_STH_PREFIX, leaf_hash, verify_inclusion
from keyhold.crypto.signed_json import signed_digest as key_digest
from keyhold.crypto.signed_json import signing_bytes
from keyhold.sdk.errors import KeyholdError
from keyhold.sdk.verify import parse_head, parse_proof, verify_consistency_between, verify_tree_head

TRANSPARENCY_FIELD = "keyhold.transparency"

# (from size, to size) -> the consistency proof the server gives, as hex strings.
FetchConsistency = Callable[[int, int], Awaitable[Any]]


class KeyTransparencyError(KeyholdError):
    """A key this device was about to encrypt to does not check out against the key log."""

    def __init__(self, reason: str) -> None:
        super().__init__(0, {"title": "Key transparency check failed", "detail": reason})
        self.reason = reason


def _canonical(entry: Mapping[str, Any]) -> bytes | None:
    try:
        return signing_bytes(entry)
    except ValueError:
        return None


def _entry_problem(
    proof: Any, user: str, slot: str, key: Mapping[str, Any], size: int, root: bytes, proven: set[tuple[int, str]]
) -> str | None:
    if not isinstance(proof, Mapping):
        return "it is not in the key-transparency log (no inclusion proof)"
    index, entry_text, path = (
        proof.get("index"),
        proof.get("entry"),
        parse_proof(proof.get("inclusion_proof")),
    )
    if (
        not isinstance(index, int)
        or isinstance(index, bool)
        or not isinstance(entry_text, str)
        or path is None
    ):
        return "its key-transparency proof is malformed"
    entry_bytes = entry_text.encode()
    try:
        entry = orjson.loads(entry_bytes)
        digest = key_digest(key)
    except (orjson.JSONDecodeError, ValueError):
        return "its key-transparency entry or the key is malformed"
    if not isinstance(entry, dict) or _canonical(entry) != entry_bytes:
        # Only the canonical form: bytes that different readers could parse differently
        # (duplicate keys, other spellings) are not an entry.
        return "its key-transparency entry is malformed"
    if (entry.get("op"), entry.get("user_id"), entry.get("key"), entry.get("idx")) != (
        "publish",
        user,
        slot,
        index,
    ):
        return f"the key-transparency entry {index} is not the publication of this key"
    if entry.get("sha256") != digest:
        return "it is not the key the key-transparency log shows for this device (a substituted key)"
    if (index, entry_text) in proven:
        return None
    if not verify_inclusion(leaf_hash(entry_bytes), index, size, path, root):
        return f"the key-transparency entry {index} is not in the log under its signed head"
    proven.add((index, entry_text))
    return None


class KeyLogView:
    """What this device knows of the key log: the pinned service key and the newest head."""

    def __init__(
        self, pinned_key: str | None = None, newest: dict[str, Any] | None = None, fork: str | None = None
    ) -> None:
        self.pinned_key = pinned_key  # hex
        self.newest = newest
        # Set once another member's device was shown a head that this device's log does not
        # agree with: proof that the server shows different logs to different members.
        self.fork = fork
        self.fetch_consistency: FetchConsistency | None = None
        self._lock = asyncio.Lock()
        # Entries proven included under `_proven_root`: every send asks for the same keys
        # again, mostly under the same head, and need not re-hash their proofs.
        self._proven_root = b""
        self._proven: set[tuple[int, str]] = set()

    def export(self) -> dict[str, Any]:
        return {"pinned_key": self.pinned_key, "newest": self.newest, "fork": self.fork}

    @classmethod
    def restore(cls, saved: Mapping[str, Any] | None) -> KeyLogView:
        saved = saved or {}
        newest, fork = saved.get("newest"), saved.get("fork")
        return cls(
            saved.get("pinned_key"),
            dict(newest) if isinstance(newest, Mapping) else None,
            fork if isinstance(fork, str) else None,
        )

    async def check_gossip(self, head: Any, sender: str) -> bool:
        """A head another member's device sent inside an Olm-encrypted room key (the newest it
        accepted). It must be one log with this device's newest head; if it is newer, it
        becomes this device's newest. Returns whether this device's view changed. A head that
        disagrees sets `fork`, and this device sends nothing more (the server cannot hide the
        evidence: both heads carry its signature)."""
        if not isinstance(head, Mapping) or self.fork is not None or self.pinned_key is None:
            return False
        if not verify_tree_head(head, self.pinned_key, KEY_STH_PREFIX):
            return False  # not signed by the service: anyone could have made it, it proves nothing
        before = self.newest
        async with self._lock:
            problem = await self._head_problem(head)
        if problem is not None:
            self.fork = (
                f"the server showed {sender}'s device a key-transparency log that disagrees with the one "
                f"it showed this device ({problem}): it shows members different logs"
            )
            return True
        return self.newest is not before

    async def check_answer(self, answer: Mapping[str, Any]) -> dict[tuple[str, str], str]:
        """The keys of a `keys/query` answer that do not check out, by (user, slot) where
        slot is `device:<id>` or a cross-signing usage, each with the reason. A head that
        fails fails every key of the answer. Accepting a head makes it the newest seen."""
        keys: dict[tuple[str, str], Mapping[str, Any]] = {}
        for user, devices in (answer.get("device_keys") or {}).items():
            for device_id, key in (devices or {}).items():
                keys[str(user), f"device:{device_id}"] = key
        for usage in ("master", "self_signing", "user_signing"):
            for user, key in (answer.get(f"{usage}_keys") or {}).items():
                keys[str(user), usage] = key
        if not keys:
            return {}
        transparency = answer.get(TRANSPARENCY_FIELD)
        head = transparency.get("tree_head") if isinstance(transparency, Mapping) else None
        # One check at a time: two answers checked at once could each compare with the same
        # newest head and then leave the smaller of theirs as the newest.
        async with self._lock:
            problem = await self._head_problem(head)
        if problem is not None:
            return dict.fromkeys(keys, problem)
        assert isinstance(head, Mapping) and isinstance(transparency, Mapping)
        parsed = parse_head(head)
        assert parsed is not None
        size, root = parsed[0], parsed[1]
        if root != self._proven_root:
            self._proven_root, self._proven = root, set()
        proofs = transparency.get("proofs")
        proofs = proofs if isinstance(proofs, Mapping) else {}
        found: dict[tuple[str, str], str] = {}
        for (user, slot), key in keys.items():
            of_user = proofs.get(user)
            proof = of_user.get(slot) if isinstance(of_user, Mapping) else None
            reason = (
                _entry_problem(proof, user, slot, key, size, root, self._proven)
                if isinstance(key, Mapping)
                else "malformed"
            )
            if reason is not None:
                found[user, slot] = reason
        return found

    async def _head_problem(self, head: Any) -> str | None:
        if not isinstance(head, Mapping) or parse_head(head) is None:
            return "the server sent no signed head of the key-transparency log"
        public_key = str(head.get("public_key"))
        if not verify_tree_head(head, self.pinned_key, KEY_STH_PREFIX):
            if self.pinned_key is not None and public_key != self.pinned_key:
                return "the key-transparency log is signed by another key than the one this device pinned"
            return "the key-transparency log's head carries no valid signature"
        newest = self.newest
        if newest is not None:
            older, newer = (newest, head) if int(head["size"]) >= int(newest["size"]) else (head, newest)
            if self.fetch_consistency is None:
                return "this device cannot fetch consistency proofs of the key-transparency log"
            proof = await self.fetch_consistency(int(older["size"]), int(newer["size"]))
            if not verify_consistency_between(older, newer, proof, KEY_STH_PREFIX):
                return (
                    f"the key-transparency log forked: its head of size {head['size']} (root "
                    f"{str(head['root'])[:16]}…) does not extend the head of size {newest['size']} "
                    f"(root {str(newest['root'])[:16]}…) this device saw before"
                )
            if newer is newest:
                return None
        self.pinned_key = public_key
        self.newest = dict(head)
        return None
