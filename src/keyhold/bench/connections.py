"""`keyhold bench connections`: many authenticated idle WebSocket connections held open.

What it does:
1. starts a throwaway server (`python -m keyhold serve`, SQLite on disk) unless `--url` names
   a running one, after raising the open-files limit for itself and its children;
2. registers `--idle` members through the public API and signs each in (one member, one token,
   one connection); the trickle's pairs also follow each other and share a 1:1 conversation;
3. opens one `/api/v1/stream` connection per member from the load-generator processes (the
   same sans-I/O clients as `bench delivery`) and waits for every `ready`;
4. holds them for `--hold` seconds: every client sends a `ping` frame each `--heartbeat`
   seconds (spread evenly) and answers the server's WebSocket pings, while a trickle of
   `--trickle` msgs/s goes between random members of `--trickle-pairs` pairs (spread over
   all), each timed from send to the partner's `message.new`;
5. reports the server's RSS with every connection open (and before they opened), the
   trickle's delivery latency, and whether any connection was dropped or any message lost.

Targets (issue 7): server RSS < 1 GiB and trickle p99 ≤ 50 ms at 10,000 connections.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from keyhold.bench.drive import API, BENCH_SERVER_ENV, bench_target, plan, run_load, set_up_members, ws_base
from keyhold.bench.load import LoadResult
from keyhold.bench.procs import (
    _default_workers,
    _git_commit,
    _machine,
    raise_open_files_limit,
)

console = Console()
err = Console(stderr=True)
RSS_TARGET_MB = 1024.0
P99_TARGET_MS = 50.0
# Files a process needs besides its sockets (libraries, the database, logs, pipes).
SPARE_FILES = 1024


def talking_pairs(pairs: int, talking: int) -> set[int]:
    """The pairs that carry the trickle, spread evenly over all pairs: the load generator
    hands each worker a contiguous share, so every worker (and the server's connections from
    every part of the run) takes part."""
    talking = min(talking, pairs)
    return {i * pairs // talking for i in range(talking)}


def trickle_counts(clients: int, talking: set[int], messages: int, seed: int) -> list[int]:
    """How many trickle messages each client sends: `messages` senders drawn at random (with
    replacement) from the members of the talking pairs."""
    senders = sorted(2 * p + side for p in talking for side in (0, 1))
    counts = [0] * clients
    draw = random.Random(seed)  # a load plan, not a secret
    for _ in range(messages):
        counts[draw.choice(senders)] += 1
    return counts


def _set_up(url: str, idle: int, prefix: str, talking: set[int]) -> list[Any]:
    columns = (
        TextColumn("[bold]set-up[/bold] pairs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False, refresh_per_second=4) as progress:
        task = progress.add_task("pairs", total=idle // 2)
        return asyncio.run(set_up_members(url, idle, prefix, lambda: progress.advance(task), talking))


def _summary(r: LoadResult, report: dict[str, Any]) -> Table:
    table = Table(
        title=f"keyhold bench connections: {r.clients:,} idle connections held {report['hold_s']:.0f} s"
    )
    table.add_column("")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    rss = report["server_rss_mb"]
    table.add_row(
        "server RSS MB, all connected", f"{rss:,.0f}" if rss is not None else "—", f"< {RSS_TARGET_MB:,.0f}"
    )
    before = report["server_rss_before_mb"]
    table.add_row("server RSS MB, before connecting", f"{before:,.0f}" if before is not None else "—", "")
    per = report["server_kb_per_connection"]
    table.add_row("server KB per connection", f"{per:,.1f}" if per is not None else "—", "")
    table.add_row(
        "trickle delivery p50 / p95 / p99 ms",
        f"{r.delivery_ms['p50']:.2f} / {r.delivery_ms['p95']:.2f} / {r.delivery_ms['p99']:.2f}",
        f"p99 ≤ {P99_TARGET_MS:.0f}",
    )
    table.add_row("trickle messages delivered", f"{r.delivered} / {r.messages}", "")
    table.add_row("heartbeat pongs", f"{r.pongs:,}", "")
    table.add_row("connect all s", f"{r.connect_s:.1f}", "")
    cpu = report["server_cpu_pct"]
    table.add_row("server CPU % while held", f"{cpu:.0f}" if cpu is not None else "—", "")
    table.add_row(
        "dropped / errors / lost / duplicates", f"{r.dropped} / {r.errors} / {r.lost} / {r.duplicates}", "0"
    )
    return table


def connections(
    idle: Annotated[
        int, typer.Option(min=2, help="Connections to hold (one member each; an even number).")
    ] = 10_000,
    hold: Annotated[
        float, typer.Option(min=1, help="Seconds to hold them, with heartbeats and the trickle.")
    ] = 60.0,
    heartbeat: Annotated[
        float, typer.Option(min=0.1, help="Each client pings every this many seconds.")
    ] = 20.0,
    trickle: Annotated[
        float, typer.Option(min=0.1, help="Messages per second among the idle members.")
    ] = 20.0,
    trickle_pairs: Annotated[
        int, typer.Option(min=1, help="Pairs of members (with a conversation) the trickle runs between.")
    ] = 100,
    url: Annotated[str | None, typer.Option(help="Target a running server instead of starting one.")] = None,
    server_pid: Annotated[
        int | None, typer.Option(help="With --url: the server's pid, to report its RSS and CPU.")
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="Data dir for the bench's own server (default: a temp dir, removed)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Load-generator processes (default: CPUs - 1, at least 1).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the trickle's random senders.")] = 1,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
) -> None:
    """Server memory and delivery latency with many authenticated idle connections open."""
    if idle % 2:
        raise typer.BadParameter("use an even number (members talk in pairs)", param_hint="--idle")
    # The load generator holds every client socket, the server every accepted one.
    limit = raise_open_files_limit(idle + SPARE_FILES)
    if limit < idle + SPARE_FILES:
        err.print(
            f"[red]bench failed:[/red] {idle:,} connections need about {idle + SPARE_FILES:,} open files per "
            f"process; the hard limit here is {limit:,} (raise it: `ulimit -Hn`, LimitNOFILE=, or fewer --idle)"
        )
        raise typer.Exit(2)
    n_workers = workers or _default_workers()
    messages = max(1, round(trickle * hold))
    started = dt.datetime.now(dt.UTC)
    with bench_target(url, home, server_pid) as target:
        target_url, pid = target.url, target.pid
        talking = talking_pairs(idle // 2, trickle_pairs)
        t_setup = time.monotonic()
        pairs = _set_up(target_url, idle, "c" + secrets.token_hex(3), talking)
        setup_s = time.monotonic() - t_setup
        stream_url = ws_base(target_url) + API + "/stream"
        specs = plan(idle, trickle_counts(idle, talking, messages, seed), lambda _i: stream_url, pairs)
        result = run_load(
            "keyhold",
            specs,
            messages=messages,
            window=1,
            rate=trickle,
            workers=n_workers,
            idle_timeout=max(30.0, 2 * heartbeat),
            text_bytes=64,
            transport="sansio",
            server_pid=pid,
            label="keyhold",
            heartbeat_s=heartbeat,
        )

    r = result
    rss, before = r.server_rss_mb, r.server_rss_before_mb
    per_connection = (rss - before) * 1024 / idle if rss is not None and before is not None else None
    report: dict[str, Any] = {
        "idle_connections": idle,
        "hold_s": hold,
        "server_rss_mb": round(rss, 1) if rss is not None else None,
        "server_rss_peak_mb": round(r.server_rss_peak_mb, 1) if r.server_rss_peak_mb is not None else None,
        "server_rss_before_mb": round(before, 1) if before is not None else None,
        "server_kb_per_connection": round(per_connection, 2) if per_connection is not None else None,
        "trickle_messages": messages,
        "trickle_rate": trickle,
        "trickle_pairs": len(talking),
        "delivery_p50_ms": round(r.delivery_ms["p50"], 3),
        "delivery_p95_ms": round(r.delivery_ms["p95"], 3),
        "delivery_p99_ms": round(r.delivery_ms["p99"], 3),
        "delivery_max_ms": round(r.delivery_ms["max"], 3),
        "heartbeat_s": heartbeat,
        "pongs": r.pongs,
        "connect_s": round(r.connect_s, 2),
        "setup_s": round(setup_s, 1),
        "server_cpu_pct": round(r.server_cpu_pct, 1) if r.server_cpu_pct is not None else None,
        "loadgen_cpu_pct": round(r.loadgen_cpu_pct, 1),
        "other_cpu_pct": round(r.other_cpu_pct, 1),
        "sent": r.sent,
        "acked": r.acked,
        "delivered": r.delivered,
        "dropped": r.dropped,
        "errors": r.errors,
        "lost": r.lost,
        "duplicates": r.duplicates,
        "rss_target_met": rss is not None and rss < RSS_TARGET_MB,
        "p99_target_met": r.delivery_ms["p99"] <= P99_TARGET_MS,
        "workers": n_workers,
        "seed": seed,
        "target": url or "own server: keyhold serve, SQLite on disk, encryption at rest",
        "server_env": None if url else BENCH_SERVER_ENV,
        "error_samples": r.error_samples,
        "date": started.isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": _machine(),
    }
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2) + "\n")
    console.print(_summary(r, report))
    if r.dropped or r.errors or r.lost or r.duplicates:
        err.print(
            f"[red]{r.dropped} dropped, {r.errors} error(s), {r.lost} lost, {r.duplicates} duplicate(s)[/red]"
            + "".join(f"\n  {s}" for s in r.error_samples)
        )
        raise typer.Exit(1)
