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

from keyhold.core.signed_log import TreeHead, first_head_problem
from keyhold.crypto.merkle import STH_PREFIX, block_hash
from keyhold.store import accesslog as store
from keyhold.store import merkle_log
from keyhold.store.db import create_engine
from keyhold.store.merkle_log import ACCESS_LOG


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
        rows = await merkle_log.all_entries(conn, ACCESS_LOG)
        heads = [
            TreeHead(h.size, h.root, h.timestamp_ms, h.signature)
            for h in await merkle_log.heads(conn, ACCESS_LOG)
        ]
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
    problem = first_head_problem([r.entry for r in rows], heads, public_key, STH_PREFIX)
    if problem is not None:
        result.problems.append(problem)
    return result


async def verify_stored_log(database_url: str, public_key: bytes) -> AuditResult:
    """`verify_log` over a data dir's database, without starting its services: a log that
    does not verify must still be examined."""
    engine = create_engine(database_url)
    try:
        return await verify_log(engine, public_key)
    finally:
        await engine.dispose()
