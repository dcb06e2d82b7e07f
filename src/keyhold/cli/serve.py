"""Running the server: uvicorn with uvloop and httptools, TLS 1.2+ with AEAD suites only."""

from __future__ import annotations

import ipaddress
import logging
import ssl

import uvicorn

from keyhold.api.app import create_app
from keyhold.config import Settings

# TLS 1.2 AEAD suites with forward secrecy; TLS 1.3 suites are all AEAD already.
TLS12_AEAD_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class InsecureBindRefused(Exception):
    pass


class DropQueryStrings(logging.Filter):
    """Access-log lines keep the path and drop the query: queries can carry file names."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


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
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=256 * 1024,
        ws_ping_interval=30,
        ws_ping_timeout=30,
        log_level=log_level,
        # Access logs (debug only) carry paths without queries; tokens are never in URLs.
        access_log=log_level == "debug",
        ssl_certfile=settings.tls_certfile or None,
        ssl_keyfile=settings.tls_keyfile or None,
        ssl_ciphers=TLS12_AEAD_CIPHERS,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    config.load()
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        config.ssl.options |= ssl.OP_NO_COMPRESSION
    logging.getLogger("keyhold").setLevel(log_level.upper())
    logging.getLogger("uvicorn.access").addFilter(DropQueryStrings())
    # The WebSocket library's debug output carries handshake headers (bearer tokens) and frame
    # contents (message text): never let it through, whatever the level.
    logging.getLogger("websockets").setLevel(logging.INFO)
    return uvicorn.Server(config)
