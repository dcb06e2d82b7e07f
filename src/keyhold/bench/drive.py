"""What the WebSocket benchmarks share: members set up through the public API in pairs, a
plan of who sends what to whom, and `run_load`, which drives that plan from worker processes
(`keyhold.bench.load`) and measures the server meanwhile."""

from __future__ import annotations

import array
import asyncio
import dataclasses
import multiprocessing as mp
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from keyhold.bench.load import (
    ACKED,
    CONNECTED,
    COUNTERS,
    DELIVERED,
    ClientSpec,
    LoadResult,
    WorkerSpec,
    _worker_main,
)
from keyhold.bench.procs import OwnServer, _Snapshot, _wait_http, proc_status_mb

err = Console(stderr=True)
API = "/api/v1"
PASSWORD = "bench-password-not-secret"  # noqa: S105  # throwaway accounts on a throwaway (or named) server
# The cheapest argon2 for the bench's own throwaway server: registering thousands of members
# at the production cost (~100 ms/hash on 2 cores) would only slow the set-up; no password is
# hashed in the measured phase.
BENCH_SERVER_ENV = {
    "KEYHOLD_ARGON2_TIME_COST": "1",
    "KEYHOLD_ARGON2_MEMORY_KIB": "1024",
    "KEYHOLD_ARGON2_PARALLELISM": "1",
    # The e2ee costs send to a 50-member group (the default limit is 32).
    "KEYHOLD_MAX_GROUP_MEMBERS": "64",
    # Throughput runs send thousands of messages a second, all from one address: the limiter
    # still checks each send (its cost is in the figures) against figures a million times the
    # real ones (`bench flood` measures the real ones).
    "KEYHOLD_RATE_LIMIT_SCALE": "1000000",
}


@dataclass
class Target:
    """The server a bench measures: its base URL, its pid if known (for RSS and CPU), and the
    bench's own server process if it started one."""

    url: str
    pid: int | None
    own: OwnServer | None

    def stop(self) -> None:
        """Stop the bench's own server (a running one named by --url is left alone)."""
        if self.own is not None:
            self.own.stop()


@contextmanager
def bench_target(
    url: str | None, home: Path | None, server_pid: int | None, env: dict[str, str] | None = None
) -> Iterator[Target]:
    """A running server (`url`, with `server_pid` if given), or a throwaway one of the bench's
    own (with `env` on top of the bench's), removed afterwards. A `RuntimeError` inside ends the
    command: its message, exit 2."""
    own = OwnServer(home, {**os.environ, **BENCH_SERVER_ENV, **(env or {})}) if url is None else None
    try:
        if own is not None:
            err.print(f"server: {own.url} (data {own.data_dir}, log {own.log_path})")
            own.start()
            yield Target(own.url, own.pid, own)
        else:
            target = (url or "").rstrip("/")
            _wait_http(target, None, None, 30)
            yield Target(target, server_pid, None)
    except RuntimeError as exc:
        err.print(f"[red]bench failed:[/red] {exc}")
        raise typer.Exit(2) from exc
    finally:
        if own is not None:
            own.close()


@dataclass
class Pair:
    a: str
    b: str
    token_a: str = ""
    token_b: str = ""
    conversation_id: int = 0


async def set_up_members(
    url: str,
    clients: int,
    prefix: str,
    on_pair: Callable[[], None] | None = None,
    conversing: set[int] | None = None,
    encryption: str = "standard",
) -> list[Pair]:
    """Register the members and sign each in, make each pair friends and give it a 1:1
    conversation; with `conversing`, only the pairs of those indices (the others have no
    conversation: `conversation_id` 0). `on_pair` is called as each pair is ready."""
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

        async def pair(index: int, p: Pair) -> None:
            p.token_a, p.token_b = await asyncio.gather(member(p.a), member(p.b))
            if conversing is None or index in conversing:
                await asyncio.gather(
                    call("PUT", f"/following/{p.b}", p.token_a), call("PUT", f"/following/{p.a}", p.token_b)
                )
                body = {"members": [p.b], "encryption": encryption}
                view = await call("POST", "/conversations", p.token_a, json=body)
                p.conversation_id = int(view["id"])
            if on_pair is not None:
                on_pair()

        await asyncio.gather(*(pair(i, p) for i, p in enumerate(pairs)))
    return pairs


def with_megolm(specs: list[ClientSpec]) -> list[ClientSpec]:
    """Each client a Megolm session of its own, and its partner the key that reads it."""
    import vodozemac

    pickle_key = secrets.token_bytes(32)
    sessions = [vodozemac.GroupSession() for _ in specs]
    return [
        dataclasses.replace(
            spec,
            megolm_out=sessions[spec.index].pickle(pickle_key),
            megolm_in=sessions[spec.partner].session_key.to_base64(),
            megolm_pickle_key=pickle_key,
        )
        for spec in specs
    ]


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def plan(
    clients: int, counts: list[int], ws_url: Callable[[int], str], pairs: list[Pair] | None
) -> list[ClientSpec]:
    """Client i talks to i ^ 1 (its pair) and sends `counts[i]` messages."""
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


def percentiles(values: array.array[float]) -> dict[str, float]:
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
    heartbeat_s: float | None = None,
) -> LoadResult:
    """Drive one load (identical for Keyhold and the relay) from `workers` processes: connect
    every client (a progress bar), then send the plan, timed from one start for all."""
    ctx = mp.get_context("spawn")
    rss_before = proc_status_mb(server_pid, "VmRSS") if server_pid is not None else None
    clients = len(specs)
    workers = max(1, min(workers, clients // 2))
    pair_counts = split(clients // 2, workers)
    shares: list[list[ClientSpec]] = []
    start = 0
    for n in pair_counts:
        shares.append(specs[2 * start : 2 * (start + n)])
        start += n
    counters = ctx.Array("q", COUNTERS * workers, lock=False)

    def counted(which: int) -> int:
        return sum(counters[COUNTERS * w + which] for w in range(workers))

    go = ctx.Event()
    t0_box = ctx.Value("q", 0, lock=False)
    ready_queue = ctx.Queue()
    out = ctx.Queue()
    procs = []
    for w, share in enumerate(shares):
        share_rate = rate * sum(c.count for c in share) / max(messages, 1) if rate else None
        spec = WorkerSpec(w, share, window, share_rate, idle_timeout, text_bytes, transport, heartbeat_s)
        p = ctx.Process(target=_worker_main, args=(spec, counters, go, t0_box, ready_queue, out), daemon=True)
        p.start()
        procs.append(p)
    results: list[dict[str, Any]] = []
    try:
        failed = False
        connect_started = time.monotonic()
        # A handshake and a `ready` take milliseconds; allow far more, never less than 3 min.
        connect_deadline = connect_started + max(180.0, 0.05 * clients)
        waiting = len(procs)
        connecting = (
            TextColumn(f"[bold]{label}[/bold] connected"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*connecting, console=err, transient=False, refresh_per_second=5) as progress:
            task = progress.add_task("connect", total=clients)
            while waiting:
                try:
                    status, _w = ready_queue.get(timeout=0.2)
                except Exception as exc:  # queue.Empty
                    if time.monotonic() > connect_deadline:
                        raise RuntimeError("the load workers did not connect in time") from exc
                    progress.update(task, completed=counted(CONNECTED))
                    continue
                waiting -= 1
                failed = failed or status != "ready"
            progress.update(task, completed=counted(CONNECTED))
        connect_s = time.monotonic() - connect_started
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
                acked, delivered = counted(ACKED), counted(DELIVERED)
                progress.update(task, completed=acked, delivered=delivered)
                if snap1 is None and acked >= messages and delivered >= messages:
                    snap1 = _Snapshot.take(server_pid)  # the send phase is over
            acked, delivered = counted(ACKED), counted(DELIVERED)
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
        delivery_ms=percentiles(latencies),
        ack_ms=percentiles(acks),
        loadgen_cpu_pct=loadgen_cpu,
        server_cpu_pct=server_cpu,
        other_cpu_pct=other_cpu,
        server_rss_mb=snap1.server_rss_mb,
        server_rss_peak_mb=proc_status_mb(server_pid, "VmHWM") if server_pid is not None else None,
        behind_schedule_ms=max(r["behind_schedule_ms"] for r in results),
        error_samples=samples,
        connect_s=connect_s,
        pongs=total("pongs"),
        dropped=total("dropped"),
        server_rss_before_mb=rss_before,
    )


def ws_base(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url.removeprefix("https://").rstrip("/")
    return "ws://" + url.removeprefix("http://").rstrip("/")
