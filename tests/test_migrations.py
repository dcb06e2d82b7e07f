"""Schema migrations: a database behind the newest revision is upgraded at start; one already at
it is left alone without loading Alembic (`store.db.migrate`), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from conftest import create_pg_database
from keyhold.store.db import MIGRATIONS_DIR, create_engine, migrate, schema_head
from keyhold.store.schema import metadata


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def test_the_head_read_from_file_names_is_alembics_head() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert schema_head() == scripts.get_current_head()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        declared = re.search(r'^revision = "([^"]+)"', path.read_text(), re.M)
        assert declared, f"{path.name} declares no revision"
        assert path.name.startswith(declared.group(1) + "_"), f"{path.name} is not named after its revision"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_database_behind_is_upgraded_and_one_at_the_head_needs_no_alembic(tmp_path: Path, backend: str) -> None:
    url = create_pg_database() if backend == "postgres" else f"sqlite+aiosqlite:///{tmp_path / 'kh.db'}"
    head = schema_head()
    previous = ScriptDirectory.from_config(alembic_config()).get_revision(head).down_revision
    assert isinstance(previous, str)

    async def upgrade_from_previous() -> tuple[str, set[str]]:
        engine = create_engine(url)
        try:

            def to_previous(connection: Connection) -> None:
                command.upgrade(alembic_config(connection), previous)

            async with engine.begin() as conn:
                await conn.run_sync(to_previous)
            assert (await revision_and_tables(engine))[0] == previous
            await migrate(engine)
            return await revision_and_tables(engine)
        finally:
            await engine.dispose()

    revision, tables = asyncio.run(upgrade_from_previous())
    assert revision == head
    assert tables == set(metadata.tables) | {"alembic_version"}

    # At the head, a new process's migrate leaves the database as it is, without Alembic.
    probe = f"""
import asyncio, sys
from keyhold.store.db import create_engine, migrate
async def main():
    engine = create_engine({url!r})
    await migrate(engine)
    await engine.dispose()
asyncio.run(main())
print(sorted(m for m in sys.modules if m.split(".")[0] == "alembic"))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    assert asyncio.run(read_back(url)) == (head, set(metadata.tables) | {"alembic_version"})


async def read_back(url: str) -> tuple[str, set[str]]:
    engine = create_engine(url)
    try:
        return await revision_and_tables(engine)
    finally:
        await engine.dispose()


async def revision_and_tables(engine: AsyncEngine) -> tuple[str, set[str]]:
    def read(connection: Connection) -> tuple[str, set[str]]:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        return revision, set(inspect(connection).get_table_names())

    async with engine.connect() as conn:
        return await conn.run_sync(read)
