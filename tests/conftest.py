"""Shared fixtures: real Keyhold servers on loopback (subprocesses), on SQLite and PostgreSQL.

`server` is parametrized over both backends; PostgreSQL comes from the throwaway cluster that
`make test` starts (KEYHOLD_TEST_PG_URL). Without that variable the postgres half is skipped,
which `make test` never does. Each server gets its own data dir (and its own PG database).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keyhold.sdk import Client

# pytest-xdist's workers start with COLUMNS=80 (a plain `pytest` run has none), and Rich wraps
# captured output to it: a `keyhold` command's error naming a long temporary path then breaks
# mid-line. Commands run by tests see what a pipe sees; a test that wants a width sets one.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

# Cheap argon2 parameters for tests only: the suite registers hundreds of users.
TEST_ENV = {
    # The scan runs on the server's loop here (as on a one-CPU machine): a child process per
    # test server would cost the suite a core-second each. Its own tests turn it on
    # (test_safety_scan_process.py, and the verdicts of test_safety_verdicts.py).
    "KEYHOLD_SCANNING_PROCESS": "off",
    "KEYHOLD_ARGON2_TIME_COST": "1",
    "KEYHOLD_ARGON2_MEMORY_KIB": "1024",
    "KEYHOLD_ARGON2_PARALLELISM": "1",
    # A client that announces a body it never sends holds the server this long (a test in
    # test_bad_input.py does): the behaviour is the same at 10 s, the production default.
    "KEYHOLD_BODY_DRAIN_SECONDS": "2",
    # Tests send bursts no person would (150 messages at once): rate limits are tested in
    # test_rate_limits.py, on servers of their own at the real figures.
    "KEYHOLD_RATE_LIMIT_SCALE": "1000",
}
PASSWORD = "correct horse battery"
# One TLS context for every httpx client the tests make (`verify=TLS`): without it httpx builds
# one per client, loading the CA bundle each time (~25 ms of CPU), even for http:// URLs. That
# was most of the test processes' own CPU.
TLS = httpx.create_ssl_context()
# The safety policy the shared test servers start with: message requests off, so that tests of
# messaging need not make every pair of members friends first. A test module of the contact
# rules sets `SERVER_POLICY = None` to get the built-in defaults (requests on).
REQUESTS_OFF = '[default]\nnon_friend_messages = "allow"\n'
_names = itertools.count(1)


@dataclass
class Server:
    url: str
    home: Path
    database_url: str
    backend: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def settings_overrides() -> dict[str, str]:
    """TEST_ENV as `load_settings` keyword arguments: what a test server reads from it."""
    return {name.removeprefix("KEYHOLD_").lower(): value for name, value in TEST_ENV.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keyhold_cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyhold", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **TEST_ENV, **(env or {})},
        check=check,
        timeout=300,
    )


def create_pg_database() -> str:
    base = os.environ.get("KEYHOLD_TEST_PG_URL")
    if not base:
        pytest.skip("KEYHOLD_TEST_PG_URL not set (make test provides a PostgreSQL cluster)")
    name = "kh_" + uuid.uuid4().hex[:12]
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(base.replace("postgresql+asyncpg", "postgresql"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return base.rsplit("/", 1)[0] + "/" + name


def start_server(
    home: Path,
    backend: str = "sqlite",
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    database_url: str | None = None,
    policy: str | None = REQUESTS_OFF,
) -> Server:
    """`database_url` (PostgreSQL) is used as given instead of a new database in the shared cluster.
    `policy` is written as the data dir's safety-policy.toml unless it has one (None: none)."""
    policy_file = home / "safety-policy.toml"
    if policy is not None and not policy_file.exists():
        home.mkdir(parents=True, exist_ok=True)
        policy_file.write_text(policy)
    if database_url is None:
        database_url = create_pg_database() if backend == "postgres" else ""
    port = free_port()
    log_path = home.parent / f"{home.name}-server.log"
    args = [sys.executable, "-m", "keyhold", "serve", "--home", str(home), "--port", str(port), *extra_args]
    if database_url:
        args += ["--database-url", database_url]
    log = log_path.open("wb")
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **TEST_ENV, **(env or {})}
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/api/v1/health", verify=TLS, timeout=1).status_code == 200:
                return Server(url, home, database_url, backend, process, log_path)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start:\n{log_path.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    policy = getattr(request.module, "SERVER_POLICY", REQUESTS_OFF)
    srv = start_server(tmp_path_factory.mktemp("home") / "kh", request.param, policy=policy)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("home") / "kh", "sqlite")
    yield srv
    stop_server(srv)


def unique(prefix: str = "u") -> str:
    return f"{prefix}{next(_names)}_{uuid.uuid4().hex[:6]}"


async def new_member(server: Server, region: str = "us", name: str | None = None, e2ee: bool = False) -> Client:
    """A registered, signed-in member. Without `e2ee` the client publishes no device keys, so
    its streams carry exactly the events of `standard` messaging (no `e2ee.*` frames)."""
    return await Client.register(
        server.url, name or unique(), PASSWORD, birthdate="1990-05-17", region=region, e2ee=e2ee
    )


async def raw(client: Client, method: str, path: str, **kwargs: object) -> httpx.Response:
    """A request with the client's token but no SDK in between: for tests of the API's own
    answers (statuses, headers) rather than of the SDK."""
    async with httpx.AsyncClient(
        verify=TLS,
        base_url=client.base_url + "/api/v1", headers={"Authorization": f"Bearer {client.token}"}, timeout=60
    ) as http:
        return await http.request(method, path, **kwargs)  # type: ignore[arg-type]
