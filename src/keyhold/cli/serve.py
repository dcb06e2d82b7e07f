"""Running the server: uvicorn with uvloop and httptools (with limits on request heads),
TLS 1.2+ with AEAD suites only."""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from pathlib import Path

import uvicorn
import websockets

from keyhold.app import asgi_app
from keyhold.cli.http_protocol import http_protocol
from keyhold.cli.ws_protocol import websocket_protocol
from keyhold.config import Settings

# TLS 1.2 AEAD suites with forward secrecy; TLS 1.3 suites are all AEAD already.
TLS12_AEAD_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
# An idle HTTP connection stays open this long. A client that reuses one for less (the SDK:
# 5 s) never sends a request just as the server closes it, which fails that request: uvicorn's
# default, 5 s, equalled the SDK's. (Browsers retry a request that fails that way.)
IDLE_CONNECTION_SECONDS = 20


class InsecureBindRefused(Exception):
    pass


def _without_query(args: object, position: int) -> object:
    if isinstance(args, tuple) and len(args) > position and isinstance(args[position], str):
        return (*args[:position], args[position].split("?", 1)[0], *args[position + 1 :])
    return args


class DropQueryStrings(logging.Filter):
    """HTTP access lines (debug only) keep the path and drop the query: queries can carry
    report-read reasons (and, from an old client, a file name), and a careless client may put a
    token there."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.args = _without_query(record.args, 2)  # type: ignore[assignment]
        return True


WEBSOCKET_LINE = '%s - "WebSocket %s"'
WEBSOCKETS_LIBRARY = str(Path(websockets.__file__).parent) + os.sep


class QuietWebSocketLines(logging.Filter):
    """uvicorn's error log also carries, per WebSocket, a handshake line with the client's
    address and query string, and (through the logger uvicorn hands the `websockets` protocol)
    "connection open/closed" lines and, at debug, every header (bearer tokens) and frame
    (message text). The handshake line appears only at debug, without its query; the protocol's
    own lines never, at any level, unless they are warnings."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.pathname.startswith(WEBSOCKETS_LIBRARY):
            return record.levelno >= logging.WARNING
        if not (isinstance(record.msg, str) and record.msg.startswith(WEBSOCKET_LINE)):
            return True
        record.args = _without_query(record.args, 1)  # type: ignore[assignment]
        return self.verbose


# Lines uvicorn logs as warnings for any client's malformed request: one per connection, so
# anyone could fill the log with them. The client got its 400; they appear at debug only.
CLIENT_ERROR_LINES = frozenset({"Invalid HTTP request received.", "Unsupported upgrade request."})


class QuietClientErrors(logging.Filter):
    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or not (isinstance(record.msg, str) and record.msg in CLIENT_ERROR_LINES)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tls: bool, insecure_http: bool) -> None:
    if not tls and not insecure_http and not is_loopback(host):
        raise InsecureBindRefused(
            f"refusing to serve plain HTTP on {host}: give --tls-cert/--tls-key (or run "
            "`keyhold init --self-signed`), or pass --insecure-http if a TLS proxy sits in front"
        )


def build_server(settings: Settings, host: str, port: int, log_level: str = "info") -> uvicorn.Server:
    config = uvicorn.Config(
        asgi_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http=http_protocol(settings.request_head_seconds, settings.transfer_stall_seconds),
        ws=websocket_protocol(settings.transfer_stall_seconds),
        ws_max_size=256 * 1024,
        # No permessage-deflate: one compression context over a member's events from all their
        # conversations is a size oracle for anyone who can send them a message and see record
        # sizes on the wire (CRIME-style), and it cost ~42 KB more per connection. Measured in
        # tests/hostile/test_stream_compression.py.
        ws_per_message_deflate=False,
        ws_ping_interval=30,
        ws_ping_timeout=30,
        timeout_keep_alive=IDLE_CONNECTION_SECONDS,
        log_level=log_level,
        # Access logs (debug only) carry paths without queries; tokens are never in URLs.
        access_log=log_level == "debug",
        ssl_certfile=settings.tls_certfile or None,
        ssl_keyfile=settings.tls_keyfile or None,
        ssl_ciphers=TLS12_AEAD_CIPHERS,
        server_header=False,
        # X-Forwarded-For is believed only from configured proxies: sign-in throttling counts
        # client addresses, which any client could otherwise name for itself.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
        timeout_graceful_shutdown=10,
    )
    config.load()
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        config.ssl.options |= ssl.OP_NO_COMPRESSION
    logging.getLogger("keyhold").setLevel(log_level.upper())
    logging.getLogger("uvicorn.access").addFilter(DropQueryStrings())
    logging.getLogger("uvicorn.error").addFilter(QuietWebSocketLines(verbose=log_level == "debug"))
    logging.getLogger("uvicorn.error").addFilter(QuietClientErrors(verbose=log_level == "debug"))
    # The WebSocket library's debug output carries handshake headers (bearer tokens) and frame
    # contents (message text): never let it through, whatever the level.
    logging.getLogger("websockets").setLevel(logging.INFO)
    return uvicorn.Server(config)
