"""Transport: no plain HTTP off loopback unless asked, and TLS 1.2+ with AEAD suites only + HSTS.

The negative handshakes (TLS 1.1, CBC suites) are each paired with a positive control: the same
client context completes a handshake against a deliberately permissive local TLS server, so a
failure against Keyhold is the server's policy and not a client that could not speak at all.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import PASSWORD, TEST_ENV, free_port, keyhold_cli, start_server, stop_server, unique
from keyhold.sdk import Client, KeyholdError

API = "/api/v1"
CBC_SUITES = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA"


# -- refusing plain HTTP off loopback -------------------------------------------------------------


def test_plain_http_on_all_interfaces_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "kh"
    port = free_port()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "keyhold",
                "serve",
                "--home",
                str(home),
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **TEST_ENV},
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("`keyhold serve --host 0.0.0.0` without TLS kept running instead of refusing")
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "--insecure-http" in message, message
    assert "Uvicorn running" not in message


def test_plain_http_on_all_interfaces_with_insecure_http_starts(tmp_path: Path) -> None:
    server = start_server(tmp_path / "kh", "sqlite", extra_args=("--host", "0.0.0.0", "--insecure-http"))
    try:
        reply = httpx.get(server.url + API + "/health", timeout=10)
        assert reply.status_code == 200
        assert "strict-transport-security" not in reply.headers, "no HSTS over plain HTTP"
    finally:
        stop_server(server)
    assert server.process.returncode is not None


# -- a TLS server ---------------------------------------------------------------------------------


@dataclass
class TlsServer:
    url: str
    port: int
    cert: Path
    process: subprocess.Popen[bytes]
    log_path: Path


def trust(cert: Path) -> ssl.SSLContext:
    """What httpx's verify=<cert path> means (httpx 0.28 deprecates passing the path itself)."""
    return ssl.create_default_context(cafile=str(cert))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    home = tmp_path_factory.mktemp("tls") / "kh"
    out = keyhold_cli("init", "--self-signed", "--home", str(home)).stdout
    cert, key = home / "tls-cert.pem", home / "tls-key.pem"
    assert cert.exists() and key.exists(), out
    assert (key.stat().st_mode & 0o077) == 0, "the TLS private key is private"
    port = free_port()
    log_path = home.parent / "tls-server.log"
    args = [sys.executable, "-m", "keyhold", "serve", "--home", str(home), "--port", str(port)]
    args += ["--host", "127.0.0.1", "--tls-cert", str(cert), "--tls-key", str(key)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **TEST_ENV})
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail(f"TLS server exited:\n{log_path.read_text()}")
        try:
            if httpx.get(url + API + "/health", verify=trust(cert), timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"TLS server did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
    yield TlsServer(url, port, cert, process, log_path)
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def handshake(port: int, ctx: ssl.SSLContext) -> tuple[str | None, str | None]:
    """Connect and complete a TLS handshake; returns (protocol version, cipher name)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            cipher = tls.cipher()
            return tls.version(), cipher[0] if cipher else None


def client_context(cert: Path, max_version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cert)
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = max_version
    # Security level 0 lets this OpenSSL offer the legacy protocol/suites at all.
    ctx.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
    return ctx


@contextlib.contextmanager
def permissive_server(cert: Path) -> Iterator[int]:
    """A local TLS server that accepts TLS 1.0+ and every suite: the positive control."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, cert.with_name("tls-key.pem"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # closing a listener does not wake a blocked accept(): poll `stop`
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with contextlib.suppress(OSError, ssl.SSLError), ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def refused_by_server(port: int, ctx: ssl.SSLContext) -> ssl.SSLError:
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as info:
        version, cipher = handshake(port, ctx)
        pytest.fail(f"the handshake succeeded with {version} {cipher}")
    error = info.value
    reason = getattr(error, "reason", "") or ""
    assert reason not in {"NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE"}, (
        f"the client refused on its own ({reason}): the test would prove nothing"
    )
    return error  # type: ignore[return-value]


# -- TLS tests ------------------------------------------------------------------------------------


def test_https_works_with_hsts(tls_server: TlsServer) -> None:
    with httpx.Client(base_url=tls_server.url + API, verify=trust(tls_server.cert), timeout=10) as http:
        ok = http.get("/health")
        assert ok.status_code == 200 and ok.json()["status"] == "ok"
        hsts = ok.headers.get("strict-transport-security", "")
        assert hsts, "no Strict-Transport-Security header over TLS"
        max_age = int(hsts.split("max-age=")[1].split(";")[0])
        assert max_age >= 15_552_000, f"HSTS max-age too short: {hsts}"
        refused = http.get("/conversations")  # errors carry it too
        assert refused.status_code == 401
        assert refused.headers.get("strict-transport-security") == hsts
        assert refused.headers["content-type"].startswith("application/problem+json")


def test_modern_clients_negotiate_aead(tls_server: TlsServer) -> None:
    v13 = client_context(tls_server.cert, ssl.TLSVersion.TLSv1_3)
    version, cipher = handshake(tls_server.port, v13)
    assert version == "TLSv1.3", version
    v12 = client_context(tls_server.cert, ssl.TLSVersion.TLSv1_2)
    version, cipher = handshake(tls_server.port, v12)
    assert version == "TLSv1.2", version
    assert cipher is not None and ("GCM" in cipher or "CHACHA20" in cipher), cipher


def test_tls_1_1_is_refused(tls_server: TlsServer) -> None:
    ctx = client_context(tls_server.cert, ssl.TLSVersion.TLSv1_1)
    with permissive_server(tls_server.cert) as control_port:
        assert handshake(control_port, ctx)[0] in {"TLSv1.1", "TLSv1"}, "control: the client speaks TLS 1.1"
    refused_by_server(tls_server.port, ctx)


def test_tls_1_2_cbc_suites_are_refused(tls_server: TlsServer) -> None:
    ctx = client_context(tls_server.cert, ssl.TLSVersion.TLSv1_2, CBC_SUITES)
    with permissive_server(tls_server.cert) as control_port:
        version, cipher = handshake(control_port, ctx)
        assert version == "TLSv1.2" and cipher is not None and "GCM" not in cipher, (version, cipher)
    refused_by_server(tls_server.port, ctx)
    # The same client offering one AEAD suite besides gets in, and gets that suite.
    aead = client_context(
        tls_server.cert, ssl.TLSVersion.TLSv1_2, CBC_SUITES + ":ECDHE-ECDSA-AES128-GCM-SHA256"
    )
    assert handshake(tls_server.port, aead) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")


def test_plain_http_to_the_tls_port_gets_nothing(tls_server: TlsServer) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}{API}/health", timeout=5)


async def test_sdk_over_https(tls_server: TlsServer) -> None:
    verify = str(tls_server.cert)
    alice_name, bob_name = unique("tls"), unique("tls")
    alice = await Client.register(tls_server.url, alice_name, PASSWORD, "1990-05-17", "us", verify=verify)
    bob = await Client.register(tls_server.url, bob_name, PASSWORD, "1990-05-17", "eu", verify=verify)
    again = await Client.login(tls_server.url, alice_name, PASSWORD, verify=verify)
    try:
        assert alice.username == alice_name and again.username == alice_name
        conv = await alice.start_conversation([bob_name])
        sent = await alice.send(conv.id, "over TLS")
        assert [m.text for m in await bob.history(conv.id)] == ["over TLS"]
        async with await bob.connect(since=0) as stream:
            event = await stream.next_event(wait=10)
            while event.message is None or event.message.id != sent.id:
                event = await stream.next_event(wait=10)
            assert event.message.text == "over TLS"
    finally:
        for client in (alice, bob, again):
            await client.close()
    # Without the certificate the SDK does not trust the server.
    with pytest.raises((httpx.ConnectError, KeyholdError)):
        await Client.login(tls_server.url, alice_name, PASSWORD)
    # verify=False checks nothing, over HTTP and on the WebSocket alike.
    careless = await Client.login(tls_server.url, alice_name, PASSWORD, verify=False)
    try:
        async with await careless.connect(since=0) as stream:
            event = await stream.next_event(wait=10)
            while event.message is None:
                event = await stream.next_event(wait=10)
            assert event.message.text == "over TLS"
    finally:
        await careless.close()
