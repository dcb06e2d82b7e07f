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

import array
import asyncio
import datetime as dt
import functools
import json
import multiprocessing as mp
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from keyhold.bench.load import ClientSpec, LoadResult, WorkerSpec, _worker_main
from keyhold.bench.procs import (
    _default_workers,
    _git_commit,
    _machine,
    _Snapshot,
    _stop,
    _wait_http,
    _wait_tcp,
    free_port,
    proc_status_mb,
)

console = Console()
err = Console(stderr=True)
API = "/api/v1"
PASSWORD = "bench-password-not-secret"  # noqa: S105  # throwaway accounts on a throwaway (or named) server
# Cheap argon2 for the bench's own throwaway server: registering 100+ members with the
# production cost (~100 ms/hash on 2 cores) would only slow the set-up, not the measured phase.
BENCH_SERVER_ENV = {"KEYHOLD_ARGON2_TIME_COST": "1", "KEYHOLD_ARGON2_MEMORY_KIB": "8192"}
NOISY_CPU_PCT = 15.0  # other processes' CPU during a run above which the figures are suspect


@dataclass
class Pair:
    a: str
    b: str
    token_a: str = ""
    token_b: str = ""
    conversation_id: int = 0


async def _set_up_members(url: str, clients: int, prefix: str) -> list[Pair]:
    """Register the members, make each pair friends and give it a 1:1 conversation."""
    import httpx

    pairs = [Pair(f"{prefix}_{2 * i}", f"{prefix}_{2 * i + 1}") for i in range(clients // 2)]
    sem = asyncio.Semaphore(8)
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=url.rstrip("/") + API, timeout=120, limits=limits) as http:

        async def call(method: str, path: str, token: str | None = None, **kw: Any) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with sem:
                response = await http.request(method, path, headers=headers, **kw)
            if response.status_code >= 400:
                raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
            return response.json() if response.content else None

        async def member(name: str) -> str:
            body = {"username": name, "password": PASSWORD, "birthdate": "1990-01-01", "region": "us"}
            await call("POST", "/accounts", json=body)
            session = await call("POST", "/sessions", json={"username": name, "password": PASSWORD})
            return str(session["token"])

        async def pair(p: Pair) -> None:
            p.token_a, p.token_b = await asyncio.gather(member(p.a), member(p.b))
            await asyncio.gather(
                call("PUT", f"/following/{p.b}", p.token_a), call("PUT", f"/following/{p.a}", p.token_b)
            )
            view = await call("POST", "/conversations", p.token_a, json={"members": [p.b]})
            p.conversation_id = int(view["id"])

        await asyncio.gather(*(pair(p) for p in pairs))
    return pairs


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _plan(clients: int, messages: int, ws_url: Any, pairs: list[Pair] | None) -> list[ClientSpec]:
    counts = _split(messages, clients)
    specs: list[ClientSpec] = []
    for i in range(clients):
        partner = i ^ 1
        if pairs is None:  # the relay: "conversation" = the recipient's connection number
            token, conversation = None, partner
        else:
            p = pairs[i // 2]
            token, conversation = (p.token_a if i % 2 == 0 else p.token_b), p.conversation_id
        specs.append(ClientSpec(i, partner, ws_url(i), token, conversation, counts[i], counts[partner]))
    return specs


def _percentiles(values: array.array[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values)

    def rank(q: float) -> float:  # nearest rank
        return float(ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))])

    return {
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": float(ordered[-1]),
        "mean": sum(ordered) / len(ordered),
    }


def run_load(
    target: str,
    specs: list[ClientSpec],
    *,
    messages: int,
    window: int,
    rate: float | None,
    workers: int,
    idle_timeout: float,
    text_bytes: int,
    transport: str,
    server_pid: int | None,
    label: str,
) -> LoadResult:
    """Drive one load (identical for Keyhold and the relay) from `workers` processes."""
    ctx = mp.get_context("spawn")
    clients = len(specs)
    workers = max(1, min(workers, clients // 2))
    pair_counts = _split(clients // 2, workers)
    shares: list[list[ClientSpec]] = []
    start = 0
    for n in pair_counts:
        shares.append(specs[2 * start : 2 * (start + n)])
        start += n
    counters = ctx.Array("q", 2 * workers, lock=False)
    go = ctx.Event()
    t0_box = ctx.Value("q", 0, lock=False)
    ready_queue = ctx.Queue()
    out = ctx.Queue()
    procs = []
    for w, share in enumerate(shares):
        share_rate = rate * len(share) / clients if rate else None
        spec = WorkerSpec(w, share, window, share_rate, idle_timeout, text_bytes, transport)
        p = ctx.Process(target=_worker_main, args=(spec, counters, go, t0_box, ready_queue, out), daemon=True)
        p.start()
        procs.append(p)
    results: list[dict[str, Any]] = []
    try:
        failed = False
        for _ in procs:
            try:
                status, _w = ready_queue.get(timeout=180)
            except Exception as exc:  # queue.Empty
                raise RuntimeError("the load workers did not connect within 180 s") from exc
            failed = failed or status != "ready"
        t0 = time.monotonic_ns() + 50_000_000
        t0_box.value = t0
        go.set()
        time.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9))
        snap0 = _Snapshot.take(server_pid)
        snap1: _Snapshot | None = None
        columns = (
            TextColumn(f"[bold]{label}[/bold] acked"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("delivered {task.fields[delivered]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err, transient=False, refresh_per_second=5) as progress:
            task = progress.add_task("send", total=messages, delivered=0)
            while len(results) < len(procs):
                try:
                    results.append(out.get(timeout=0.2))
                except Exception:  # queue.Empty
                    if not failed and not any(p.is_alive() for p in procs) and out.empty():
                        break
                acked = sum(counters[2 * w] for w in range(workers))
                delivered = sum(counters[2 * w + 1] for w in range(workers))
                progress.update(task, completed=acked, delivered=delivered)
                if snap1 is None and acked >= messages and delivered >= messages:
                    snap1 = _Snapshot.take(server_pid)  # the send phase is over
            acked = sum(counters[2 * w] for w in range(workers))
            delivered = sum(counters[2 * w + 1] for w in range(workers))
            progress.update(task, completed=acked, delivered=delivered)
        if snap1 is None:
            snap1 = _Snapshot.take(server_pid)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    failures = [r["failure"] for r in results if r.get("failure")]
    if failures or len(results) < len(procs):
        raise RuntimeError("; ".join(failures) or "a load worker died without a result")
    latencies: array.array[float] = array.array("d")
    acks: array.array[float] = array.array("d")
    for r in results:
        latencies.frombytes(r["latencies_ms"])
        acks.frombytes(r["ack_latencies_ms"])

    def total(key: str) -> int:
        return int(sum(r[key] for r in results))

    last_ack = max(r["last_ack_ns"] for r in results)
    last_delivery = max(r["last_delivery_ns"] for r in results)
    acked_n, delivered_n = total("acked"), total("delivered")
    duration = max(last_ack, last_delivery, t0 + 1) - t0
    wall = max(snap1.wall - snap0.wall, 1e-3)
    server_cpu = (
        100 * (snap1.server_cpu - snap0.server_cpu) / wall
        if snap0.server_cpu is not None and snap1.server_cpu is not None
        else None
    )
    loadgen_cpu = 100 * sum(r["cpu_s"] for r in results) / (duration / 1e9)
    machine_cpu = 100 * (snap1.machine_busy - snap0.machine_busy) / wall
    other_cpu = max(0.0, machine_cpu - (server_cpu or 0.0) - loadgen_cpu)
    samples = [s for r in results for s in r["error_samples"]][:5]
    return LoadResult(
        target=target,
        clients=clients,
        messages=messages,
        sent=total("sent"),
        acked=acked_n,
        delivered=delivered_n,
        errors=total("errors"),
        duplicates=total("duplicates"),
        lost=max(total("missing_acks"), 0) + total("missing_deliveries"),
        seq_errors=total("seq_errors"),
        duration_s=duration / 1e9,
        accepted_per_s=acked_n / max(last_ack - t0, 1) * 1e9 if acked_n else 0.0,
        delivered_per_s=delivered_n / max(last_delivery - t0, 1) * 1e9 if delivered_n else 0.0,
        messages_per_s=min(acked_n, delivered_n) / (duration / 1e9),
        delivery_ms=_percentiles(latencies),
        ack_ms=_percentiles(acks),
        loadgen_cpu_pct=loadgen_cpu,
        server_cpu_pct=server_cpu,
        other_cpu_pct=other_cpu,
        server_rss_mb=snap1.server_rss_mb,
        server_rss_peak_mb=proc_status_mb(server_pid, "VmHWM") if server_pid is not None else None,
        behind_schedule_ms=max(r["behind_schedule_ms"] for r in results),
        error_samples=samples,
    )


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _summary(keyhold: LoadResult, relay: LoadResult | None, report: dict[str, Any]) -> Table:
    title = f"keyhold bench delivery: {keyhold.clients} clients, {keyhold.messages} messages"
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


def _ws_base(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url.removeprefix("https://").rstrip("/")
    return "ws://" + url.removeprefix("http://").rstrip("/")


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
) -> None:
    """Delivery throughput and latency over the WebSocket (send → recipient), with durability."""
    if clients % 2:
        raise typer.BadParameter("use an even number of clients (they talk in pairs)", param_hint="--clients")
    if transport not in ("sansio", "asyncio"):
        raise typer.BadParameter("'sansio' or 'asyncio'", param_hint="--transport")
    if baseline not in (None, "relay"):
        raise typer.BadParameter("the only baseline is 'relay'", param_hint="--baseline")
    n_workers = workers or _default_workers()
    started = dt.datetime.now(dt.UTC)
    server: subprocess.Popen[bytes] | None = None
    temp_dir: str | None = None
    pid = server_pid
    keyhold_result: LoadResult
    relay_result: LoadResult | None = None
    try:
        if url is None:
            if home is None:
                temp_dir = tempfile.mkdtemp(prefix="keyhold-bench-")
                data_dir = Path(temp_dir) / "home"
            else:
                data_dir = home.resolve()
            port = free_port()
            log_path = data_dir.parent / f"{data_dir.name}-bench-server.log"
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, **BENCH_SERVER_ENV}
            with log_path.open("wb") as log:
                server = subprocess.Popen(
                    [sys.executable, "-m", "keyhold", "serve", "--home", str(data_dir), "--port", str(port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            target_url = f"http://127.0.0.1:{port}"
            pid = server.pid
            err.print(f"server: {target_url} (pid {pid}, data {data_dir}, log {log_path})")
            _wait_http(target_url, server, log_path, 90)
        else:
            target_url = url.rstrip("/")
            _wait_http(target_url, None, None, 30)
        prefix = "b" + secrets.token_hex(3)
        t_setup = time.monotonic()
        pairs = asyncio.run(_set_up_members(target_url, clients, prefix))
        err.print(
            f"set-up: {clients} members, {clients // 2} conversations in {time.monotonic() - t_setup:.1f}s"
        )
        stream_url = _ws_base(target_url) + API + "/stream"
        specs = _plan(clients, messages, lambda _i: stream_url, pairs)
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
        keyhold_result = load("keyhold", specs, server_pid=pid, label="keyhold")
        if server is not None:
            _stop(server)
            server = None
        if baseline == "relay":
            relay_port = free_port()
            relay = subprocess.Popen(
                [sys.executable, "-m", "keyhold.bench.relay", "--port", str(relay_port)],
                stdout=subprocess.DEVNULL,
            )
            try:
                _wait_tcp(relay_port, relay, 30)
                relay_specs = _plan(clients, messages, lambda i: f"ws://127.0.0.1:{relay_port}/?id={i}", None)
                relay_result = load("relay", relay_specs, server_pid=relay.pid, label="relay  ")
            finally:
                _stop(relay)
    except RuntimeError as exc:
        err.print(f"[red]bench failed:[/red] {exc}")
        raise typer.Exit(2) from exc
    finally:
        if server is not None:
            _stop(server)
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)

    k = keyhold_result
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
        "error_samples": k.error_samples + (relay_result.error_samples if relay_result else []),
        "date": started.isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": _machine(),
    }
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2) + "\n")
    console.print(_summary(k, relay_result, report))
    busy = max(r.other_cpu_pct for r in (k, relay_result) if r is not None)
    if busy > NOISY_CPU_PCT:
        err.print(
            f"[yellow]warning:[/yellow] other processes used {busy:.0f}% of a core during the run: "
            "these figures are not from a quiet machine"
        )
    bad = [(r.target, r) for r in (k, relay_result) if r is not None and (r.lost or r.duplicates or r.errors)]
    for name, r in bad:
        err.print(
            f"[red]{name}: {r.errors} error(s), {r.lost} lost, {r.duplicates} duplicate(s)[/red]"
            + "".join(f"\n  {s}" for s in r.error_samples)
        )
    if bad:
        raise typer.Exit(1)

