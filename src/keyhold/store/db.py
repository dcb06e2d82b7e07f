"""Engine creation and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import BigInteger, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer. synchronous=FULL: a commit is on disk (fsync of
    # the WAL) before it returns, which is what lets us acknowledge a send after commit.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Deleted rows (shredded keys, destroyed ciphertext) are overwritten, not left in free pages.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    # hide_parameters: a failing statement's error (and so any log line) never carries the
    # values it was given, which may be a member's input.
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, hide_parameters=True)


class db_now_ms(FunctionElement[int]):
    """The database's clock, in ms since the epoch: for stamps that several processes (servers,
    CLI commands on other hosts) write and compare, so that their clocks need not agree."""

    type = BigInteger()
    inherit_cache = True


@compiles(db_now_ms, "postgresql")
def _db_now_ms_postgresql(_element: db_now_ms, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"


@compiles(db_now_ms, "sqlite")
def _db_now_ms_sqlite(_element: db_now_ms, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it wraps (`orig`) and what caused it, without repeats."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [getattr(item, "orig", None), item.__cause__, item.__context__]


def _sqlstate(exc: BaseException) -> str:
    for item in _chain(exc):
        state = getattr(item, "sqlstate", None) or getattr(item, "pgcode", None)
        if isinstance(state, str):
            return state
    return ""


def storage_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached right now (restarting, connection lost, busy): the same
    request may well succeed in a moment."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    # SQLSTATE classes: 08 connection exception, 53 insufficient resources, 57 operator
    # intervention (a shutdown or restart).
    if _sqlstate(exc)[:2] in ("08", "53", "57"):
        return True
    # Connecting to a database that is down fails below the driver, unwrapped.
    return any(isinstance(item, ConnectionError | TimeoutError | socket.gaierror) for item in _chain(exc))


def refused_as_data(exc: BaseException) -> bool:
    """The database refused a value as such (SQLSTATE class 22: too long, bad encoding...)."""
    if isinstance(exc, sa_exc.DataError) or _sqlstate(exc).startswith("22"):
        return True
    return any(isinstance(item, UnicodeError) for item in _chain(exc))


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)

