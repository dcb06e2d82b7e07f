"""`keyhold bench delivery`: real-time delivery throughput and latency over the WebSocket.

What it does:
1. starts a throwaway server (`python -m keyhold serve`, SQLite on disk, encryption at rest as
   always) unless `--url` names a running one;
2. registers N members in N/2 pairs (each pair: mutual follows and one 1:1 conversation);
3. opens N WebSocket connections to `/api/v1/stream` (bearer token), waits for `ready`;
4. sends M messages in total, spread over the clients, each to its partner: pipelined with a
   window of in-flight sends per client (default 32), or paced to `--rate` msgs/s overall
   (open loop: a send is never held back by slow acks, so latency is not under-measured);
   the text carries the send time, so the recipient measures delivery latency
   (send → `message.new` received);
5. checks that every message was acknowledged and delivered exactly once;
6. with `--baseline relay`, runs the identical load against `keyhold.bench.relay` (a bare
   websockets + uvloop + orjson relay: no auth, storage or crypto) and reports the ratio.

The load runs in worker processes (`--workers`, each with whole pairs), separate from the
server process. Each worker is one uvloop event loop driving its clients with `websockets`
and orjson: by default through websockets' sans-I/O protocol driven by callbacks (a single
generator process then keeps up with the bare relay on two cores), or with
`--transport asyncio` through `websockets.asyncio.client` (a task and a future per frame:
about 20% slower, so it caps what the relay baseline can show). Times come from
CLOCK_MONOTONIC, shared by all processes on the machine.

Every figure is printed next to the CPU used meanwhile by the server, the load generator and
everything else on the machine, so that a run disturbed by other work is visible as such.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from keyhold.bench.drive import (
    API,
    BENCH_SERVER_ENV,
    PASSWORD,
    bench_target,
    plan,
    run_load,
    set_up_members,
    split,
    with_megolm,
    ws_base,
)
from keyhold.bench.e2ee_costs import group_send_costs, olm_setups_per_second
from keyhold.bench.load import LoadResult
from keyhold.bench.procs import (
    _default_workers,
    _git_commit,
    _machine,
    _stop,
    _wait_tcp,
    free_port,
)
from keyhold.bench.scanning import compare as scanning_compare

console = Console()
err = Console(stderr=True)
NOISY_CPU_PCT = 15.0  # other processes' CPU during a run above which the figures are suspect


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _cpu_per_message(result: LoadResult) -> float | None:
    """The server's CPU time per message in the send phase, µs: what a send costs it."""
    if result.server_cpu_pct is None or not result.messages:
        return None
    return round(result.server_cpu_pct / 100 * result.duration_s / result.messages * 1e6, 1)


def _summary(keyhold: LoadResult, relay: LoadResult | None, report: dict[str, Any], title_prefix: str = "") -> Table:
    title = f"{title_prefix}keyhold bench delivery: {keyhold.clients} clients, {keyhold.messages} messages"
    if report.get("rate"):
        title += f", offered {report['rate']:,.0f} msgs/s"
    table = Table(title=title)
    table.add_column("")
    table.add_column("Keyhold", justify="right")
    if relay:
        table.add_column("bare relay", justify="right")
    rows: list[tuple[str, Callable[[LoadResult], str]]] = [
        ("msgs/s (acked and delivered)", lambda r: _fmt(r.messages_per_s, 0)),
        ("accepted msgs/s (acks)", lambda r: _fmt(r.accepted_per_s, 0)),
        ("delivered msgs/s", lambda r: _fmt(r.delivered_per_s, 0)),
        ("delivery p50 ms", lambda r: _fmt(r.delivery_ms["p50"], 2)),
        ("delivery p95 ms", lambda r: _fmt(r.delivery_ms["p95"], 2)),
        ("delivery p99 ms", lambda r: _fmt(r.delivery_ms["p99"], 2)),
        ("ack p50 / p99 ms", lambda r: f"{r.ack_ms['p50']:.2f} / {r.ack_ms['p99']:.2f}"),
        ("send phase s", lambda r: _fmt(r.duration_s, 2)),
        ("server RSS MB (peak)", lambda r: f"{_fmt(r.server_rss_mb)} ({_fmt(r.server_rss_peak_mb)})"),
        ("server CPU %", lambda r: _fmt(r.server_cpu_pct, 0)),
        ("load generator CPU %", lambda r: _fmt(r.loadgen_cpu_pct, 0)),
        ("other processes CPU %", lambda r: _fmt(r.other_cpu_pct, 0)),
        ("acked / delivered", lambda r: f"{r.acked} / {r.delivered}"),
        ("errors / lost / duplicates", lambda r: f"{r.errors} / {r.lost} / {r.duplicates}"),
    ]
    for name, cell in rows:
        table.add_row(name, cell(keyhold), *([cell(relay)] if relay else []))
    if relay and report["ratio_to_baseline"] is not None:
        table.caption = f"Keyhold / relay throughput: {report['ratio_to_baseline']:.1%}"
    return table


def delivery(
    clients: Annotated[int, typer.Option(min=2, help="WebSocket clients (an even number: pairs).")] = 100,
    messages: Annotated[int, typer.Option(min=1, help="Messages sent in total.")] = 20_000,
    url: Annotated[str | None, typer.Option(help="Target a running server instead of starting one.")] = None,
    rate: Annotated[
        float | None, typer.Option(min=1, help="Offered load, msgs/s in total (default: as fast as acked).")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="'relay': also run the same load against a bare relay.")
    ] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="Data dir for the bench's own server (default: a temp dir, removed)."),
    ] = None,
    window: Annotated[int, typer.Option(min=1, help="In-flight sends per client (pipelined mode).")] = 32,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Load-generator processes (default: CPUs - 1, at least 1).")
    ] = None,
    server_pid: Annotated[
        int | None, typer.Option(help="With --url: the server's pid, to report its RSS and CPU.")
    ] = None,
    text_bytes: Annotated[int, typer.Option(min=40, max=4000, help="Length of each message text.")] = 64,
    idle_timeout: Annotated[
        float, typer.Option(help="Give up when nothing is acked or delivered for this long (s).")
    ] = 30.0,
    transport: Annotated[
        str,
        typer.Option(
            help="Client side: 'sansio' (websockets' protocol driven by callbacks, the default) or "
            "'asyncio' (websockets.asyncio.client: a task and a future per frame, costlier)."
        ),
    ] = "sansio",
    encryption: Annotated[
        str,
        typer.Option(
            help="'standard' (the default), 'e2ee' (every text Megolm-encrypted and decrypted by the "
            "load generator), or 'both': the same load on standard, then e2ee, conversations, with "
            "Olm session setups/s and the cost of a send to a 50-member group."
        ),
    ] = "standard",
    scanning: Annotated[
        str,
        typer.Option(
            help="'as-is' (the server's setting: on by default), or 'compare': the same standard load "
            "against a server with the safety scanning off, then on, and the ratios (own server only)."
        ),
    ] = "as-is",
    rounds: Annotated[
        int,
        typer.Option(
            min=1,
            max=50,
            help="With --scanning compare: the messages to each server go in this many rounds, the "
            "two servers alternating (off-on, on-off, ...), so that drift over time weighs on both.",
        ),
    ] = 4,
) -> None:
    """Delivery throughput and latency over the WebSocket (send → recipient), with durability."""
    if clients % 2:
        raise typer.BadParameter("use an even number of clients (they talk in pairs)", param_hint="--clients")
    if transport not in ("sansio", "asyncio"):
        raise typer.BadParameter("'sansio' or 'asyncio'", param_hint="--transport")
    if baseline not in (None, "relay"):
        raise typer.BadParameter("the only baseline is 'relay'", param_hint="--baseline")
    if encryption not in ("standard", "e2ee", "both"):
        raise typer.BadParameter("'standard', 'e2ee' or 'both'", param_hint="--encryption")
    if scanning not in ("as-is", "compare"):
        raise typer.BadParameter("'as-is' or 'compare'", param_hint="--scanning")
    n_workers = workers or _default_workers()
    if scanning == "compare":
        if url is not None or encryption != "standard" or baseline is not None:
            raise typer.BadParameter("compare runs on the bench's own servers, standard only", param_hint="--scanning")
        if messages < rounds * clients:
            raise typer.BadParameter("at least one message per client in each round", param_hint="--rounds")
        _compare_scanning(
            clients, messages, rounds, rate, window, n_workers, idle_timeout, text_bytes, transport, json_file
        )
        return
    models = ["standard", "e2ee"] if encryption == "both" else [encryption]
    started = dt.datetime.now(dt.UTC)
    results: dict[str, LoadResult] = {}
    relay_result: LoadResult | None = None
    costs: dict[str, Any] | None = None
    with bench_target(url, home, server_pid) as target:
        target_url, pid = target.url, target.pid
        stream_url = ws_base(target_url) + API + "/stream"
        load = functools.partial(
            run_load,
            messages=messages,
            window=window,
            rate=rate,
            workers=n_workers,
            idle_timeout=idle_timeout,
            text_bytes=text_bytes,
            transport=transport,
        )
        for model in models:
            prefix = "b" + secrets.token_hex(3)
            t_setup = time.monotonic()
            pairs = asyncio.run(set_up_members(target_url, clients, prefix, encryption=model))
            err.print(
                f"set-up ({model}): {clients} members, {clients // 2} conversations in "
                f"{time.monotonic() - t_setup:.1f}s"
            )
            specs = plan(clients, split(messages, clients), lambda _i: stream_url, pairs)
            if model == "e2ee":
                specs = with_megolm(specs)
            results[model] = load("keyhold", specs, server_pid=pid, label=f"{model:8}")
        if "e2ee" in models:
            err.print("e2ee costs: Olm session setups, sends to a 50-member group")
            costs = {
                "olm_session_setups_per_second": round(olm_setups_per_second(), 1),
                "group_of_50": asyncio.run(group_send_costs(target_url, "g" + secrets.token_hex(3), PASSWORD)),
            }
        target.stop()
        keyhold_result = results[models[0]]
        if baseline == "relay":
            relay_port = free_port()
            relay = subprocess.Popen(
                [sys.executable, "-m", "keyhold.bench.relay", "--port", str(relay_port)],
                stdout=subprocess.DEVNULL,
            )
            try:
                _wait_tcp(relay_port, relay, 30)
                relay_specs = plan(
                    clients, split(messages, clients), lambda i: f"ws://127.0.0.1:{relay_port}/?id={i}", None
                )
                relay_result = load("relay", relay_specs, server_pid=relay.pid, label="relay  ")
            finally:
                _stop(relay)

    k = keyhold_result
    e2ee_result = results.get("e2ee") if len(models) > 1 else None
    ratio = (
        k.messages_per_s / relay_result.messages_per_s
        if relay_result and relay_result.messages_per_s
        else None
    )
    report: dict[str, Any] = {
        "messages_per_second": round(k.messages_per_s, 1),
        "delivery_p50_ms": round(k.delivery_ms["p50"], 3),
        "delivery_p95_ms": round(k.delivery_ms["p95"], 3),
        "delivery_p99_ms": round(k.delivery_ms["p99"], 3),
        "server_rss_mb": round(k.server_rss_mb, 1) if k.server_rss_mb is not None else None,
        "baseline_messages_per_second": round(relay_result.messages_per_s, 1) if relay_result else None,
        "ratio_to_baseline": round(ratio, 4) if ratio is not None else None,
        # extras
        "accepted_messages_per_second": round(k.accepted_per_s, 1),
        "delivered_messages_per_second": round(k.delivered_per_s, 1),
        "delivery_max_ms": round(k.delivery_ms["max"], 3),
        "delivery_mean_ms": round(k.delivery_ms["mean"], 3),
        "ack_p50_ms": round(k.ack_ms["p50"], 3),
        "ack_p99_ms": round(k.ack_ms["p99"], 3),
        "server_rss_peak_mb": round(k.server_rss_peak_mb, 1) if k.server_rss_peak_mb is not None else None,
        "server_cpu_pct": round(k.server_cpu_pct, 1) if k.server_cpu_pct is not None else None,
        "loadgen_cpu_pct": round(k.loadgen_cpu_pct, 1),
        "other_cpu_pct": round(k.other_cpu_pct, 1),
        "clients": clients,
        "messages": messages,
        "sent": k.sent,
        "acked": k.acked,
        "delivered": k.delivered,
        "errors": k.errors,
        "lost": k.lost,
        "duplicates": k.duplicates,
        "seq_errors": k.seq_errors,
        "duration_s": round(k.duration_s, 3),
        "rate": rate,
        "behind_schedule_ms": round(k.behind_schedule_ms, 1) if rate else None,
        "window": window,
        "workers": n_workers,
        "text_bytes": text_bytes,
        "transport": transport,
        "target": url or "own server: keyhold serve, SQLite on disk, encryption at rest",
        "server_env": None if url else BENCH_SERVER_ENV,
        "baseline": (
            {
                "accepted_messages_per_second": round(relay_result.accepted_per_s, 1),
                "delivered_messages_per_second": round(relay_result.delivered_per_s, 1),
                "delivery_p50_ms": round(relay_result.delivery_ms["p50"], 3),
                "delivery_p95_ms": round(relay_result.delivery_ms["p95"], 3),
                "delivery_p99_ms": round(relay_result.delivery_ms["p99"], 3),
                "server_rss_mb": relay_result.server_rss_mb and round(relay_result.server_rss_mb, 1),
                "server_cpu_pct": relay_result.server_cpu_pct and round(relay_result.server_cpu_pct, 1),
                "loadgen_cpu_pct": round(relay_result.loadgen_cpu_pct, 1),
                "other_cpu_pct": round(relay_result.other_cpu_pct, 1),
                "delivered": relay_result.delivered,
                "lost": relay_result.lost,
                "duplicates": relay_result.duplicates,
                "errors": relay_result.errors,
                "duration_s": round(relay_result.duration_s, 3),
            }
            if relay_result
            else None
        ),
        "encryption": models[0],
        "server_cpu_us_per_message": _cpu_per_message(k),
        "e2ee": None if e2ee_result is None else {
            "messages_per_second": round(e2ee_result.messages_per_s, 1),
            "delivery_p50_ms": round(e2ee_result.delivery_ms["p50"], 3),
            "delivery_p99_ms": round(e2ee_result.delivery_ms["p99"], 3),
            "ack_p99_ms": round(e2ee_result.ack_ms["p99"], 3),
            "server_cpu_pct": round(e2ee_result.server_cpu_pct, 1) if e2ee_result.server_cpu_pct is not None else None,
            "server_cpu_us_per_message": _cpu_per_message(e2ee_result),
            "loadgen_cpu_pct": round(e2ee_result.loadgen_cpu_pct, 1),
            "delivered": e2ee_result.delivered,
            "lost": e2ee_result.lost,
            "duplicates": e2ee_result.duplicates,
            "errors": e2ee_result.errors,
        },
        "e2ee_costs": costs,
        "error_samples": [
            *k.error_samples,
            *(relay_result.error_samples if relay_result else []),
            *(e2ee_result.error_samples if e2ee_result else []),
        ],
        "date": started.isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": _machine(),
    }
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2) + "\n")
    console.print(_summary(k, relay_result, report, title_prefix=f"{models[0]}: " if len(models) > 1 else ""))
    if e2ee_result is not None:
        console.print(_summary(e2ee_result, None, {**report, "rate": rate}, title_prefix="e2ee: "))
    if costs is not None:
        group = costs["group_of_50"]
        console.print(
            f"Olm session setups: {costs['olm_session_setups_per_second']:,.0f}/s on one core; "
            f"a send to a group of {group['group_size']}: standard {group['standard']['send_ms_mean']} ms, "
            f"e2ee {group['e2ee']['send_ms_mean']} ms (first, sharing the room key: "
            f"{group['e2ee']['first_send_ms']} ms; one Megolm encryption: {group['megolm_encrypt_us']} µs)"
        )
    busy = max(r.other_cpu_pct for r in (k, relay_result, e2ee_result) if r is not None)
    if busy > NOISY_CPU_PCT:
        err.print(
            f"[yellow]warning:[/yellow] other processes used {busy:.0f}% of a core during the run: "
            "these figures are not from a quiet machine"
        )
    bad = [
        (r.target, r) for r in (k, relay_result, e2ee_result) if r is not None and (r.lost or r.duplicates or r.errors)
    ]
    for name, r in bad:
        err.print(
            f"[red]{name}: {r.errors} error(s), {r.lost} lost, {r.duplicates} duplicate(s)[/red]"
            + "".join(f"\n  {s}" for s in r.error_samples)
        )
    if bad:
        raise typer.Exit(1)


def _compare_scanning(
    clients: int,
    messages: int,
    rounds: int,
    rate: float | None,
    window: int,
    workers: int,
    idle_timeout: float,
    text_bytes: int,
    transport: str,
    json_file: Path | None,
) -> None:
    load = functools.partial(
        run_load,
        messages=messages,
        window=window,
        rate=rate,
        workers=workers,
        idle_timeout=idle_timeout,
        text_bytes=text_bytes,
        transport=transport,
    )
    report = {
        **scanning_compare(clients, messages, load, rounds),
        "clients": clients,
        "messages": messages,
        "rate": rate,
        "window": window,
        "workers": workers,
        "text_bytes": text_bytes,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": _machine(),
    }
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2) + "\n")
    console.print_json(json.dumps(report))
