"""`keyhold bench flood`: does one account flooding the server slow anyone else down?

What it does:
1. starts a throwaway server (`python -m keyhold serve`, SQLite on disk) with the real rate-limit
   figures (the built-in defaults: an account younger than a week may send 20 messages a
   minute, at once if it likes, then one every 3 s);
2. for each phase registers `--quiet` fresh members, each with a friend and a 1:1 conversation,
   plus (in the flood phases) one flooding member with its own;
3. phase `alone`: the quiet members connect a WebSocket each, from a loopback address of their
   own (127.0.1.N), and once all are ready send `--messages` messages each, one every
   `--interval-ms` (staggered), each timed from the `send` frame to its `ack`;
4. phases `flood_ws` and `flood_rest`: the same while a separate process, from 127.0.2.1, sends
   as fast as the server takes it: over `--sockets` WebSockets with `--window` frames in flight
   on each, or over REST with `--concurrency` requests in flight. It starts a second before the
   quiet members, so its first 20 sends have passed and it meets 429s;
5. reports the quiet members' send latency (p50, p99, max) in each phase, the flood's attempts
   and answers, and the CPU of the server, the flooder, this process and everything else.

Each phase uses fresh members, all equally new; the quiet members' partners are not connected
(the figures are the send path's, not delivery's). On a two-core machine the server, the
flooding process and the quiet clients share the cores, and other work on the machine shows as
`other_cpu_pct` (a warning is printed above 25%).
"""

from __future__ import annotations

import array
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import resource
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import ClientConnection, connect

from keyhold.bench.drive import API, BENCH_SERVER_ENV, percentiles, set_up_members, ws_base
from keyhold.bench.procs import OwnServer, _git_commit, _machine, machine_busy_s, proc_cpu_s

console = Console()
err = Console(stderr=True)
FLOODER_ADDRESS = "127.0.2.1"
# A new account's burst at the default figures: more, and the quiet members would meet their
# own limit, which is not what this measures.
MAX_QUIET_MESSAGES = 20
# Set-up starts one conversation per pair from 127.0.0.1: the default per-address figure is
# 100 new conversations an hour, shared by the three phases.
MAX_QUIET = 30
FLOOD_WARMUP_S = 1.0
NOISY_CPU_PCT = 25.0


def _quiet_address(i: int) -> str:
    return f"127.0.1.{1 + i}"


async def _ready(ws: ClientConnection) -> None:
    while orjson.loads(await asyncio.wait_for(ws.recv(), 30))["type"] != "ready":
        pass


async def _quiet_member(
    ws: ClientConnection, cid: int, messages: int, interval: float, delay: float
) -> tuple[list[float], Counter[str]]:
    """One quiet member: `messages` sends, one at a time, each timed send → ack (ms)."""
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    await asyncio.sleep(delay)
    next_at = time.perf_counter()
    for ref in range(messages):
        frame = {"type": "send", "ref": ref, "conversation_id": cid, "text": f"quiet {ref}"}
        started = time.perf_counter()
        await ws.send(orjson.dumps(frame).decode())
        while True:
            answer = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
            if answer.get("ref") == ref and answer["type"] in ("ack", "error"):
                break
        if answer["type"] == "ack":
            latencies.append((time.perf_counter() - started) * 1000)
            outcomes["acked"] += 1
        else:
            outcomes[f"refused_{answer['problem']['status']}"] += 1
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    return latencies, outcomes


async def _quiet_phase(
    stream_url: str,
    senders: list[tuple[str, int]],
    messages: int,
    interval: float,
    pids: tuple[int | None, int | None],
) -> tuple[list[float], Counter[str], dict[str, float], dict[str, float]]:
    """Connect every quiet member first (each from its own address), then time their sends;
    the CPU used is read around the sends only."""
    sockets = await asyncio.gather(
        *(
            connect(
                stream_url,
                additional_headers={"Authorization": f"Bearer {token}"},
                local_addr=(_quiet_address(i), 0),
            )
            for i, (token, _) in enumerate(senders)
        )
    )
    try:
        await asyncio.gather(*(_ready(ws) for ws in sockets))
        before = _cpu(*pids)
        results = await asyncio.gather(
            *(
                _quiet_member(ws, cid, messages, interval, interval * i / len(senders))
                for i, (ws, (_, cid)) in enumerate(zip(sockets, senders, strict=True))
            )
        )
        after = _cpu(*pids)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
    latencies = [ms for member_latencies, _ in results for ms in member_latencies]
    outcomes: Counter[str] = Counter()
    for _, member_outcomes in results:
        outcomes.update(member_outcomes)
    return latencies, outcomes, before, after


# -- the flooding process -------------------------------------------------------------------------


async def _watch(stop: Any, stopping: asyncio.Event) -> None:
    """Turn the parent's (process) stop event into one this event loop can wait on."""
    await asyncio.to_thread(stop.wait)
    stopping.set()


async def _flood_socket(
    stream_url: str, token: str, cid: int, window: int, stopping: asyncio.Event
) -> Counter[str]:
    """One socket sending as fast as the server reads it, `window` frames in flight."""
    counts: Counter[str] = Counter()
    in_flight = asyncio.Semaphore(window)
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(stream_url, additional_headers=headers, local_addr=(FLOODER_ADDRESS, 0)) as ws:
        await _ready(ws)

        async def answers() -> None:
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame["type"] == "ack":
                    counts["accepted"] += 1
                elif frame["type"] == "error":
                    counts[f"refused_{frame['problem']['status']}"] += 1
                else:
                    continue
                in_flight.release()

        reader = asyncio.create_task(answers())
        ref = 0
        while not stopping.is_set():
            try:
                await asyncio.wait_for(in_flight.acquire(), 0.05)
            except TimeoutError:
                continue
            ref += 1
            frame = {"type": "send", "ref": ref, "conversation_id": cid, "text": "flood"}
            await ws.send(orjson.dumps(frame).decode())
            counts["attempts"] += 1
        # Frames still in flight are left unanswered: the server reads a socket whose sends it
        # refused only slowly, and draining them would time that, not the flood.
        answered = counts["accepted"] + sum(v for k, v in counts.items() if k.startswith("refused_"))
        counts["unanswered"] = counts["attempts"] - answered
        reader.cancel()
    return counts


async def _flood_ws(
    url: str, token: str, cid: int, window: int, sockets: int, stop: Any, started: Any
) -> Counter[str]:
    stream_url = ws_base(url) + API + "/stream?since=latest"
    stopping = asyncio.Event()
    watcher = asyncio.create_task(_watch(stop, stopping))
    floods = [
        asyncio.create_task(_flood_socket(stream_url, token, cid, window, stopping)) for _ in range(sockets)
    ]
    started.set()
    counts: Counter[str] = Counter()
    for one in await asyncio.gather(*floods):
        counts.update(one)
    await watcher
    return counts


async def _flood_rest(
    url: str, token: str, cid: int, concurrency: int, _sockets: int, stop: Any, started: Any
) -> Counter[str]:
    counts: Counter[str] = Counter()
    transport = httpx.AsyncHTTPTransport(local_address=FLOODER_ADDRESS)
    async with httpx.AsyncClient(
        base_url=url + API,
        headers={"Authorization": f"Bearer {token}"},
        transport=transport,
        limits=httpx.Limits(max_connections=concurrency),
        timeout=60,
    ) as http:

        async def worker() -> None:
            while not stop.is_set():
                response = await http.post(f"/conversations/{cid}/messages", json={"text": "flood"})
                counts["attempts"] += 1
                counts["accepted" if response.status_code == 201 else f"refused_{response.status_code}"] += 1

        started.set()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


def _flood_main(
    via: str, url: str, token: str, cid: int, in_flight: int, sockets: int, stop: Any, started: Any, out: Any
) -> None:
    began = time.monotonic()
    try:
        flood = _flood_ws if via == "ws" else _flood_rest
        counts = asyncio.run(flood(url, token, cid, in_flight, sockets, stop, started))
        out.put({"counts": dict(counts), "seconds": time.monotonic() - began})
    except Exception as exc:  # reported by the parent, which fails the run
        started.set()
        out.put({"failure": f"{type(exc).__name__}: {exc}"})


# -- phases ---------------------------------------------------------------------------------------


def _cpu(server_pid: int | None, flooder_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of the server, the flooder, this process and the whole machine."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": time.monotonic(),
        "server": proc_cpu_s(server_pid) or 0.0,
        "flooder": proc_cpu_s(flooder_pid) or 0.0,
        "bench": own.ru_utime + own.ru_stime,
        "machine": machine_busy_s(),
    }


def _phase(
    url: str,
    pid: int | None,
    via: str | None,
    quiet: int,
    messages: int,
    interval: float,
    in_flight: int = 0,
    sockets: int = 0,
) -> dict[str, Any]:
    prefix = "f" + secrets.token_hex(3)
    pairs = asyncio.run(set_up_members(url, 2 * quiet + (2 if via else 0), prefix))
    senders = [(p.token_a, p.conversation_id) for p in pairs[:quiet]]
    stream_url = ws_base(url) + API + "/stream?since=latest"
    ctx = mp.get_context("spawn")
    stop, started, out = ctx.Event(), ctx.Event(), ctx.Queue()
    flooder = None
    if via is not None:
        f = pairs[quiet]
        flooder = ctx.Process(
            target=_flood_main,
            args=(via, url, f.token_a, f.conversation_id, in_flight, sockets, stop, started, out),
            daemon=True,
        )
        flooder.start()
        if not started.wait(60):
            raise RuntimeError("the flooding process did not start")
        time.sleep(FLOOD_WARMUP_S)  # past its accepted burst: into the 429s
    flooder_pid = flooder.pid if flooder is not None else None
    try:
        latencies, outcomes, before, after = asyncio.run(
            _quiet_phase(stream_url, senders, messages, interval, (pid, flooder_pid))
        )
    finally:
        stop.set()
    result: dict[str, Any] = {}
    if flooder is not None:
        report = out.get(timeout=120)
        flooder.join(timeout=30)
        if "failure" in report:
            raise RuntimeError(f"the flooding process failed: {report['failure']}")
        counts = report["counts"]
        attempts = counts.get("attempts", 0)
        result["flooder"] = {
            "via": via,
            "sockets": sockets if via == "ws" else None,
            "in_flight": in_flight,
            "attempts": attempts,
            "attempts_per_second": round(attempts / max(report["seconds"], 1e-3), 1),
            "accepted": counts.get("accepted", 0),
            "refused_429": counts.get("refused_429", 0),
            "other": {k: v for k, v in counts.items() if k not in ("attempts", "accepted", "refused_429")},
            "refused_share_of_answered": round(
                counts.get("refused_429", 0) / max(attempts - counts.get("unanswered", 0), 1), 4
            ),
        }
    spread = percentiles(array.array("d", latencies))
    wall = max(after["wall"] - before["wall"], 1e-3)
    used = {k: 100 * (after[k] - before[k]) / wall for k in ("server", "flooder", "bench", "machine")}
    result |= {
        "send_p50_ms": round(spread["p50"], 2),
        "send_p99_ms": round(spread["p99"], 2),
        "send_max_ms": round(spread["max"], 2),
        "sends": len(latencies),
        "quiet_outcomes": dict(outcomes),
        "seconds": round(wall, 2),
        "server_cpu_pct": round(used["server"], 1),
        "flooder_cpu_pct": round(used["flooder"], 1) if flooder is not None else None,
        "bench_cpu_pct": round(used["bench"], 1),
        # Anything else on the machine meanwhile: high means the figures are not from a quiet one.
        "other_cpu_pct": round(
            max(0.0, used["machine"] - used["server"] - used["flooder"] - used["bench"]), 1
        ),
    }
    return result


def flood(
    quiet: Annotated[
        int, typer.Option(min=1, max=MAX_QUIET, help="Quiet members per phase (each on its own address).")
    ] = 20,
    messages: Annotated[
        int,
        typer.Option(min=1, max=MAX_QUIET_MESSAGES, help="Messages each quiet member sends per phase."),
    ] = 15,
    interval_ms: Annotated[
        int, typer.Option(min=1, help="Each quiet member sends one message every this many ms.")
    ] = 500,
    via: Annotated[str, typer.Option(help="How the flood comes: 'ws', 'rest' or 'both'.")] = "both",
    sockets: Annotated[int, typer.Option(min=1, help="The WebSocket flood's sockets (one account).")] = 8,
    window: Annotated[int, typer.Option(min=1, help="Frames in flight on each flooding socket.")] = 64,
    concurrency: Annotated[int, typer.Option(min=1, help="The REST flood's requests in flight.")] = 16,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
) -> None:
    """A quiet member's send latency alone and while another account floods (mostly 429s)."""
    if via not in ("ws", "rest", "both"):
        raise typer.BadParameter("'ws', 'rest' or 'both'", param_hint="--via")
    floods = ["ws", "rest"] if via == "both" else [via]
    started = dt.datetime.now(dt.UTC)
    # The real figures: no scale, whatever the caller's environment says.
    env = {**os.environ, **BENCH_SERVER_ENV, "KEYHOLD_RATE_LIMIT_SCALE": "1"}
    phases: dict[str, dict[str, Any]] = {}
    with OwnServer(None, env) as server:
        err.print(f"server: {server.url} (data {server.data_dir}, log {server.log_path})")
        try:
            server.start()
            interval = interval_ms / 1000
            phases["alone"] = _phase(server.url, server.pid, None, quiet, messages, interval)
            err.print(f"alone: p99 {phases['alone']['send_p99_ms']} ms")
            for kind in floods:
                in_flight = window if kind == "ws" else concurrency
                phases[f"flood_{kind}"] = _phase(
                    server.url, server.pid, kind, quiet, messages, interval, in_flight, sockets
                )
                err.print(f"flood over {kind}: p99 {phases[f'flood_{kind}']['send_p99_ms']} ms")
        except RuntimeError as exc:
            err.print(f"[red]bench failed:[/red] {exc}")
            raise typer.Exit(2) from exc
    alone_p99 = phases["alone"]["send_p99_ms"]
    report: dict[str, Any] = {
        "quiet_members": quiet,
        "messages_each": messages,
        "interval_ms": interval_ms,
        **phases,
        "p99_ratio": {
            name: round(p["send_p99_ms"] / alone_p99, 2) if alone_p99 else None
            for name, p in phases.items()
            if name != "alone"
        },
        "target": "own server: keyhold serve, SQLite on disk, default rate limits",
        "date": started.isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": _machine(),
    }
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2) + "\n")
    console.print(_summary(phases))
    console.print_json(json.dumps(report))
    noisy = max(p["other_cpu_pct"] for p in phases.values())
    if noisy > NOISY_CPU_PCT:
        err.print(
            f"[yellow]warning:[/yellow] other processes used {noisy:.0f}% of a core during a phase: "
            "these figures are not from a quiet machine"
        )
    failed = {
        name: p["quiet_outcomes"] for name, p in phases.items() if set(p["quiet_outcomes"]) != {"acked"}
    }
    if failed:
        err.print(f"[red]quiet members' sends did not all succeed:[/red] {failed}")
        raise typer.Exit(1)


def _summary(phases: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="A quiet member's send → ack, alone and during a flood")
    for column in (
        "phase",
        "p50 ms",
        "p99 ms",
        "max ms",
        "sends",
        "flood attempts/s",
        "flood 429s",
        "server CPU",
    ):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for name, p in phases.items():
        flooder = p.get("flooder")
        table.add_row(
            name,
            f"{p['send_p50_ms']:.2f}",
            f"{p['send_p99_ms']:.2f}",
            f"{p['send_max_ms']:.2f}",
            str(p["sends"]),
            f"{flooder['attempts_per_second']:,.0f}" if flooder else "-",
            f"{flooder['refused_429']:,} of {flooder['attempts']:,}" if flooder else "-",
            f"{p['server_cpu_pct']}%" if p["server_cpu_pct"] is not None else "-",
        )
    return table
