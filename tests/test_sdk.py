"""The SDK as a library user meets it: every member route is a method, every failure a
`KeyholdError` (the network's too), and httpx's transport seam lets it talk to the application
in memory, without a socket."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from conftest import PASSWORD, Server, free_port, keyhold_cli, settings_overrides, unique
from keyhold.api.app import create_app
from keyhold.app import Keyhold, start_keyhold
from keyhold.config import load_settings
from keyhold.sdk import Client, KeyholdConnectionError, KeyholdError, KeyholdTimeout
from keyhold.sdk.client import KEEPALIVE_SECONDS


@pytest.fixture
async def in_memory(tmp_path: Path) -> AsyncIterator[httpx.ASGITransport]:
    """The real application and services of a fresh data dir, reached through ASGI in memory."""
    home = tmp_path / "kh"
    keyhold_cli("init", "--home", str(home))
    cheap = settings_overrides()
    settings = load_settings(home, **cheap)
    svc: Keyhold = await start_keyhold(settings)
    app = create_app(settings, start_keyhold)
    app.state.keyhold = svc  # the lifespan would do this; ASGITransport does not run it
    try:
        yield httpx.ASGITransport(app=app)
    finally:
        await svc.stop()


async def test_the_sdk_runs_against_the_application_in_memory(in_memory: httpx.ASGITransport) -> None:
    url = "http://keyhold.test"
    alice = await Client.register(url, unique("a"), PASSWORD, birthdate="1990-05-17", transport=in_memory)
    bob = await Client.register(url, unique("b"), PASSWORD, birthdate="1990-05-17", transport=in_memory)
    conv = await alice.start_conversation([bob.username])
    sent = await alice.send(conv.id, "hello in memory")
    assert [m.text for m in await bob.history(conv.id)] == ["hello in memory"]
    assert (await bob.user(alice.username))["username"] == alice.username

    case = await bob.report(conv.id, [sent.id], "spam", "testing the SDK")
    assert case["status"] == "open" and case["category"] == "spam"
    assert await bob.access_events() == []  # nobody read anything yet
    assert (await alice.transparency_head())["size"] >= 1
    with pytest.raises(KeyholdError) as refused:
        await alice.appeal(int(case["id"]), "nothing to appeal")
    assert refused.value.status == 404
    await alice.close()
    await bob.close()


async def test_an_unreachable_server_is_a_keyhold_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(KeyholdConnectionError) as caught:
        await Client.login(url, "nobody_here", PASSWORD)
    assert caught.value.status == 0 and isinstance(caught.value, KeyholdError)
    client = Client(url, "nobody_here", "kh_not_a_token")
    with pytest.raises(KeyholdConnectionError):
        await client.me()
    with pytest.raises(KeyholdConnectionError):
        await client.connect()
    await client.close()


async def test_a_server_that_never_answers_is_a_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        client = Client(url, "nobody_here", "kh_not_a_token", timeout=0.3)
        with pytest.raises(KeyholdTimeout):
            await asyncio.wait_for(client.me(), 10)
        await client.close()


def test_the_server_keeps_an_idle_connection_open_longer_than_the_sdk_reuses_one(sqlite_server: Server) -> None:
    """The SDK reuses an idle connection for up to `KEEPALIVE_SECONDS`. A server that closed
    idle connections at that same moment raced it: a request sent as the server closed failed
    with a ReadError (it did, once, in test_governance_legal.py). So the server keeps them
    open longer, and a request on a connection idle a second past the SDK's limit is answered."""
    host, port = sqlite_server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", "/api/v1/health")
        assert connection.getresponse().read() and connection.sock is not None
        first = connection.sock
        time.sleep(KEEPALIVE_SECONDS + 1)
        connection.request("GET", "/api/v1/health")
        answer = connection.getresponse()
        assert answer.status == 200 and answer.read()
        assert connection.sock is first, "the same connection, not a new one"
    finally:
        connection.close()
