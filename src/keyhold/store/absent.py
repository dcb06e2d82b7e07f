"""Inserting a row only where its key is still free (or else updating it), as one statement.

Not a savepoint around an insert that may fail: under Python's sqlite3 driver a SAVEPOINT
issued before the transaction's first write opens a transaction of its own, and its RELEASE
commits the row at once, ahead of the rest of the caller's transaction (a conversation
without its members, a device row another sign-in races past). `ON CONFLICT DO NOTHING`
keeps the row inside the caller's transaction on both databases; on SQLite its write also
takes the database's write lock, so racing callers queue behind it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, CursorResult, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement


async def insert_if_absent(
    conn: AsyncConnection, table: Table, values: dict[str, Any], returning: Column[Any] | None = None
) -> CursorResult[Any]:
    """Insert the row unless it conflicts with one already there (any unique key). The result's
    rowcount is 0, and with `returning` it has no row, when nothing was inserted."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement: Any = dialect.insert(table).values(**values).on_conflict_do_nothing()
    if returning is not None:
        statement = statement.returning(returning)
    result: CursorResult[Any] = await conn.execute(statement)
    return result


async def put(
    conn: AsyncConnection,
    table: Table,
    key: dict[str, Any],
    values: dict[str, Any],
    only_if: ColumnElement[bool] | None = None,
) -> None:
    """Insert the row `key` + `values`, or set `values` on the row with that primary key
    (`only_if`: only when that holds of the stored row), as one statement on both databases."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement: Any = dialect.insert(table).values(**key, **values)
    await conn.execute(statement.on_conflict_do_update(index_elements=list(key), set_=values, where=only_if))
