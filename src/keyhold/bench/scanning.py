"""`keyhold bench delivery --scanning compare`: the same `standard` load against a server with
the safety scanning off, then one with it on (each a fresh server of the bench's own), in one
run, and how the figures compare. The target (issue 9): on within 10% of off."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from keyhold.bench.drive import bench_target, plan, set_up_members, split, ws_base
from keyhold.bench.load import LoadResult

API = "/api/v1"
MODES = ("off", "on")


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


def compare(clients: int, messages: int, load: Callable[..., LoadResult]) -> dict[str, Any]:
    """Run the load with scanning off, then on; the figures of both and on/off ratios."""
    runs: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        with bench_target(None, None, None, env={"KEYHOLD_SCANNING": mode}) as target:
            pairs = asyncio.run(set_up_members(target.url, clients, "s" + secrets.token_hex(3)))
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
    }
