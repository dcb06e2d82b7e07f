"""What the hostile-client tests share: raw HTTP clients from chosen loopback addresses, raw
WebSocket streams that report how they were closed, and problem+json checks.

Sign-in throttling is per client address, so tests that guess passwords do it from addresses
of their own (127.0.0.0/8 is all loopback on Linux) and never slow down the rest of a module.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyotp
import websockets
from websockets.asyncio.client import ClientConnection

from conftest import PASSWORD, REQUESTS_OFF, TLS, Server, create_pg_database, keyhold_cli, settings_overrides
from keyhold.app import Keyhold, start_keyhold
from keyhold.config import load_settings
from keyhold.core.accounts import Member
from keyhold.governance.service import Governance
from keyhold.governance.staff import StaffMember

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
WAIT = 10.0
_addresses = itertools.count(1)


def fresh_address() -> str:
    """A loopback address no other test of this run has used."""
    n = next(_addresses)
    while n % 256 in (0, 255):
        n = next(_addresses)
    return f"127.{100 + n // 65536}.{n // 256 % 256}.{n % 256}"


def http(server: Server, token: str | None = None, address: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.AsyncHTTPTransport(local_address=address) if address else None
    return httpx.AsyncClient(verify=TLS, base_url=server.url + API, headers=headers, transport=transport, timeout=60)


async def login_token(server: Server, username: str, password: str = PASSWORD) -> str:
    """A new session (another device) of an existing member."""
    async with http(server) as client:
        response = await client.post("/sessions", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def assert_problem(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A problem+json refusal with one of `statuses`; the problem."""
    assert response.status_code in statuses, f"{response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    problem = response.json()
    assert problem["status"] == response.status_code and problem["title"] and problem["detail"], problem
    return dict(problem)


def ws_url(server: Server, query: str = "since=latest") -> str:
    return "ws://" + server.url.removeprefix("http://") + API + "/stream?" + query


@dataclass
class RawStream:
    """A WebSocket to /stream that keeps every frame it reads."""

    ws: ClientConnection
    frames: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def next_frame(self, kind: str, wait: float = WAIT) -> dict[str, Any]:
        """The next frame of type `kind` (others are kept in `frames` and passed over)."""
        async with asyncio.timeout(wait):
            while True:
                frame = orjson.loads(await self.ws.recv())
                self.frames.append(frame)
                if frame.get("type") == kind:
                    return dict(frame)

    async def closed(self, wait: float = WAIT) -> tuple[int, str]:
        """Read until the server closes the socket; its close code and reason. A socket still
        open after `wait` seconds fails the test (the wait bounds liveness, it times nothing)."""
        try:
            async with asyncio.timeout(wait):
                while True:
                    self.frames.append(orjson.loads(await self.ws.recv()))
        except websockets.ConnectionClosed:
            pass
        except TimeoutError as exc:
            raise AssertionError(f"the stream is still open after {wait} s") from exc
        assert self.ws.close_code is not None
        return self.ws.close_code, self.ws.close_reason or ""

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    async def close(self) -> None:
        await self.ws.close()


async def open_stream(server: Server, token: str) -> RawStream:
    """A live-only stream (since=latest), returned once the server says it is ready."""
    ws = await websockets.connect(ws_url(server), additional_headers={"Authorization": f"Bearer {token}"})
    stream = RawStream(ws)
    await stream.next_frame("ready")
    return stream


# -- the service in this process (for faults that no client can cause) ----------------------------


@asynccontextmanager
async def service_in_process(home: Path, backend: str, **settings: Any) -> AsyncIterator[Keyhold]:
    """A data dir made by the real `keyhold init`, served by the real services in this process."""
    init = ["init", "--home", str(home)]
    if backend == "postgres":
        init += ["--database-url", await asyncio.to_thread(create_pg_database)]
    keyhold_cli(*init)
    if not (home / "safety-policy.toml").exists():  # as the shared test servers: requests off
        (home / "safety-policy.toml").write_text(REQUESTS_OFF)
    cheap = settings_overrides()
    svc = await start_keyhold(load_settings(home, **cheap, **settings))
    try:
        yield svc
    finally:
        await svc.stop()


async def member_in_process(svc: Keyhold, username: str) -> Member:
    await svc.accounts.register(username, PASSWORD, "1990-05-17", "us")
    token = (await svc.accounts.login(username, PASSWORD, address="in-process"))["token"]
    return await svc.accounts.authenticate(token)


async def staff_in_process(gov: Governance, username: str, role: str, region: str = "us") -> StaffMember:
    """A staff member made and signed in (password and TOTP) through the real services."""
    added = await gov.staff.add(username, PASSWORD, role, region)
    code = pyotp.TOTP(added["totp_secret"]).at(time.time())
    signed_in = await gov.staff.login(username, PASSWORD, code, address="in-process")
    return await gov.staff.authenticate(signed_in["token"])
