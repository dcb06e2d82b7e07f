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
6. with `--baseline relay`, runs the identical load against `keyhold.cli.relay` (a bare
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
import contextlib
import datetime as dt
import functools
import json
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
err = Console(stderr=True)
API = "/api/v1"
PASSWORD = "bench-password-not-secret"  # noqa: S105  # throwaway accounts on a throwaway (or named) server
# Cheap argon2 for the bench's own throwaway server: registering 100+ members with the
# production cost (~100 ms/hash on 2 cores) would only slow the set-up, not the measured phase.
BENCH_SERVER_ENV = {"KEYHOLD_ARGON2_TIME_COST": "1", "KEYHOLD_ARGON2_MEMORY_KIB": "8192"}
NOISY_CPU_PCT = 15.0  # other processes' CPU during a run above which the figures are suspect
PACING_TICK_S = 0.001
TEXT_PAD = "the quick brown fox jumps over the lazy dog"


# -- plan and results (plain data: they cross process boundaries) --------------------------


@dataclass
class ClientSpec:
    index: int  # 0..N-1; the partner of 2k is 2k+1
    partner: int
    ws_url: str
    token: str | None  # None for the relay
    conversation_id: int  # the relay: the partner's index
    count: int  # messages this client sends
    expect: int  # messages it must receive from its partner


@dataclass
class WorkerSpec:
    worker: int
    clients: list[ClientSpec]
    window: int
    rate: float | None  # this worker's share of the offered rate, msgs/s
    idle_timeout: float
    text_bytes: int
    transport: str  # "sansio" or "asyncio"


@dataclass
class WorkerResult:
    worker: int
    sent: int = 0
    acked: int = 0
    errors: int = 0
    delivered: int = 0
    duplicates: int = 0
    echoes: int = 0
    missing_acks: int = 0
    missing_deliveries: int = 0
    seq_errors: int = 0
    first_send_ns: int = 0
    last_ack_ns: int = 0
    last_delivery_ns: int = 0
    behind_schedule_ms: float = 0.0  # rate mode: the worst lag of a send behind its schedule
    cpu_s: float = 0.0
    latencies_ms: bytes = b""  # array('d')
    ack_latencies_ms: bytes = b""
    error_samples: list[str] = field(default_factory=list)
    failure: str | None = None


@dataclass
class LoadResult:
    target: str
    clients: int
    messages: int
    sent: int
    acked: int
    delivered: int
    errors: int
    duplicates: int
    lost: int
    seq_errors: int
    duration_s: float
    accepted_per_s: float
    delivered_per_s: float
    messages_per_s: float
    delivery_ms: dict[str, float]
    ack_ms: dict[str, float]
    loadgen_cpu_pct: float
    server_cpu_pct: float | None
    other_cpu_pct: float  # everything else the machine did meanwhile (other processes)
    server_rss_mb: float | None
    server_rss_peak_mb: float | None
    behind_schedule_ms: float
    error_samples: list[str]


# -- the worker: one event loop, a share of the clients ------------------------------------


class _Client:
    """One member's connection and its bookkeeping (sends it owes, messages it expects)."""

    __slots__ = (
        "acked",
        "conn",
        "expect",
        "got",
        "last_seq",
        "next_n",
        "ready",
        "sent_at",
        "spec",
        "window",
    )

    def __init__(self, spec: ClientSpec, window: int) -> None:
        self.spec = spec
        self.conn: Any = None  # _SansIOConnection, or a websockets asyncio ClientConnection
        self.window = asyncio.Semaphore(window)  # the asyncio transport's window
        self.sent_at = array.array("q", bytes(8 * spec.count))
        self.acked = bytearray(spec.count)
        self.got = bytearray(spec.expect)
        self.expect = spec.expect
        self.next_n = 0
        self.last_seq = 0
        self.ready = asyncio.Event()


class _SansIOConnection(asyncio.Protocol):
    """A WebSocket client on `websockets`' own sans-I/O protocol, driven by callbacks.

    Same library, same framing and masking code as `websockets.asyncio.client`, without a
    future, a queue and a task switch per frame: frames are handled as they are parsed, and
    every send made while handling one read is written with a single `write`.
    """

    def __init__(self, worker: _Worker, client: _Client, uri: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.worker = worker
        self.client = client
        self.proto = ClientProtocol(parse_uri(uri), max_size=1 << 20)  # no extensions: no deflate
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.flush_scheduled = False
        self.in_read = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        request = self.proto.connect()
        if self.client.spec.token:
            request.headers["Authorization"] = f"Bearer {self.client.spec.token}"
        self.proto.send_request(request)
        self.flush()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode
        from websockets.protocol import OPEN

        proto = self.proto
        proto.receive_data(data)
        self.in_read = True
        try:
            on_frame, client = self.worker.on_frame, self.client
            for event in proto.events_received():
                if type(event) is Frame:
                    if event.opcode is Opcode.TEXT or event.opcode is Opcode.BINARY:
                        on_frame(client, event.data)
                elif not self.opened.done():  # the handshake response
                    if proto.state is OPEN:
                        self.opened.set_result(None)
                    else:
                        self.opened.set_exception(proto.handshake_exc or ConnectionError("handshake failed"))
        finally:
            self.in_read = False
        self.flush()

    def eof_received(self) -> bool | None:
        self.proto.receive_eof()
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("connection closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.worker.on_lost(self.client, exc)

    def send(self, payload: bytes) -> None:
        self.proto.send_text(payload)
        if not self.in_read and not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        chunks = self.proto.data_to_send()
        if not chunks or self.transport is None or self.transport.is_closing():
            return
        data = [c for c in chunks if c]
        if data:
            self.transport.write(b"".join(data))
        if len(data) < len(chunks) and self.transport.can_write_eof():
            self.transport.write_eof()

    async def close(self) -> None:
        from websockets.protocol import OPEN

        if self.proto.state is OPEN:
            self.proto.send_close(1000)
            self.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), 2)
        if self.transport is not None:
            self.transport.close()


class _Worker:
    def __init__(self, spec: WorkerSpec, counters: Any) -> None:
        import orjson

        self.spec = spec
        self.counters = counters  # shared: [acked, delivered] per worker, for the progress bar
        self.result = WorkerResult(worker=spec.worker)
        self.clients = [_Client(c, spec.window) for c in spec.clients]
        self.latencies = array.array("d")
        self.ack_latencies = array.array("d")
        self.to_ack = sum(c.spec.count for c in self.clients)
        self.to_deliver = sum(c.spec.expect for c in self.clients)
        self.finished = asyncio.Event()
        self.readers: list[asyncio.Task[None]] = []
        self.progress_at = time.monotonic()
        self.sansio = spec.transport == "sansio"
        self.pipelined = not spec.rate
        self.dumps, self.loads = orjson.dumps, orjson.loads
        pad = TEXT_PAD * (1 + spec.text_bytes // len(TEXT_PAD))
        self.pad = pad[: max(0, spec.text_bytes - 30)]

    # -- frames in ------------------------------------------------------------------------

    def on_frame(self, c: _Client, raw: bytes | bytearray | memoryview | str) -> None:
        now = time.monotonic_ns()
        r = self.result
        frame = self.loads(raw)
        kind = frame.get("type")
        if kind == "message.new":
            seq = frame.get("seq", 0)
            if seq <= c.last_seq:
                r.seq_errors += 1
            c.last_seq = seq
            message = frame.get("message") or {}
            head = (message.get("text") or "").split(" ", 3)
            try:
                sender, n, t_sent = int(head[0]), int(head[1]), int(head[2])
            except (IndexError, ValueError):
                return  # not one of ours
            if sender == c.spec.index:
                r.echoes += 1  # the server also tells the sender's own devices
                return
            if sender != c.spec.partner or not 0 <= n < c.expect:
                r.seq_errors += 1
                return
            if c.got[n]:
                r.duplicates += 1
                return
            c.got[n] = 1
            r.delivered += 1
            r.last_delivery_ns = now
            self.latencies.append((now - t_sent) / 1e6)
            if r.delivered >= self.to_deliver:
                self._check_finished()
        elif kind == "ack":
            n = frame.get("ref")
            if not isinstance(n, int) or not 0 <= n < c.spec.count:
                return
            if c.acked[n]:
                r.duplicates += 1
                return
            c.acked[n] = 1
            r.acked += 1
            r.last_ack_ns = now
            self.ack_latencies.append((now - c.sent_at[n]) / 1e6)
            self._slot_freed(c)
        elif kind == "error":
            r.errors += 1
            if len(r.error_samples) < 5:
                r.error_samples.append(str(frame)[:300])
            n = frame.get("ref")
            if isinstance(n, int) and 0 <= n < c.spec.count and not c.acked[n]:
                self._slot_freed(c)
            self._check_finished()
        elif kind == "ready":
            c.last_seq = int(frame.get("seq", 0))
            c.ready.set()

    def _slot_freed(self, c: _Client) -> None:
        if self.pipelined:
            if self.sansio:
                if c.next_n < c.spec.count:
                    self._send(c)
            else:
                c.window.release()
        r = self.result
        if r.acked + r.errors >= self.to_ack:
            self._check_finished()

    def on_lost(self, c: _Client, exc: BaseException | None) -> None:
        r = self.result
        if not self.finished.is_set() and len(r.error_samples) < 5:
            r.error_samples.append(f"client {c.spec.index}: connection ended: {exc!r}"[:300])

    def _check_finished(self) -> None:
        r = self.result
        if r.acked + r.errors >= self.to_ack and r.delivered >= self.to_deliver:
            self.finished.set()

    # -- frames out -----------------------------------------------------------------------

    def _frame(self, c: _Client) -> bytes:
        n = c.next_n
        c.next_n = n + 1
        t = time.monotonic_ns()
        c.sent_at[n] = t
        self.result.sent += 1
        return self.dumps(
            {
                "type": "send",
                "ref": n,
                "conversation_id": c.spec.conversation_id,
                "text": f"{c.spec.index} {n} {t} {self.pad}",
                "idempotency_key": f"b{c.spec.index}-{n}",
            }
        )

    def _send(self, c: _Client) -> None:
        """Sans-I/O transport: queue one send (written at the end of this read, or soon)."""
        c.conn.send(self._frame(c))

    async def _send_async(self, c: _Client) -> None:
        """asyncio transport: one send through `websockets.asyncio`."""
        await c.conn.send(self._frame(c), text=True)

    # -- connecting -----------------------------------------------------------------------

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()

        async def one(c: _Client) -> None:
            if self.sansio:
                from websockets.uri import parse_uri

                uri = parse_uri(c.spec.ws_url)
                if uri.secure:
                    raise RuntimeError("the sans-I/O transport speaks ws:// only; use --transport asyncio")
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _SansIOConnection(self, c, c.spec.ws_url), uri.host, uri.port
                    ),
                    30,
                )
                c.conn = conn
                await asyncio.wait_for(conn.opened, 30)
            else:
                from websockets.asyncio.client import connect

                headers = {"Authorization": f"Bearer {c.spec.token}"} if c.spec.token else None
                c.conn = await connect(
                    c.spec.ws_url,
                    additional_headers=headers,
                    compression=None,
                    max_size=1 << 20,
                    max_queue=None,
                    ping_interval=None,
                    open_timeout=30,
                )
                self.readers.append(loop.create_task(self._reader(c)))
            await asyncio.wait_for(c.ready.wait(), 30)

        sem = asyncio.Semaphore(20)

        async def limited(c: _Client) -> None:
            async with sem:
                await one(c)

        await asyncio.gather(*(limited(c) for c in self.clients))

    async def _reader(self, c: _Client) -> None:
        try:
            async for raw in c.conn:
                self.on_frame(c, raw)
        except Exception as exc:
            self.on_lost(c, exc)
        else:
            self.on_lost(c, None)

    # -- the send phase -------------------------------------------------------------------

    async def _pipelined_async(self, c: _Client) -> None:
        for _ in range(c.spec.count):
            await c.window.acquire()
            await self._send_async(c)

    def _start_pipelined_sansio(self) -> None:
        for c in self.clients:
            for _ in range(min(self.spec.window, c.spec.count)):
                self._send(c)

    async def _paced(self, t0_ns: int) -> None:
        """Open loop at this worker's share of the rate: message k is due at t0 + k/rate."""
        assert self.spec.rate
        rate = self.spec.rate
        order: list[_Client] = []
        longest = max((c.spec.count for c in self.clients), default=0)
        for n in range(longest):
            order.extend(c for c in self.clients if n < c.spec.count)
        r = self.result
        k = 0
        while k < len(order):
            now = time.monotonic_ns()
            due = min(len(order), int((now - t0_ns) / 1e9 * rate) + 1)
            if due > k:
                r.behind_schedule_ms = max(r.behind_schedule_ms, (now - t0_ns) / 1e6 - k / rate * 1e3)
            while k < due:
                if self.sansio:
                    self._send(order[k])
                else:
                    await self._send_async(order[k])
                k += 1
            delay = (t0_ns + int(k / rate * 1e9) - time.monotonic_ns()) / 1e9
            if delay > 0:
                # The loop's timers have 1 ms resolution: a shorter sleep would spin. Above
                # 1,000 msgs/s the sends due within a millisecond go out together.
                await asyncio.sleep(max(delay, PACING_TICK_S))

    async def _report_progress(self) -> None:
        w = self.spec.worker
        last = (-1, -1)
        while True:
            r = self.result
            self.counters[2 * w] = r.acked + r.errors
            self.counters[2 * w + 1] = r.delivered
            if (r.acked, r.delivered) != last:
                last = (r.acked, r.delivered)
                self.progress_at = time.monotonic()
            await asyncio.sleep(0.1)

    async def run(self, go: Any, t0_box: Any, ready_queue: Any) -> WorkerResult:
        loop = asyncio.get_running_loop()
        r = self.result
        try:
            await self.connect()
        except Exception as exc:
            r.failure = f"worker {self.spec.worker} could not connect: {exc!r}"
            ready_queue.put(("failed", self.spec.worker))
            return r
        ready_queue.put(("ready", self.spec.worker))
        await loop.run_in_executor(None, go.wait)
        t0 = int(t0_box.value)
        delay = (t0 - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        cpu0 = time.process_time()
        r.first_send_ns = t0
        progress = loop.create_task(self._report_progress())
        senders: list[asyncio.Task[None]] = []
        if self.spec.rate:
            senders.append(loop.create_task(self._paced(t0)))
        elif self.sansio:
            self._start_pipelined_sansio()
        else:
            senders.extend(loop.create_task(self._pipelined_async(c)) for c in self.clients)
        self._check_finished()
        self.progress_at = time.monotonic()
        while not self.finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), 1.0)
            if time.monotonic() - self.progress_at > self.spec.idle_timeout:
                break
            if any(t.done() and t.exception() for t in senders):
                break
        r.cpu_s = time.process_time() - cpu0
        for t in senders:
            if t.done() and t.exception() and len(r.error_samples) < 5:
                r.error_samples.append(f"sender failed: {t.exception()!r}"[:300])
        await asyncio.sleep(0.3)  # let late duplicates show up
        progress.cancel()
        self.counters[2 * self.spec.worker] = r.acked + r.errors
        self.counters[2 * self.spec.worker + 1] = r.delivered
        for t in senders:
            t.cancel()
        self.finished.set()  # from here on, a closed connection is not an error
        await asyncio.gather(*(c.conn.close() for c in self.clients if c.conn), return_exceptions=True)
        r.missing_acks = sum(c.spec.count - sum(c.acked) for c in self.clients) - r.errors
        r.missing_deliveries = sum(c.expect - sum(c.got) for c in self.clients)
        r.latencies_ms = self.latencies.tobytes()
        r.ack_latencies_ms = self.ack_latencies.tobytes()
        return r


def _worker_main(spec: WorkerSpec, counters: Any, go: Any, t0_box: Any, ready_queue: Any, out: Any) -> None:
    import uvloop

    try:
        result = uvloop.run(_Worker(spec, counters).run(go, t0_box, ready_queue))
    except BaseException as exc:
        result = WorkerResult(worker=spec.worker, failure=f"worker {spec.worker} crashed: {exc!r}")
        with contextlib.suppress(Exception):
            ready_queue.put(("failed", spec.worker))
    out.put(asdict(result))


# -- processes: server, relay, workers ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status_mb(pid: int, field_name: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def machine_busy_s() -> float:
    """CPU seconds spent by the whole machine (all cores) on anything but idling."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class _Snapshot:
    wall: float
    server_cpu: float | None
    server_rss_mb: float | None
    machine_busy: float

    @classmethod
    def take(cls, pid: int | None) -> _Snapshot:
        return cls(
            time.monotonic(),
            proc_cpu_s(pid),
            proc_status_mb(pid, "VmRSS") if pid is not None else None,
            machine_busy_s(),
        )


def _wait_http(url: str, process: subprocess.Popen[bytes] | None, log: Path | None, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"the server exited early:\n{tail}")
        try:
            if httpx.get(url + API + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the server at {url} did not answer /health within {timeout:.0f}s")


def _wait_tcp(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the relay exited early")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError("the relay did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _default_workers() -> int:
    # The server needs a core of its own; more generator processes than the spare cores only
    # fight it for CPU.
    return max(1, min(4, (os.cpu_count() or 2) - 1))


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
                [sys.executable, "-m", "keyhold.cli.relay", "--port", str(relay_port)],
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


def register(app: typer.Typer) -> None:
    """Add `keyhold bench` (delivery here; other benchmarks plug in from their own modules)."""
    import importlib

    bench_app = typer.Typer(
        help="Benchmarks (figures and how they were taken: docs/benchmarks.md).", no_args_is_help=True
    )
    bench_app.command("delivery")(delivery)
    for module in ("keyhold.cli.bench_access",):
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(bench_app)
    app.add_typer(bench_app, name="bench")
