"""Region KEKs: `keyhold init` / `keys status` / `keys rotate`, and the envelope's bindings.

The end-to-end test runs on both backends: it fills a server with conversations whose members
live in regions us, eu and row, rotates the KEKs while the server runs and again while it is
stopped, and checks after each step (through the CLI and directly in the database) that every
wrapped DEK moved to the newest version and that every old message still reads through the API,
across restarts. At the end the old KEK versions are removed from the key file altogether: if
anything still needed them, reading would fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import stat
import struct
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conftest import PASSWORD, Server, keyhold_cli, new_member, start_server, stop_server
from keyhold.crypto.envelope import ConversationKey, SealError, new_data_key
from keyhold.sdk import Client

REGIONS = ("eu", "row", "us")
T = TypeVar("T")

# -- helpers ------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cli_env(database_url: str) -> dict[str, str]:
    env = {"COLUMNS": "200"}
    if database_url:
        env["KEYHOLD_DATABASE_URL"] = database_url
    return env


@dataclass(frozen=True)
class KeyRow:
    region: str
    version: int
    current: bool
    wrapped: int


def keys_status(home: Path, database_url: str = "") -> list[KeyRow]:
    """`keyhold keys status`, parsed from its table."""
    out = keyhold_cli("keys", "status", "--home", str(home), env=cli_env(database_url)).stdout
    rows = []
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)]
        if len(cells) == 6 and cells[2].isdigit():
            rows.append(KeyRow(cells[1], int(cells[2]), cells[3] == "yes", int(cells[4])))
    assert rows, f"no rows in `keys status` output:\n{out}"
    return rows


def keys_rotate(home: Path, database_url: str = "") -> str:
    result = keyhold_cli("keys", "rotate", "--home", str(home), env=cli_env(database_url))
    return result.stdout + result.stderr


def live_wraps(home: Path, database_url: str) -> list[tuple[int, int, str, int]]:
    """(conversation, epoch, region, KEK version) of every unshredded wrap, read directly."""
    query = (
        "SELECT conversation_id, epoch, region, kek_version FROM conversation_keys "
        "WHERE wrapped_dek IS NOT NULL ORDER BY 1, 2, 3"
    )
    if not database_url:
        import sqlite3

        conn = sqlite3.connect(home / "keyhold.db", timeout=30)
        try:
            return [tuple(r) for r in conn.execute(query)]  # type: ignore[misc]
        finally:
            conn.close()
    import asyncpg

    async def read() -> list[tuple[int, int, str, int]]:
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return [tuple(r.values()) for r in await conn.fetch(query)]  # type: ignore[misc]
        finally:
            await conn.close()

    return run_coroutine(read)


def run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, factory()).result()


def assert_all_at(home: Path, database_url: str, version: int) -> Counter[str]:
    """Every wrap in the database and every row of `keys status` says: newest version only."""
    wraps = live_wraps(home, database_url)
    assert wraps, "expected wrapped DEKs"
    stale = [w for w in wraps if w[3] != version]
    assert not stale, f"wraps not at KEK v{version}: {stale}"
    per_region = Counter(w[2] for w in wraps)
    status = keys_status(home, database_url)
    for region in REGIONS:
        rows = {r.version: r for r in status if r.region == region}
        assert sorted(rows) == list(range(1, version + 1)), f"{region}: versions {sorted(rows)}"
        assert [v for v, r in rows.items() if r.current] == [version], f"{region}: current is not v{version}"
        assert rows[version].wrapped == per_region[region], f"{region}: status disagrees with the database"
        assert all(r.wrapped == 0 for v, r in rows.items() if v != version), f"{region}: old versions in use"
    return per_region


@dataclass
class Fixture:
    """Who exists, and what every conversation must show."""

    users: dict[str, Client] = field(default_factory=dict)
    expected: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    attachment: tuple[str, bytes] = ("", b"")

    async def send(self, who: str, conversation_id: int, text: str) -> None:
        message = await self.users[who].send(conversation_id, text)
        assert message.text == text
        self.expected.setdefault(conversation_id, []).append((self.users[who].username, text))

    async def close(self) -> None:
        for client in self.users.values():
            await client.close()

    async def reconnect(self, server: Server) -> None:
        """After a restart (a new port): log everyone in again."""
        await self.close()
        for key, client in list(self.users.items()):
            self.users[key] = await Client.login(server.url, client.username, PASSWORD)


async def check_readable(server: Server, fx: Fixture) -> None:
    """Log in again (fresh tokens, nothing cached client-side) and read every conversation."""
    names = {k: c.username for k, c in fx.users.items()}
    readers = {k: await Client.login(server.url, names[k], PASSWORD) for k in ("alice", "carol")}
    try:
        alices = {c.id for c in await readers["alice"].conversations(limit=200)}
        for conversation_id, expected in fx.expected.items():
            reader = readers["alice"] if conversation_id in alices else readers["carol"]
            history = await reader.history(conversation_id, limit=200)
            got = [(m.sender, m.text) for m in history if m.kind == "text"]
            assert got == expected, f"conversation {conversation_id}"
        attachment_id, data = fx.attachment
        assert await readers["carol"].download(attachment_id) == data
    finally:
        for client in readers.values():
            await client.close()


async def launch(home: Path, backend: str, database_url: str) -> Server:
    """Start (or restart) a server on `home` and, for PostgreSQL, on the same database.
    (In a thread: the shared helpers use asyncio.run to create the PostgreSQL database.)"""
    if backend == "postgres" and database_url:
        return await asyncio.to_thread(start_server, home, "sqlite", ("--database-url", database_url))
    return await asyncio.to_thread(start_server, home, backend)


# -- the end-to-end test -------------------------------------------------------------------------


def test_init_makes_private_key_file(tmp_path: Path) -> None:
    home = tmp_path / "kh"
    out = keyhold_cli("init", "--home", str(home)).stdout
    assert "initialized" in out
    key_file = home / "keys.json"
    assert mode(key_file) == 0o600, oct(mode(key_file))
    assert mode(home) & 0o077 == 0, f"data dir is {oct(mode(home))}"
    data = json.loads(key_file.read_text())
    assert sorted(data["regions"]) == list(REGIONS)
    assert all(list(v) == ["1"] for v in data["regions"].values())
    status = keys_status(home)
    assert sorted((r.region, r.version, r.current, r.wrapped) for r in status) == [
        (region, 1, True, 0) for region in REGIONS
    ]
    # Running init again keeps the keys.
    assert "already initialized" in keyhold_cli("init", "--home", str(home)).stdout
    assert json.loads(key_file.read_text()) == data


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_rotation_keeps_everything_readable(tmp_path: Path, backend: str) -> None:
    home = tmp_path / "kh"
    keyhold_cli("init", "--home", str(home))
    server = await launch(home, backend, "")
    database_url = server.database_url
    fx = Fixture()
    try:
        for name, region in (("alice", "us"), ("bob", "us"), ("carol", "eu"), ("dave", "row")):
            fx.users[name] = await new_member(server, region)
        u = {k: c.username for k, c in fx.users.items()}
        us_only = await fx.users["alice"].start_conversation([u["bob"]])
        us_eu = await fx.users["alice"].start_conversation([u["carol"]])
        group = await fx.users["carol"].start_conversation(
            [u["alice"], u["bob"], u["dave"]], title="all regions"
        )
        eu_row = await fx.users["carol"].start_conversation([u["dave"]])
        assert "region us" in us_only.readable_by and "eu, us" in us_eu.readable_by
        for i in range(3):
            await fx.send("alice", us_only.id, f"us only {i}")
            await fx.send("bob", us_only.id, f"reply {i}")
            await fx.send("carol", us_eu.id, f"across the atlantic {i}")
            await fx.send("dave", group.id, f"group {i} from dave")
            await fx.send("carol", eu_row.id, f"eu to row {i}")
        data = os.urandom(5000)
        att = await fx.users["dave"].send_file(group.id, data, "photo.bin")
        assert att.attachment is not None
        fx.attachment = (att.attachment.id, data)

        per_region = assert_all_at(home, database_url, 1)
        # DEKs are wrapped once per member region: us {us_only, us_eu, group}, eu {us_eu,
        # group, eu_row}, row {group, eu_row}.
        assert per_region == {"us": 3, "eu": 3, "row": 2}, per_region

        # -- rotation 1, while the server runs --------------------------------------------------
        out = keys_rotate(home, database_url)
        for region in REGIONS:
            assert f"region {region}: new KEK version 2" in out, out
        assert mode(home / "keys.json") == 0o600
        assert_all_at(home, database_url, 2)
        await check_readable(server, fx)
        # The running server seals new items under the new KEK version: a new epoch (a new
        # conversation) is wrapped with v2, and the existing ones keep working.
        us_row = await fx.users["alice"].start_conversation([u["dave"]])
        await fx.send("alice", us_row.id, "after the first rotation")
        await fx.send("bob", us_only.id, "still works after rotation 1")
        await fx.send("dave", group.id, "group after rotation 1")
        assert_all_at(home, database_url, 2)
        await check_readable(server, fx)

        # -- rotation 2, while the server is stopped --------------------------------------------
        stop_server(server)
        out = keys_rotate(home, database_url)
        for region in REGIONS:
            assert f"region {region}: new KEK version 3" in out, out
        per_region = assert_all_at(home, database_url, 3)
        assert per_region == {"us": 4, "eu": 3, "row": 3}, per_region

        server = await launch(home, backend, database_url)
        await fx.reconnect(server)
        await check_readable(server, fx)
        await fx.send("carol", us_eu.id, "after a restart on v3")
        fresh = await fx.users["bob"].start_conversation([u["carol"]])
        await fx.send("bob", fresh.id, "a new epoch under v3")
        assert_all_at(home, database_url, 3)
        stop_server(server)

        # -- drop the old KEK versions: nothing may need them any more --------------------------
        key_file = home / "keys.json"
        keys = json.loads(key_file.read_text())
        keys["regions"] = {r: {"3": v["3"]} for r, v in keys["regions"].items()}
        key_file.write_text(json.dumps(keys))
        key_file.chmod(0o600)
        server = await launch(home, backend, database_url)
        await fx.reconnect(server)
        await check_readable(server, fx)
        await fx.send("alice", us_only.id, "only v3 exists now")
        await check_readable(server, fx)
    finally:
        await fx.close()
        stop_server(server)


# -- ConversationKey: every binding of the associated data ----------------------------------------

CONVERSATION, MESSAGE, SENDER, EPOCH = 7, 115_000_000_000_001, 42, 3
BODY = b"the body of one message"


def test_message_opens_only_where_it_was_sealed() -> None:
    dek = new_data_key()
    key = ConversationKey(CONVERSATION, EPOCH, dek)
    sealed = key.seal_message(MESSAGE, SENDER, BODY)
    assert ConversationKey(CONVERSATION, EPOCH, dek).open_message(MESSAGE, SENDER, sealed) == BODY
    assert BODY not in sealed
    assert key.seal_message(MESSAGE, SENDER, BODY) != sealed, "a fresh nonce every time"

    wrong = {
        "conversation": lambda: ConversationKey(CONVERSATION + 1, EPOCH, dek).open_message(
            MESSAGE, SENDER, sealed
        ),
        "message id": lambda: key.open_message(MESSAGE + 1, SENDER, sealed),
        "sender": lambda: key.open_message(MESSAGE, SENDER + 1, sealed),
        "epoch": lambda: ConversationKey(CONVERSATION, EPOCH + 1, dek).open_message(MESSAGE, SENDER, sealed),
        "key": lambda: ConversationKey(CONVERSATION, EPOCH, new_data_key()).open_message(
            MESSAGE, SENDER, sealed
        ),
        "truncated": lambda: key.open_message(MESSAGE, SENDER, sealed[:-1]),
        "too short": lambda: key.open_message(MESSAGE, SENDER, sealed[:20]),
        "empty": lambda: key.open_message(MESSAGE, SENDER, b""),
        "appended": lambda: key.open_message(MESSAGE, SENDER, sealed + b"\0"),
        "as attachment": lambda: key.open_attachment(str(MESSAGE), SENDER, b"data", sealed),
    }
    for what, attempt in wrong.items():
        with pytest.raises(SealError):
            attempt()
            pytest.fail(f"opened with a different {what}")


def test_flipping_any_byte_fails() -> None:
    key = ConversationKey(CONVERSATION, EPOCH, new_data_key())
    sealed = key.seal_message(MESSAGE, SENDER, BODY)
    for i in range(len(sealed)):
        for bit in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[i] ^= bit
            with pytest.raises(SealError):
                key.open_message(MESSAGE, SENDER, bytes(tampered))


def test_large_ids_are_bound_exactly() -> None:
    """Ids near the top of their range are not truncated into a collision."""
    dek = new_data_key()
    big = 2**53 - 1
    key = ConversationKey(big, 2**31 - 1, dek)
    sealed = key.seal_message(big, big, BODY)
    assert key.open_message(big, big, sealed) == BODY
    with pytest.raises(SealError):
        key.open_message(big - 1, big, sealed)
    with pytest.raises(SealError):
        key.open_message(big, big - 1, sealed)
    with pytest.raises((SealError, struct.error, OverflowError, ValueError)):
        ConversationKey(big, 2**31 - 1, dek).open_message(big + 2**64, big, sealed)


def test_attachment_parts_and_ids_are_bound() -> None:
    dek = new_data_key()
    key = ConversationKey(CONVERSATION, EPOCH, dek)
    data = key.seal_attachment("a_one", SENDER, b"data", b"file bytes")
    assert key.open_attachment("a_one", SENDER, b"data", data) == b"file bytes"
    for attempt in (
        lambda: key.open_attachment("a_two", SENDER, b"data", data),
        lambda: key.open_attachment("a_one", SENDER + 1, b"data", data),
        lambda: key.open_attachment("a_one", SENDER, b"meta", data),
        lambda: ConversationKey(CONVERSATION + 1, EPOCH, dek).open_attachment("a_one", SENDER, b"data", data),
        lambda: ConversationKey(CONVERSATION, EPOCH + 1, dek).open_attachment("a_one", SENDER, b"data", data),
        lambda: key.open_message(MESSAGE, SENDER, data),
    ):
        with pytest.raises(SealError):
            attempt()
