"""An append-only Merkle log with signed tree heads, kept in storage and mirrored in memory.

Two logs are built on it: the access log (`governance/accesslog`) and the key-transparency log
of e2ee keys (`e2ee/key_log`). Leaves are RFC 9162 hashes of the stored entry bytes; a head is
an Ed25519 signature by the service key over `prefix || size (8 bytes BE) || root ||
timestamp_ms (8 bytes BE)`, the prefix naming the log. One head is stored per append, so an
auditor can name the first entry whose bytes no longer match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import now_ms
from keyhold.core.writer import EventSink
from keyhold.crypto.merkle import MerkleTree, head_signature_valid, leaf_hash, sth_message, verify_consistency
from keyhold.crypto.signing import ServiceSigner
from keyhold.store import merkle_log as store
from keyhold.store.merkle_log import LogTables


@dataclass(frozen=True)
class TreeHead:
    size: int
    root: bytes
    timestamp_ms: int
    signature: bytes

    def to_json(self, public_key: bytes) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": self.root.hex(),
            "timestamp_ms": self.timestamp_ms,
            "signature": self.signature.hex(),
            "public_key": public_key.hex(),
        }

    def verifies(self, public_key: bytes, prefix: bytes) -> bool:
        return head_signature_valid(
            public_key, self.signature, self.size, self.root, self.timestamp_ms, prefix
        )


class SignedLog:
    """Appends (inside the writer's transactions) and proofs (from the in-memory tree).

    The tree grows when an append is written and is cut back if that transaction fails, so
    after every commit it equals storage; `head` is the newest committed signed tree head.
    Appends run in writer jobs only, so they never interleave on one node; another node's
    appends show up as a key conflict, after which the writer calls `load`.
    """

    def __init__(self, engine: AsyncEngine, signer: ServiceSigner, tables: LogTables, prefix: bytes) -> None:
        self._engine = engine
        self.signer = signer
        self.tables = tables
        self.prefix = prefix
        self.tree = MerkleTree()
        self.head: TreeHead | None = None

    @property
    def public_key(self) -> bytes:
        return self.signer.public_key_bytes

    async def load(self) -> None:
        async with self._engine.connect() as conn:
            rows = await store.all_entries(conn, self.tables)
            latest = await store.latest_head(conn, self.tables)
        self.tree = MerkleTree.from_leaf_hashes(leaf_hash(r.entry) for r in rows)
        self.head = (
            TreeHead(latest.size, latest.root, latest.timestamp_ms, latest.signature) if latest else None
        )

    @property
    def size(self) -> int:
        """The index the next appended entry gets (uncommitted appends included)."""
        return self.tree.size

    async def append_bodies(
        self, conn: AsyncConnection, sink: EventSink, bodies: Sequence[bytes]
    ) -> list[int]:
        """Append entries (their exact bytes) within the caller's writer job, sign the new
        head, and make it `head` once the transaction commits."""
        size_before = self.tree.size
        indexes = [self.tree.append(body) for body in bodies]
        await store.append(
            conn, self.tables, [{"idx": i, "entry": b} for i, b in zip(indexes, bodies, strict=True)]
        )
        now = now_ms()
        root = self.tree.root()
        signature = self.signer.sign(sth_message(self.tree.size, root, now, self.prefix))
        await store.insert_head(conn, self.tables, self.tree.size, root, now, signature)
        new_head = TreeHead(self.tree.size, root, now, signature)

        def commit() -> None:
            self.head = new_head

        sink.on_commit.append(commit)
        sink.on_rollback.append(lambda: self.tree.truncate(size_before))
        return indexes

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self.tree.inclusion_proof(index, size)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        return self.tree.consistency_proof(first, second)


def first_head_problem(
    entries: Sequence[bytes], heads: Sequence[TreeHead], public_key: bytes, prefix: bytes
) -> str | None:
    """What an auditor re-deriving a log from storage finds first, if anything: a signed head
    covering entries that are not stored, a bad signature, a root that the stored entries (at
    the head's size) do not give, consecutive heads that are not consistent, or entries that no
    signed head covers. `heads` in order of size."""
    tree = MerkleTree.from_leaf_hashes(leaf_hash(entry) for entry in entries)
    previous: TreeHead | None = None
    for head in heads:
        if head.size > tree.size:
            return f"entry {tree.size}: missing (a signed tree head covers {head.size} entries, storage has {tree.size})"
        if not head.verifies(public_key, prefix):
            return f"tree head of size {head.size}: signature does not verify"
        if tree.root(head.size) != head.root:
            start = previous.size if previous else 0
            where = f"entry {start}" if head.size - start == 1 else f"entries {start}..{head.size - 1}"
            return f"{where}: changed (root at size {head.size} does not match its signed head)"
        if previous is not None:
            proof = tree.consistency_proof(previous.size, head.size)
            if not verify_consistency(previous.size, head.size, previous.root, head.root, proof):
                return f"tree heads {previous.size} → {head.size} are not consistent"
        previous = head
    covered = previous.size if previous else 0
    if tree.size > covered:
        return f"entry {covered}: not covered by any signed tree head (appended outside the log)"
    return None
