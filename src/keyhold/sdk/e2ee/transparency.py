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


def _clean_head(head: Any) -> dict[str, Any] | None:
    """A tree head with exactly its five fields (whatever else came with it is dropped: a
    head this device keeps is sent on to every device it writes to)."""
    if not isinstance(head, Mapping) or parse_head(head) is None:
        return None
    return {field: head[field] for field in ("size", "root", "timestamp_ms", "signature", "public_key")}


class KeyLogView:
    """What this device knows of the key log: the pinned service key, the newest head, and
    what other members' devices showed it (`check_gossip`)."""

    def __init__(
        self,
        pinned_key: str | None = None,
        newest: dict[str, Any] | None = None,
        fork: dict[str, Any] | None = None,
        pending: dict[str, Any] | None = None,
    ) -> None:
        self.pinned_key = pinned_key  # hex
        self.newest = newest
        # Proof that the server shows members different logs: two heads it signed that no
        # consistency proof joins ({"reason", "heads": [this device's, the other's]}). Once
        # set, this device sends nothing until the member calls `forget_fork`.
        self.fork = fork
        # A head another member's device sent that could not be compared yet (the server gave
        # no proof): sends wait until it is ({"sender", "head"}).
        self.pending = pending
        self.fetch_consistency: FetchConsistency | None = None
        self._lock = asyncio.Lock()
        # Entries proven included under `_proven_root`: every send asks for the same keys
        # again, mostly under the same head, and need not re-hash their proofs.
        self._proven_root = b""
        self._proven: set[tuple[int, str]] = set()

    def export(self) -> dict[str, Any]:
        return {"pinned_key": self.pinned_key, "newest": self.newest, "fork": self.fork, "pending": self.pending}

    @classmethod
    def restore(cls, saved: Mapping[str, Any] | None) -> KeyLogView:
        saved = saved or {}
        fork, pending = saved.get("fork"), saved.get("pending")
        return cls(
            saved.get("pinned_key"),
            _clean_head(saved.get("newest")),
            dict(fork) if isinstance(fork, Mapping) else None,
            dict(pending) if isinstance(pending, Mapping) else None,
        )

    def forget_fork(self) -> None:
        """Trust the server's log again after a fork (once its evidence, `fork["heads"]`, has
        been handed to whoever audits the service): this device's newest head stays."""
        self.fork = None
        self.pending = None

    async def settle(self) -> None:
        """Before a send: KeyTransparencyError if a fork was proven, or if another member's
        head is still waiting for a consistency proof the server does not give."""
        if self.pending is not None and self.fork is None:
            sender, head = str(self.pending.get("sender")), _clean_head(self.pending.get("head"))
            if head is None:
                self.pending = None
            else:
                async with self._lock:
                    status, message = await self._compare(head)
                if status == "forked":
                    self._forked(sender, head, message)
                elif status == "unavailable":
                    raise KeyTransparencyError(
                        f"not sending yet: the server gave no proof that {sender}'s view of the key-transparency "
                        f"log and this device's are one log ({message}); try again"
                    )
                else:
                    self.pending = None
        if self.fork is not None:
            raise KeyTransparencyError(f"not sending: {self.fork['reason']}")

    async def check_gossip(self, head: Any, sender: str) -> bool:
        """A head another member's device sent inside an Olm-encrypted payload (the newest it
        accepted). It must be one log with this device's newest head; if it is newer, it
        becomes this device's newest. Only a head the pinned service key signed counts: any
        other proves nothing. Returns whether what this device keeps changed."""
        clean = _clean_head(head)
        if clean is None or self.fork is not None or self.pinned_key is None:
            return False
        if not verify_tree_head(clean, self.pinned_key, KEY_STH_PREFIX):
            return False
        newest = self.newest
        async with self._lock:
            status, message = await self._compare(clean)
        if status == "forked":
            self._forked(sender, clean, message)
            return True
        if status == "unavailable":
            self.pending = {"sender": sender, "head": clean}
            return True
        return self.newest is not newest

    def _forked(self, sender: str, head: dict[str, Any], message: str) -> None:
        self.fork = {
            "reason": (
                f"the server showed {sender}'s device a key-transparency log that disagrees with the "
                f"one it showed this device ({message}): it shows members different logs"
            ),
            "heads": [self.newest, head],
        }
        self.pending = None

    async def check_answer(self, answer: Mapping[str, Any]) -> dict[tuple[str, str], str]:
        """The keys of a `keys/query` answer that do not check out, by (user, slot) where
        slot is `device:<id>` or a cross-signing usage, each with the reason. A head that
        fails fails every key of the answer. Accepting a newer head makes it the newest seen."""
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
        head = _clean_head(transparency.get("tree_head") if isinstance(transparency, Mapping) else None)
        # One check at a time: two answers checked at once could each compare with the same
        # newest head and then leave the smaller of theirs as the newest.
        async with self._lock:
            problem = await self._head_problem(head)
        if problem is not None:
            return dict.fromkeys(keys, problem)
        assert head is not None and isinstance(transparency, Mapping)
        size, root = int(head["size"]), bytes.fromhex(str(head["root"]))
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

    async def _head_problem(self, head: dict[str, Any] | None) -> str | None:
        if head is None:
            return "the server sent no signed head of the key-transparency log"
        if not verify_tree_head(head, self.pinned_key, KEY_STH_PREFIX):
            if self.pinned_key is not None and head["public_key"] != self.pinned_key:
                return "the key-transparency log is signed by another key than the one this device pinned"
            return "the key-transparency log's head carries no valid signature"
        status, message = await self._compare(head)
        if status == "forked":
            return f"the key-transparency log forked: {message}"
        if status == "unavailable":
            return f"the server gave no proof that its key-transparency log only grew ({message})"
        return None

    async def _compare(self, head: dict[str, Any]) -> tuple[str, str]:
        """Whether a head (signature already checked) and this device's newest are one log:
        "same log" (a newer head becomes the newest), "forked" (a proof came and does not
        join them, or they differ at one size), or "unavailable" (no proof came)."""
        newest = self.newest
        if newest is None:
            self.pinned_key, self.newest = str(head["public_key"]), head
            return "same log", ""
        size, newest_size = int(head["size"]), int(newest["size"])
        where = (
            f"its head of size {size} (root {str(head['root'])[:16]}…) and the head of size "
            f"{newest_size} (root {str(newest['root'])[:16]}…) this device accepted"
        )
        if size == newest_size:
            return ("same log", "") if head["root"] == newest["root"] else ("forked", f"{where} differ")
        older, newer = (newest, head) if size > newest_size else (head, newest)
        if self.fetch_consistency is None:
            return "unavailable", "this device cannot fetch consistency proofs"
        proof = await self.fetch_consistency(int(older["size"]), int(newer["size"]))
        if proof is None:
            return "unavailable", "no consistency proof came"
        if not verify_consistency_between(older, newer, proof, KEY_STH_PREFIX):
            return "forked", f"no consistency proof joins {where}"
        if newer is head:
            self.newest = head
        return "same log", ""
