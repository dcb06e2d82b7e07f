"""`keyhold bench delivery --scanning compare`: the same `standard` load against a server with
the safety scanning off and one with it on, in one run, and how the figures compare. The
target (issue 9): on within 10% of off.

Both servers run side by side (the one not under load idles), and the load goes to them in
alternating rounds, off-on-on-off-off-on-… (each mode first as often as second). Why rounds:
on this machine one run of the same load against the same server differed by up to 18% from
the next (scheduling, the database file), and off-then-on in two long runs put all of that
drift between the two modes. Alternating puts the same drift on both sides; the figures of
each mode are over all its rounds (messages over the summed time of its send phases), and
each round's own figures are in `rounds`."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

from keyhold.bench.drive import Pair, Target, bench_target, plan, set_up_members, split, ws_base
from keyhold.bench.load import ClientSpec, LoadResult
from keyhold.bench.procs import CpuParts, cpu_parts
from keyhold.config import load_settings
from keyhold.safety.scan_process import READY_NOTICE

API = "/api/v1"
MODES = ("off", "on")
READY_LINE = READY_NOTICE.split("{", 1)[0].encode()
READY_TIMEOUT = 60.0


def _round_figures(result: LoadResult) -> dict[str, Any]:
    return {
        "messages": result.messages,
        "messages_per_second": round(result.messages_per_s, 1),
        "delivery_p50_ms": round(result.delivery_ms["p50"], 3),
        "delivery_p99_ms": round(result.delivery_ms["p99"], 3),
        "server_cpu_pct": None if result.server_cpu_pct is None else round(result.server_cpu_pct, 1),
    }


def _figures(results: list[LoadResult]) -> dict[str, Any]:
    """One mode's figures over its rounds: throughput is all its messages over the summed
    duration of its send phases; latencies are the median of the rounds' (each round's p50 and
    p99 are over thousands of deliveries); CPU is weighted by each round's duration."""
    messages = sum(r.messages for r in results)
    duration = sum(r.duration_s for r in results)
    cpu_known = [r for r in results if r.server_cpu_pct is not None]
    cpu_s = sum((r.server_cpu_pct or 0.0) / 100 * r.duration_s for r in cpu_known)
    cpu_pct = None if len(cpu_known) < len(results) or not duration else cpu_s / duration * 100
    return {
        "messages_per_second": round(messages / duration, 1) if duration else 0.0,
        "delivery_p50_ms": round(_median([r.delivery_ms["p50"] for r in results]), 3),
        "delivery_p99_ms": round(_median([r.delivery_ms["p99"] for r in results]), 3),
        "server_cpu_pct": None if cpu_pct is None else round(cpu_pct, 1),
        "server_cpu_us_per_message": None
        if cpu_pct is None or not messages
        else round(cpu_s / messages * 1e6, 1),
        "loadgen_cpu_pct": round(sum(r.loadgen_cpu_pct * r.duration_s for r in results) / duration, 1)
        if duration
        else None,
        "other_cpu_pct": round(max(r.other_cpu_pct for r in results), 1),
        "delivered": sum(r.delivered for r in results),
        "lost": sum(r.lost for r in results),
        "duplicates": sum(r.duplicates for r in results),
        "errors": sum(r.errors for r in results),
        "rounds": [_round_figures(r) for r in results],
    }


def _cpu_split(parts: list[CpuParts], results: list[LoadResult]) -> dict[str, Any]:
    """Where the server's CPU went, per message: over each round's whole load (connecting,
    sending, draining), so a little above `server_cpu_us_per_message` (the send phase only).
    Why: the server's loop and database writer share one interpreter lock, so a microsecond
    more on either is a microsecond less for sends, while the scan process runs beside them."""
    messages = sum(r.messages for r in results)
    if len(parts) < len(results) or not messages:  # a round whose server was not readable
        return {"server_cpu_us_per_message_by_part": None}
    return {
        "server_cpu_us_per_message_by_part": {
            "loop_thread": round(sum(p.loop_thread for p in parts) / messages * 1e6, 1),
            "other_threads": round(sum(p.other_threads for p in parts) / messages * 1e6, 1),
            "scan_process": round(sum(p.children for p in parts) / messages * 1e6, 1),
        }
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def order(rounds: int) -> Iterator[tuple[int, str]]:
    """(round, mode) in the order run: off-on, on-off, off-on, …: each mode is first in half
    the rounds (in all but one when `rounds` is odd), so a drift in time weighs on both."""
    for i in range(rounds):
        yield from ((i, mode) for mode in (MODES if i % 2 == 0 else MODES[::-1]))


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


def _plan(clients: int, messages: int, stream_url: str, pairs: list[Pair]) -> list[ClientSpec]:
    return plan(clients, split(messages, clients), lambda _i: stream_url, pairs)


def compare(clients: int, messages: int, load: Callable[..., LoadResult], rounds: int = 4) -> dict[str, Any]:
    """Run the load against a server with scanning off and one with it on, `messages` to each
    in `rounds` alternating rounds; the figures of both and the on/off ratios."""
    per_round = split(messages, rounds)
    results: dict[str, list[LoadResult]] = {mode: [] for mode in MODES}
    with ExitStack() as servers:
        targets = {
            mode: servers.enter_context(bench_target(None, None, None, env={"KEYHOLD_SCANNING": mode}))
            for mode in MODES
        }
        scan_process = _scan_process_ready(targets["on"])
        cpu: dict[str, list[CpuParts]] = {mode: [] for mode in MODES}
        for i, mode in order(rounds):
            # New members each round: a client connecting to a conversation with history is
            # first replayed it, and the earlier rounds' messages would count as deliveries.
            target = targets[mode]
            pairs = asyncio.run(set_up_members(target.url, clients, "s" + secrets.token_hex(3)))
            specs = _plan(clients, per_round[i], ws_base(target.url) + API + "/stream", pairs)
            label = f"scanning {mode:3} {i + 1}/{rounds}"
            before = cpu_parts(target.pid)
            results[mode].append(load("keyhold", specs, messages=per_round[i], server_pid=target.pid, label=label))
            after = cpu_parts(target.pid)
            if before is not None and after is not None:
                cpu[mode].append(after - before)
    off, on = ({**_figures(results[mode]), **_cpu_split(cpu[mode], results[mode])} for mode in MODES)
    round_ratios = [
        round(b.messages_per_s / a.messages_per_s, 4) if a.messages_per_s else None
        for a, b in zip(results["off"], results["on"], strict=True)
    ]
    return {
        "scanning_off": off,
        "scanning_on": on,
        "throughput_on_over_off": round(on["messages_per_second"] / off["messages_per_second"], 4)
        if off["messages_per_second"]
        else None,
        "round_ratios": round_ratios,
        "delivery_p50_on_over_off": round(on["delivery_p50_ms"] / off["delivery_p50_ms"], 4)
        if off["delivery_p50_ms"]
        else None,
        "within_10_percent": bool(off["messages_per_second"])
        and on["messages_per_second"] >= 0.9 * off["messages_per_second"],
        "rounds": rounds,
        "scan_process": scan_process,
    }
