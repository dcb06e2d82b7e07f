"""Settings of one Keyhold data dir.

A data dir (`$KEYHOLD_HOME`, default `./var`) holds `config.toml`, the SQLite database,
the local key file and the encrypted blobs. Every setting has a secure default; the file only
records what an operator changed. Environment variables `KEYHOLD_<NAME>` override the file so
that containers need no file edits.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_HOME = "./var"
CONFIG_FILE = "config.toml"


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str = ""  # empty: SQLite file in the data dir
    regions: tuple[str, ...] = ("us", "eu", "row")
    # The region whose staff (and KEK) this deployment answers to when one is needed by default.
    default_region: str = "us"
    max_text_chars: int = 4000
    max_body_bytes: int = 64 * 1024
    # A client whose body is refused as too large is read (and dropped) this long before the
    # 413, so that it reads the answer rather than a reset; one that announced more than it
    # sends holds its connection this long.
    body_drain_seconds: int = 10
    # A request's line and headers must arrive within this many seconds of the connection's
    # opening (or of the request's first byte, on a kept-alive connection): a client sending
    # nothing, or a byte at a time, would otherwise hold a connection for ever.
    request_head_seconds: int = 20
    # A request body may pause this long between two reads (and must average 500 bytes a
    # second beyond it), and a response may wait this long for a client that reads nothing.
    transfer_stall_seconds: int = 30
    max_attachment_bytes: int = 10 * 1024 * 1024
    max_group_members: int = 32
    # Streams (`/api/v1/stream`) one member may have open at once on a server, all sessions
    # together: each holds a socket, a subscription and what is queued for it.
    max_streams_per_member: int = 10
    token_ttl_seconds: int = 30 * 24 * 3600
    # The server's name in full member ids (`@alice:keyhold.local`), as end-to-end encryption
    # names people; a DNS name the deployment controls. Changing it renames every member there.
    server_name: str = "keyhold.local"
    staff_session_seconds: int = 3600
    # Messages before and after each reported message that a report case opens to its moderator.
    report_context_messages: int = 10
    # argon2id cost; the defaults are argon2-cffi's (t=3, 64 MiB, p=4). Lower only for tests.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 64 * 1024
    argon2_parallelism: int = 4
    password_hash_concurrency: int = 2
    # Sign-ins waiting for a hashing thread beyond the busy ones; past that: 503, Retry-After.
    password_hash_queue: int = 16
    # A conversation key (DEK) is retired after this many messages or this many seconds.
    epoch_max_messages: int = 10_000
    epoch_max_seconds: int = 7 * 24 * 3600
    # Group commit: the message writer commits at most this many sends per transaction
    # (2,048 measured +11% over 512 at 100 clients, for ~35 MB more memory at peak).
    write_batch_max: int = 2048
    replay_page_size: int = 500
    tls_certfile: str = ""
    tls_keyfile: str = ""
    # Addresses of reverse proxies whose X-Forwarded-For is believed (comma-separated). Empty:
    # the peer address is the client's, which is what sign-in throttling counts. "*" is refused:
    # it would let every client name its own address and so escape the throttle.
    trusted_proxies: str = ""
    # Every rate limit of the safety policy (safety-policy.toml, [rate_limits]) is multiplied by
    # this: the test suite and the throughput benchmarks send far faster than people. Keep 1.
    rate_limit_scale: int = 1
    # The scanning pipeline on `standard` messages and uploads (docs/safety.md, "Verdicts"): on |
    # off. `e2ee` content is never scanned either way.
    scanning: str = "on"
    # An operator's HTTP text classifier the pipeline also asks (empty: rules and the built-in
    # scanner only), and what an unanswered request means: true lets the message through, false
    # holds it for a moderator.
    scanning_classifier_url: str = ""
    scanning_classifier_fail_open: bool = True
    # Where the rules and the built-in scanner run: in a child process of the server's own, on
    # another core (on), or on the server's event loop (off); auto: on when the machine has more
    # than one CPU. Not with a classifier URL: that pipeline waits on the network anyway.
    scanning_process: str = "auto"
    # What a member whose message points to self-harm is shown with their message: support, never
    # a punishment. Name your region's services here; the default names no number.
    support_text: str = (
        "It sounds like you may be going through something hard. You don't have to face it alone: "
        "if you are in danger now, call your local emergency number; a crisis line or helpline near "
        "you can listen, any time."
    )
    support_url: str = "https://findahelpline.com"
    # The built web app (index.html and assets/) served at `/`. Empty: the `web/dist` of the
    # source checkout this package runs from (`make run` builds it there); without a built app
    # `/` says how to build it and the API works as ever.
    web_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_scan_process(self) -> bool:
        """`scanning_process`, with auto decided by this machine's CPUs."""
        if self.scanning_process == "auto":
            return len(os.sched_getaffinity(0)) > 1  # the CPUs this process may run on
        return self.scanning_process == "on"

    @property
    def db_path(self) -> Path:
        return self.home / "keyhold.db"

    @property
    def key_file(self) -> Path:
        return self.home / "keys.json"

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def signing_key_file(self) -> Path:
        return self.home / "signing-key.pem"

    @property
    def franking_key_file(self) -> Path:
        return self.home / "franking-keys.json"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.db_path}"

    @property
    def effective_web_dir(self) -> Path:
        if self.web_dir:
            return Path(self.web_dir).resolve()
        # src/keyhold/config.py -> the checkout's root; an installed wheel finds no web/dist there
        # and serves the "how to build the app" page instead.
        return Path(__file__).resolve().parents[2] / "web" / "dist"


def _coerce(name: str, raw: Any, default: Any) -> Any:
    if isinstance(default, bool):
        return raw if isinstance(raw, bool) else str(raw).lower() in {"1", "true", "yes"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, tuple):
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return tuple(str(i).strip() for i in items if str(i).strip())
    if isinstance(default, Path):
        return Path(raw)
    return str(raw) if not isinstance(raw, dict) else raw


def resolve_home(home: str | Path | None) -> Path:
    return Path(home or os.environ.get("KEYHOLD_HOME") or DEFAULT_HOME).resolve()


def load_settings(home: str | Path | None = None, **overrides: Any) -> Settings:
    """Defaults, then `config.toml`, then `KEYHOLD_*` environment, then explicit overrides."""
    base = Settings(home=resolve_home(home))
    values: dict[str, Any] = {}
    config_path = base.home / CONFIG_FILE
    if config_path.exists():
        with config_path.open("rb") as fh:
            values.update(tomllib.load(fh))
    for f in fields(Settings):
        env = os.environ.get(f"KEYHOLD_{f.name.upper()}")
        if env is not None and f.name != "home":
            values[f.name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: getattr(base, f.name) for f in fields(Settings)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown setting(s) in {config_path}: {', '.join(sorted(unknown))}")
    coerced = {k: _coerce(k, v, known[k]) for k, v in values.items() if k != "home"}
    settings = replace(base, **coerced)
    if "*" in settings.trusted_proxies.split(","):
        raise ValueError("trusted_proxies cannot be '*': name the proxies' addresses")
    if not _SERVER_NAME.fullmatch(settings.server_name):
        raise ValueError(f"server_name {settings.server_name!r} is not a DNS name (letters, digits, '-', '.')")
    for name in ("request_head_seconds", "transfer_stall_seconds", "body_drain_seconds"):
        if getattr(settings, name) <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, not {getattr(settings, name)}")
    if settings.max_streams_per_member < 1:
        raise ValueError(f"max_streams_per_member must be at least 1, not {settings.max_streams_per_member}")
    if settings.scanning not in ("on", "off"):
        raise ValueError(f"scanning must be on or off, not {settings.scanning!r}")
    if settings.scanning_process not in ("auto", "on", "off"):
        raise ValueError(f"scanning_process must be auto, on or off, not {settings.scanning_process!r}")
    if settings.default_region not in settings.regions:
        raise ValueError(f"default_region {settings.default_region!r} is not one of {settings.regions}")
    return settings


_SERVER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")

# Settings that come from the environment of tests and benchmarks are not frozen into the file.
_NOT_PERSISTED = {
    "body_drain_seconds",
    "argon2_time_cost",
    "argon2_memory_kib",
    "argon2_parallelism",
    "tls_certfile",
    "tls_keyfile",
    "rate_limit_scale",
    # Where the built app lies belongs to the install, not to the data dir: a checkout moved
    # elsewhere would otherwise keep serving (or miss) an old build.
    "web_dir",
}


def render_config(settings: Settings) -> str:
    """The `config.toml` written by `keyhold init`: every default, commented, for operators."""
    lines = [
        "# Keyhold settings. Uncomment to change; KEYHOLD_<NAME> environment variables override.",
    ]
    defaults = Settings(home=settings.home)
    for f in fields(Settings):
        if f.name in {"home", "extra"}:
            continue
        value = getattr(settings, f.name)
        # What `keyhold init` was told (e.g. --database-url) is written active, the rest commented.
        prefix = "" if value != getattr(defaults, f.name) and f.name not in _NOT_PERSISTED else "# "
        if isinstance(value, tuple):
            rendered = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        elif isinstance(value, str):
            rendered = f'"{value}"'
        elif isinstance(value, bool):
            rendered = "true" if value else "false"  # TOML's spelling
        else:
            rendered = str(value)
        lines.append(f"{prefix}{f.name} = {rendered}")
    return "\n".join(lines) + "\n"
