"""Engine creation and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import BigInteger, CursorResult, Table, event, inspect, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable
from sqlalchemy.sql.functions import FunctionElement

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
T = TypeVar("T")


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


class Transactions(Protocol):
    """Where the writer runs a transaction of synchronous code (`fn(conn)`), committed on
    return, rolled back on an exception."""

    async def run(self, fn: Callable[[Connection], T]) -> T: ...

    async def close(self) -> None: ...


def _driver_leaves_transactions_to_us(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # sqlite3 would begin only at the first write


def _begin_immediate(conn: Connection) -> None:
    # The write lock first: everything the transaction reads is what it writes over.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class ThreadTransactions:
    """SQLite: one dedicated thread with its own connection runs each transaction whole, so a
    batch of sends costs one trip to the database thread and back, not one per statement and
    fetch (aiosqlite's way, each trip waiting for a turn of the event loop). The event loop
    stays free meanwhile: sqlite3 releases the GIL while it works and syncs."""

    def __init__(self, url: str) -> None:
        self._engine: Engine = create_sync_engine(
            url.replace("sqlite+aiosqlite:", "sqlite+pysqlite:", 1),
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,
        )
        event.listen(self._engine, "connect", _sqlite_pragmas)
        event.listen(self._engine, "connect", _driver_leaves_transactions_to_us)
        event.listen(self._engine, "begin", _begin_immediate)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyhold-db-writer")

    async def run(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._transaction, fn)

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        with self._engine.begin() as conn:
            return fn(conn)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._engine.dispose)
        self._thread.shutdown(wait=True)


class EngineTransactions:
    """Any other database: the synchronous code runs on the async engine's connection
    (SQLAlchemy's greenlet bridge), each statement one round trip to the server."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(self, fn: Callable[[Connection], T]) -> T:
        async with self._engine.begin() as conn:
            return await conn.run_sync(fn)

    async def close(self) -> None:
        return None


def writer_transactions(url: str, engine: AsyncEngine) -> Transactions:
    return ThreadTransactions(url) if url.startswith("sqlite") else EngineTransactions(engine)


@lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...], paramstyle: str) -> str:
    if paramstyle == "qmark":
        marks = ", ".join("?" for _ in columns)
    elif paramstyle == "numeric_dollar":
        marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    else:
        raise ValueError(f"no insert SQL for paramstyle {paramstyle}")
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"


def insert_tuples(conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert rows given as tuples in `columns` order, as one executemany of the driver's own
    SQL: no statement compiling and no per-row parameter processing, which the send path,
    inserting thousands of rows a second, would otherwise pay row by row. Only for columns
    whose values the driver takes as they are (integers, text, bytes, None)."""
    if rows:
        dialect: Dialect = conn.dialect
        conn.exec_driver_sql(_insert_sql(table.name, columns, dialect.paramstyle), list(rows))


class DriverStatement:
    """A Core statement run as the driver's own SQL, compiled once per dialect and per length
    of each IN list (`bindparam(name, expanding=True)`): for the send path, where
    SQLAlchemy's work per execution (cache key, parameter processing, result set-up) costs
    several times the query itself (measured on SQLite: 134 µs against 35 µs). The statement
    is still written once, in Core; values go to the driver as they are (integers, text,
    bytes), and rows come back as the driver gives them (SQLite booleans as 0 and 1)."""

    def __init__(self, statement: Executable) -> None:
        self._statement = statement
        self._compiled: dict[tuple[str, str, tuple[tuple[str, int], ...]], tuple[str, list[tuple[str, int]]]] = {}

    def execute(self, conn: Connection, **params: Any) -> CursorResult[Any]:
        lengths = tuple(sorted((k, len(v)) for k, v in params.items() if isinstance(v, list | tuple)))
        key = (conn.dialect.name, conn.dialect.paramstyle, lengths)
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = self._compile(conn.dialect, params)
        sql, layout = found
        values = tuple(params[name] if index < 0 else params[name][index] for name, index in layout)
        return conn.exec_driver_sql(sql, values)

    def _compile(self, dialect: Dialect, params: dict[str, Any]) -> tuple[str, list[tuple[str, int]]]:
        # Expand with a distinct marker per value, then read back where each marker went.
        markers: dict[int, tuple[str, int]] = {}
        dummy: dict[str, Any] = {}
        for name, value in params.items():
            if isinstance(value, list | tuple):
                dummy[name] = [object() for _ in value]
                markers.update({id(m): (name, index) for index, m in enumerate(dummy[name])})
            else:
                dummy[name] = object()
                markers[id(dummy[name])] = (name, -1)
        statement: Any = self._statement
        expanded = statement.compile(dialect=dialect).construct_expanded_state(dummy)
        if expanded.positiontup is None:
            raise ValueError(f"{dialect.name} is not a positional dialect")
        return expanded.statement, [markers[id(expanded.parameters[name])] for name in expanded.positiontup]


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


def schema_head() -> str:
    """The newest migration's revision: each file in versions/ is named after its revision
    (`0014_scan_verdicts.py` is revision "0014"; test_migrations.py checks it against Alembic's)."""
    return max(path.name.split("_", 1)[0] for path in (MIGRATIONS_DIR / "versions").glob("[0-9]*_*.py"))


def _current_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _upgrade(connection: Connection) -> None:
    # A schema already at the head (every start but the first after an upgrade) needs no Alembic:
    # importing it and loading its scripts cost each server and CLI command ~0.2 s.
    if _current_revision(connection) == schema_head():
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)

