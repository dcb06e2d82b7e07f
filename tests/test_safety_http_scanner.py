"""The HTTP classification adapter against a real service on loopback: the request shape,
answers, timeouts and errors in both fail modes, and its place in the pipeline."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from keyhold.safety.http_scanner import OUTAGE, HttpScanner
from keyhold.safety.pipeline import build_scanner
from keyhold.safety.scanning import ScanContext

SLOW_SECONDS = 1.0
TIMEOUT = 0.2


class Service:
    """What the fake classification service was asked, and what it answers per path."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.answers: dict[str, tuple[int, bytes]] = {
            "/ok": (
                200,
                json.dumps({"action": "hold", "category": "scam", "scores": {"scam": 0.91}}).encode(),
            ),
            "/allow": (200, json.dumps({"action": "allow", "category": None}).encode()),
            "/self-harm": (200, json.dumps({"action": "block", "category": "self_harm"}).encode()),
            "/unknown-category": (200, json.dumps({"action": "block", "category": "weather"}).encode()),
            "/not-json": (200, b"<html>oops</html>"),
            "/error": (500, b"{}"),
        }


@pytest.fixture
def service() -> Iterator[tuple[str, Service]]:
    state = Service()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append((self.path, json.loads(body)))
            if self.path == "/slow":
                time.sleep(SLOW_SECONDS)
                status, answer = 200, json.dumps({"action": "allow", "category": None}).encode()
            else:
                status, answer = state.answers[self.path]
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False  # a /slow request still sleeping must not hold the test
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


async def test_answer_and_request_shape(service: tuple[str, Service]) -> None:
    url, state = service
    scanner = HttpScanner(url + "/ok", timeout=2.0)
    context = ScanContext(sender_id=5, conversation_id=9, recipient_minor=True, sender_account_age_days=3.0)
    verdict = await scanner.scan("win a prize", context)
    await scanner.aclose()
    assert (verdict.action, verdict.category, dict(verdict.scores)) == ("hold", "scam", {"scam": 0.91})
    assert verdict.fired == ("http:service",)
    # Only the text and these three facts leave Keyhold: no ids of people or conversations.
    assert state.requests == [
        (
            "/ok",
            {
                "text": "win a prize",
                "context": {
                    "recipient_minor": True,
                    "sender_adult_non_friend": False,
                    "sender_account_age_days": 3.0,
                },
            },
        )
    ]


async def test_self_harm_from_the_service_is_never_punished(service: tuple[str, Service]) -> None:
    url, _ = service
    scanner = HttpScanner(url + "/self-harm", timeout=2.0)
    verdict = await scanner.scan("text", ScanContext())
    await scanner.aclose()
    assert (verdict.action, verdict.category, verdict.support) == ("flag", "self_harm", True)


@pytest.mark.parametrize("fail_open", [True, False])
@pytest.mark.parametrize("path", ["/slow", "/error", "/not-json", "/unknown-category"])
async def test_outages_in_both_fail_modes(service: tuple[str, Service], path: str, fail_open: bool) -> None:
    url, state = service
    scanner = HttpScanner(url + path, timeout=TIMEOUT, fail_open=fail_open)
    verdict = await scanner.scan("hello", ScanContext())
    await scanner.aclose()
    assert [p for p, _ in state.requests] == [path]  # it was asked, and did not answer in time or well
    assert verdict.fired == (OUTAGE,)
    assert verdict.category is None
    if fail_open:
        assert verdict.action == "allow"
    else:
        assert verdict.action == "hold"
        assert "unavailable" in verdict.policy


@pytest.mark.parametrize("fail_open", [True, False])
async def test_a_refused_connection_is_an_outage(fail_open: bool) -> None:
    from tests.conftest import free_port

    scanner = HttpScanner(f"http://127.0.0.1:{free_port()}/classify", timeout=TIMEOUT, fail_open=fail_open)
    verdict = await scanner.scan("hello", ScanContext())
    await scanner.aclose()
    assert verdict.action == ("allow" if fail_open else "hold")
    assert verdict.fired == (OUTAGE,)


async def test_an_outage_is_logged_without_the_urls_secrets(
    service: tuple[str, Service], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = service
    host_port = url.removeprefix("http://")
    secret_url = url.replace("://", "://op:hunter2@") + "/error?key=s3cret-api-key"
    scanner = HttpScanner(secret_url, timeout=2.0)
    with caplog.at_level("WARNING", logger="keyhold"):
        verdict = await scanner.scan("hello", ScanContext())
    await scanner.aclose()
    assert verdict.fired == (OUTAGE,)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert host_port in logged  # which service failed is still said
    assert "s3cret-api-key" not in logged and "hunter2" not in logged and "/error" not in logged


async def test_the_pipeline_asks_the_service_unless_it_already_blocks(
    service: tuple[str, Service], tmp_path: Path
) -> None:
    url, state = service
    pipeline = build_scanner(tmp_path, url + "/ok", http_timeout=2.0)
    verdict = await pipeline.scan("see you at lunch", ScanContext())
    assert (verdict.action, verdict.category) == ("hold", "scam")
    assert "http:service" in verdict.fired
    blocked = await pipeline.scan("i'm going to stab you tonight", ScanContext())
    await pipeline.aclose()
    assert blocked.action == "block"
    assert "http:service" not in blocked.fired
    assert len(state.requests) == 1


async def test_a_local_verdict_outranks_an_allowing_service(
    service: tuple[str, Service], tmp_path: Path
) -> None:
    url, _ = service
    pipeline = build_scanner(tmp_path, url + "/allow", http_timeout=2.0)
    verdict = await pipeline.scan("how old are you? don't tell your parents we talk", ScanContext())
    await pipeline.aclose()
    assert verdict.category == "grooming"
    assert verdict.action in ("flag", "hold")
