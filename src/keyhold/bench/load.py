"""The load generator of `keyhold bench delivery`: worker processes, each one uvloop event
loop driving its clients over WebSockets (sans-I/O protocol by default), measuring acks and
deliveries against CLOCK_MONOTONIC. Plain data crosses the process boundary."""

from __future__ import annotations

import array
import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

PACING_TICK_S = 0.001
CONNECTING_AT_ONCE = 20  # per worker: handshakes in flight
# Shared counters, per worker: COUNTERS slots at COUNTERS * worker + one of these.
ACKED, DELIVERED, CONNECTED, COUNTERS = 0, 1, 2, 3
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
    # An e2ee conversation: this client's Megolm session (a vodozemac pickle under
    # `megolm_pickle_key`) and its partner's session key; every text is encrypted on send
    # and decrypted on delivery, in the worker. The bench hands the keys over directly (what
    # Olm does between devices is measured apart).
    megolm_out: str | None = None
    megolm_in: str | None = None
    megolm_pickle_key: bytes = b""


@dataclass
class WorkerSpec:
    worker: int
    clients: list[ClientSpec]
    window: int
    rate: float | None  # this worker's share of the offered rate, msgs/s
    idle_timeout: float
    text_bytes: int
    transport: str  # "sansio" or "asyncio"
    # Every client sends a `ping` frame this often (s), the clients spread evenly over the
    # interval; None: no heartbeats (the server's WebSocket pings are answered either way).
    heartbeat_s: float | None = None


@dataclass
class WorkerResult:
    worker: int
    sent: int = 0
    acked: int = 0
    errors: int = 0
    delivered: int = 0
    duplicates: int = 0
    echoes: int = 0
    pongs: int = 0
    dropped: int = 0  # connections the server closed before the end
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
    connect_s: float = 0.0  # until every client was connected and `ready`
    pongs: int = 0
    dropped: int = 0
    server_rss_before_mb: float | None = None  # before the clients connected


# -- the worker: one event loop, a share of the clients ------------------------------------


class _Client:
    """One member's connection and its bookkeeping (sends it owes, messages it expects)."""

    __slots__ = (
        "acked",
        "conn",
        "expect",
        "got",
        "inbound",
        "last_seq",
        "next_n",
        "outbound",
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
        self.outbound: Any = None
        self.inbound: Any = None
        if spec.megolm_out is not None and spec.megolm_in is not None:
            import vodozemac

            self.outbound = vodozemac.GroupSession.from_pickle(spec.megolm_out, spec.megolm_pickle_key)
            self.inbound = vodozemac.InboundGroupSession(vodozemac.SessionKey(spec.megolm_in))


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
            text = message.get("text")
            if c.inbound is not None and message.get("kind") == "e2ee":
                text = self._decrypt(c, message)
                if text is None:
                    r.echoes += 1  # this client's own message, in its own Megolm session
                    return
            head = (text or "").split(" ", 3)
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
        elif kind == "pong":
            r.pongs += 1
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
        if self.finished.is_set():
            return
        r.dropped += 1
        if len(r.error_samples) < 5:
            r.error_samples.append(f"client {c.spec.index}: connection ended: {exc!r}"[:300])

    def _check_finished(self) -> None:
        r = self.result
        if r.acked + r.errors >= self.to_ack and r.delivered >= self.to_deliver:
            self.finished.set()

    # -- frames out -----------------------------------------------------------------------

    @staticmethod
    def _decrypt(c: _Client, message: dict[str, Any]) -> str | None:
        """The text of the partner's e2ee message; None for one of this client's own."""
        import vodozemac

        encrypted = (message.get("event") or {}).get("content") or {}
        if encrypted.get("session_id") != c.inbound.session_id:
            return None
        decrypted = c.inbound.decrypt(vodozemac.MegolmMessage.from_base64(encrypted["ciphertext"]))
        return bytes(decrypted.plaintext).decode()

    def _frame(self, c: _Client) -> bytes:
        n = c.next_n
        c.next_n = n + 1
        t = time.monotonic_ns()
        c.sent_at[n] = t
        self.result.sent += 1
        text = f"{c.spec.index} {n} {t} {self.pad}"
        frame: dict[str, Any] = {
            "type": "send",
            "ref": n,
            "conversation_id": c.spec.conversation_id,
            "idempotency_key": f"b{c.spec.index}-{n}",
        }
        if c.outbound is not None:
            frame["encrypted"] = {
                "algorithm": "m.megolm.v1.aes-sha2",
                "ciphertext": c.outbound.encrypt(text.encode()).to_base64(),
                "session_id": c.outbound.session_id,
            }
        else:
            frame["text"] = text
        return self.dumps(frame)

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
            self.counters[COUNTERS * self.spec.worker + CONNECTED] += 1

        sem = asyncio.Semaphore(CONNECTING_AT_ONCE)

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

    async def _heartbeats(self) -> None:
        """Each client pings every `heartbeat_s`, client k at offset k/N of the interval, so
        that the server sees a steady N/interval pings per second, as from real idle apps."""
        assert self.spec.heartbeat_s
        interval_ns = int(self.spec.heartbeat_s * 1e9)
        live = [c for c in self.clients if c.conn is not None]
        if not live:
            return
        start = time.monotonic_ns()
        k = 0
        while True:
            due = start + k * interval_ns // len(live)
            delay = (due - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(max(delay, PACING_TICK_S))
            c = live[k % len(live)]
            ping = self.dumps({"type": "ping", "ref": k})
            k += 1
            # A connection the server closed is counted by `on_lost`, not here.
            with contextlib.suppress(Exception):
                if self.sansio:
                    c.conn.send(ping)
                else:
                    await c.conn.send(ping, text=True)

    async def _report_progress(self) -> None:
        w = self.spec.worker
        last = (-1, -1)
        while True:
            r = self.result
            self.counters[COUNTERS * w + ACKED] = r.acked + r.errors
            self.counters[COUNTERS * w + DELIVERED] = r.delivered
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
        heartbeats = loop.create_task(self._heartbeats()) if self.spec.heartbeat_s else None
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
        if heartbeats is not None:
            heartbeats.cancel()
        base = COUNTERS * self.spec.worker
        self.counters[base + ACKED] = r.acked + r.errors
        self.counters[base + DELIVERED] = r.delivered
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
