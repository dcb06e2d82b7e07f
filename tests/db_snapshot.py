"""A snapshot of a test server's whole database (every table: row count and a hash of all rows,
read directly with sqlite3 / asyncpg, not through the server) and of its blob store, to show
that a refused request wrote nothing."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

from conftest import Server
from keyhold.store.schema import metadata


def _digest(rows: list[tuple[Any, ...]]) -> tuple[int, str]:
    encoded = sorted(repr(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)) for row in rows)
    return len(rows), hashlib.sha256("\n".join(encoded).encode()).hexdigest()


def _sqlite_tables(db: Path) -> dict[str, tuple[int, str]]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        names = sorted(present & set(metadata.tables) | {n for n in present if not n.startswith("sqlite_")})
        with conn:  # one read transaction: a consistent view of every table
            return {n: _digest(conn.execute(f'SELECT * FROM "{n}"').fetchall()) for n in names}
    finally:
        conn.close()


def _postgres_tables(url: str) -> dict[str, tuple[int, str]]:
    import asyncpg

    async def read() -> dict[str, tuple[int, str]]:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                present = {
                    r[0]
                    for r in await conn.fetch(
                        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                    )
                }
                names = sorted(present & set(metadata.tables) | present)
                return {
                    n: _digest([tuple(r.values()) for r in await conn.fetch(f'SELECT * FROM "{n}"')])
                    for n in names
                }
        finally:
            await conn.close()

    return asyncio.run(read())


def _blobs(home: Path) -> list[tuple[str, int, str]]:
    root = home / "blobs"
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in root.rglob("*")
        if p.is_file()
    )


def snapshot(server: Server) -> dict[str, Any]:
    if server.backend == "postgres":
        tables = _postgres_tables(server.database_url)
    else:
        tables = _sqlite_tables(server.home / "keyhold.db")
    return {"tables": tables, "blobs": _blobs(server.home)}


def query(server: Server, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of `sql` (qmark placeholders) read from the server's database itself, on either
    backend: what is really stored, not what the API shows."""
    if server.backend == "sqlite":
        conn = sqlite3.connect(server.home / "keyhold.db", timeout=30)
        try:
            return [tuple(row) for row in conn.execute(sql, params)]
        finally:
            conn.close()
    numbered = sql
    for n in range(1, len(params) + 1):
        numbered = numbered.replace("?", f"${n}", 1)

    async def read() -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(server.database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return [tuple(row) for row in await conn.fetch(numbered, *params)]
        finally:
            await conn.close()

    return asyncio.run(read())


async def stored(server: Server, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """`query` from a test's event loop (it runs its own, in a thread)."""
    return await asyncio.to_thread(query, server, sql, *params)
