"""`keyhold audit verify`: re-derive the access log from storage and check everything.

Checks, in order of the log: indexes are 0..n-1 with no gap; each entry's own `idx` matches
its row; each member block hashes to a value its entry commits to (and its stored index and
visibility match the block); every stored signed tree head has a valid signature and the root
recomputed from the entries at its size; consecutive heads are consistent; no entry lies beyond
the newest head. The first failure is named (entry index, or the range between two heads).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.crypto.merkle import MerkleTree, block_hash, leaf_hash, verify_consistency
from keyhold.governance.accesslog import TreeHead, verify_tree_head
from keyhold.store import accesslog as store
from keyhold.store.db import create_engine


@dataclass
class AuditResult:
    entries: int = 0
    heads: int = 0
    blocks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify_log(engine: AsyncEngine, public_key: bytes) -> AuditResult:
    async with engine.connect() as conn:
        rows = await store.all_entries(conn)
        heads = [TreeHead(h.size, h.root, h.timestamp_ms, h.signature) for h in await store.heads(conn)]
        blocks = await store.all_blocks(conn)
    result = AuditResult(entries=len(rows), heads=len(heads), blocks=len(blocks))
    committed: dict[int, set[str]] = {}
    for position, row in enumerate(rows):
        if row.idx != position:
            result.problems.append(f"entry {position}: missing or out of order (found index {row.idx} there)")
            return result
        try:
            parsed = orjson.loads(row.entry)
            own_index = parsed["idx"]
            committed[row.idx] = set(parsed["subjects"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            result.problems.append(f"entry {row.idx}: not a well-formed log entry")
            return result
        if own_index != row.idx:
            result.problems.append(f"entry {row.idx}: records index {own_index} (moved)")
            return result
    stored: dict[int, set[str]] = {}
    for block_row in blocks:
        stored.setdefault(block_row.idx, set()).add(block_hash(block_row.block))
        try:
            block = orjson.loads(block_row.block)
            fields_match = (
                block["idx"] == block_row.idx
                and block["user"] == block_row.user_id
                and block["visible_from_ms"] == block_row.visible_from_ms
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            fields_match = False
        if not fields_match or block_hash(block_row.block) not in committed.get(block_row.idx, set()):
            result.problems.append(f"entry {block_row.idx}: a member block does not match the entry")
            return result
    for idx, hashes in committed.items():
        if hashes - stored.get(idx, set()):
            result.problems.append(f"entry {idx}: a member block is missing (an access hidden from a member)")
            return result
    tree = MerkleTree.from_leaf_hashes(leaf_hash(r.entry) for r in rows)
    previous: TreeHead | None = None
    for head in heads:
        if head.size > tree.size:
            result.problems.append(
                f"entry {tree.size}: missing (a signed tree head covers {head.size} entries, storage has {tree.size})"
            )
            return result
        if not verify_tree_head(head, public_key):
            result.problems.append(f"tree head of size {head.size}: signature does not verify")
            return result
        if tree.root(head.size) != head.root:
            start = previous.size if previous else 0
            where = f"entry {start}" if head.size - start == 1 else f"entries {start}..{head.size - 1}"
            result.problems.append(
                f"{where}: changed (root at size {head.size} does not match its signed head)"
            )
            return result
        if previous is not None:
            proof = tree.consistency_proof(previous.size, head.size)
            if not verify_consistency(previous.size, head.size, previous.root, head.root, proof):
                result.problems.append(f"tree heads {previous.size} → {head.size} are not consistent")
                return result
        previous = head
    covered = previous.size if previous else 0
    if tree.size > covered:
        result.problems.append(
            f"entry {covered}: not covered by any signed tree head (appended outside the log)"
        )
    return result


async def verify_stored_log(database_url: str, public_key: bytes) -> AuditResult:
    """`verify_log` over a data dir's database, without starting its services: a log that
    does not verify must still be examined."""
    engine = create_engine(database_url)
    try:
        return await verify_log(engine, public_key)
    finally:
        await engine.dispose()
