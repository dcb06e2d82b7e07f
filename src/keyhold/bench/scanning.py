"""`keyhold bench delivery --scanning compare`: the same `standard` load against a server with
the safety scanning off, then one with it on (each a fresh server of the bench's own), in one
run, and how the figures compare. The target (issue 9): on within 10% of off."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

from keyhold.bench.drive import Target, bench_target, plan, set_up_members, split, ws_base
from keyhold.bench.load import LoadResult
from keyhold.config import load_settings
from keyhold.safety.scan_process import READY_NOTICE

API = "/api/v1"
MODES = ("off", "on")
READY_LINE = READY_NOTICE.split("{", 1)[0].encode()
READY_TIMEOUT = 60.0


def _figures(result: LoadResult) -> dict[str, Any]:
    cpu = (
        None
        if result.server_cpu_pct is None or not result.messages
        else round(result.server_cpu_pct / 100 * result.duration_s / result.messages * 1e6, 1)
    )
    return {
        "messages_per_second": round(result.messages_per_s, 1),
        "delivery_p50_ms": round(result.delivery_ms["p50"], 3),
        "delivery_p99_ms": round(result.delivery_ms["p99"], 3),
        "server_cpu_pct": None if result.server_cpu_pct is None else round(result.server_cpu_pct, 1),
        "server_cpu_us_per_message": cpu,
        "other_cpu_pct": round(result.other_cpu_pct, 1),
        "delivered": result.delivered,
        "lost": result.lost,
        "duplicates": result.duplicates,
        "errors": result.errors,
    }


def _same(url: str) -> Callable[[int], str]:
    return lambda _i: url


def _scan_process_ready(target: Target, timeout: float = READY_TIMEOUT) -> bool:
    """Wait until the server's scan process says it is ready (`scanning_process`, on by default
    with more than one CPU): measured before it is, sends are scanned in the server meanwhile,
    which is start-up, not the steady state. False when it does not say so in time."""
    if target.own is None or not load_settings(target.own.data_dir).uses_scan_process:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if READY_LINE in target.own.log_path.read_bytes():
            return True
        time.sleep(0.1)
    return False


def compare(clients: int, messages: int, load: Callable[..., LoadResult]) -> dict[str, Any]:
    """Run the load with scanning off, then on; the figures of both and on/off ratios."""
    runs: dict[str, dict[str, Any]] = {}
    scan_process = False
    for mode in MODES:
        with bench_target(None, None, None, env={"KEYHOLD_SCANNING": mode}) as target:
            pairs = asyncio.run(set_up_members(target.url, clients, "s" + secrets.token_hex(3)))
            if mode == "on":
                scan_process = _scan_process_ready(target)
            stream_url = ws_base(target.url) + API + "/stream"
            specs = plan(clients, split(messages, clients), _same(stream_url), pairs)
            runs[mode] = _figures(load("keyhold", specs, server_pid=target.pid, label=f"scanning {mode:3}"))
            target.stop()
    off, on = runs["off"], runs["on"]
    return {
        "scanning_off": off,
        "scanning_on": on,
        "throughput_on_over_off": round(on["messages_per_second"] / off["messages_per_second"], 4)
        if off["messages_per_second"]
        else None,
        "delivery_p50_on_over_off": round(on["delivery_p50_ms"] / off["delivery_p50_ms"], 4)
        if off["delivery_p50_ms"]
        else None,
        "within_10_percent": bool(off["messages_per_second"])
        and on["messages_per_second"] >= 0.9 * off["messages_per_second"],
        "scan_process": scan_process,
    }
