"""The local scan (the operator's rules and the built-in scanner) in a process of its own.

Why: the scan is Python work, some tens of microseconds a message, and on the server's event
loop that is time in which no socket is served: at saturation, delivery with scanning on ran
at half its rate with scanning off (docs/benchmarks.md). In a child process it runs on another
core. The loop only hands texts over and takes verdicts back, batched: every send screened in
one turn of the loop goes in one write, and the child answers each batch in one write.

What crosses the pipe: each text with its `ScanContext` (ids, the minors' flags, the sender's
account age), to a child of this process only; back, per text, `None` for a message allowed
without support to offer (most: an allowed send's scores are never recorded) or its `Verdict`. Nothing is written to disk. The child reads the
same rules file (`<home>/safety-rules.toml`, re-read when it changes) and keeps its own spam
tracker; the server's in-process scanner stays for what the child cannot answer.

When the child is not there (starting, or gone: it crashed or was killed) `scan` answers False
and the caller scans in-process; the next `scan` after `RESTART_SECONDS` starts a new child.
Sends waiting on a child that goes away are answered with `GONE`, and their caller scans them
in-process: nothing is lost, nothing is scanned by no one. The spam tracker's counts start
again in a new child, which only makes it more lenient.

The protocol: frames of a 4-byte big-endian length and a JSON array, over the child's stdin
and stdout (data only, never code: neither end unpickles what the other sent). The child's own
stdout is pointed at stderr so that nothing else can write into the frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from keyhold.safety.scanning import ScanContext, Verdict

log = logging.getLogger("keyhold.safety.scan_process")
START_TIMEOUT = 60.0  # seconds for a child to load the scanner and say it is ready
RESTART_SECONDS = 5.0  # after a failed or lost child, so that a crashing child does not spin
STOP_TIMEOUT = 5.0
READY: Final = b"ready"
# Printed into the server's log (the child's stderr is the server's) once the child is ready.
READY_NOTICE: Final = "keyhold: scanning in a child process (pid {pid})"
HEADER = 4


class _Gone:
    def __repr__(self) -> str:
        return "GONE"


GONE: Final = _Gone()  # the answer to a send whose child went away before answering
Answer = Verdict | None | _Gone  # None: allowed, nothing to note
Request = tuple[str, int, int, tuple[int, ...], bool, bool, float]


def _request(text: str, c: ScanContext) -> Request:
    return (
        text,
        c.sender_id,
        c.conversation_id,
        c.recipient_ids,
        c.recipient_minor,
        c.sender_adult_non_friend,
        c.sender_account_age_days,
    )


class ScanProcess:
    def __init__(self, home: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._home = home
        self._clock = clock
        self._proc: asyncio.subprocess.Process | None = None
        self._stdin: asyncio.StreamWriter | None = None
        self._starting: asyncio.Task[None] | None = None
        self._reading: asyncio.Task[None] | None = None
        self._not_before = 0.0
        self._closed = False
        self._batch: list[Request] = []
        self._batch_answers: list[Callable[[Answer], None]] = []
        self._in_flight: deque[list[Callable[[Answer], None]]] = deque()

    @property
    def running(self) -> bool:
        return self._stdin is not None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return None if self._proc is None else self._proc.pid

    def scan(self, text: str, context: ScanContext, answer: Callable[[Answer], None]) -> bool:
        """Queue `text` for the child; `answer` is called with its verdict, on the loop, in the
        order of the calls. False when there is no child to ask (one is started)."""
        if self._stdin is None:
            self.start_soon()
            return False
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch.append(_request(text, context))
        self._batch_answers.append(answer)
        return True

    def _flush(self) -> None:
        batch, answers = self._batch, self._batch_answers
        self._batch, self._batch_answers = [], []
        if not batch:
            return
        if self._stdin is None or self._stdin.is_closing():
            for answer in answers:
                _call(answer, GONE)
            return
        try:
            payload = orjson.dumps(batch)
        except orjson.JSONEncodeError:  # a text JSON cannot carry (a lone surrogate): scanned here
            for answer in answers:
                _call(answer, GONE)
            return
        self._stdin.write(len(payload).to_bytes(HEADER, "big") + payload)
        self._in_flight.append(answers)

    def start_soon(self) -> None:
        """Start a child unless one runs or is starting (or the pause after a lost one lasts)."""
        if self._stdin is None and self._starting is None and not self._closed and self._clock() >= self._not_before:
            self._starting = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        proc: asyncio.subprocess.Process | None = None
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "keyhold.safety.scan_process",
                str(self._home),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert proc.stdout is not None and proc.stdin is not None
            hello = await asyncio.wait_for(_read_frame(proc.stdout), START_TIMEOUT)
            if hello != READY:
                raise RuntimeError("the scan process did not say it was ready")
        except Exception as exc:
            log.warning("the scan process did not start (%s); scanning in-process", type(exc).__name__)
            if proc is not None:
                await _stop(proc)
            self._not_before = self._clock() + RESTART_SECONDS
            self._starting = None
            return
        if self._closed:
            await _stop(proc)
            return
        self._proc, self._stdin = proc, proc.stdin
        self._reading = asyncio.get_running_loop().create_task(self._read(proc))
        self._starting = None

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while True:
                payload = await _read_frame(proc.stdout)
                answers = self._in_flight.popleft()
                verdicts = [None if v is None else _verdict(v) for v in orjson.loads(payload)]
                for answer, verdict in zip(answers, verdicts, strict=True):
                    _call(answer, verdict)
        except (asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError, TypeError) as exc:
            if not self._closed:
                log.warning("the scan process went away (%s); scanning in-process", type(exc).__name__)
        finally:
            self._lost()

    def _lost(self) -> None:
        """The child is gone: what it had not answered is answered GONE (scanned in-process)."""
        self._stdin = None
        self._proc = None
        self._not_before = self._clock() + RESTART_SECONDS
        while self._in_flight:
            for answer in self._in_flight.popleft():
                _call(answer, GONE)

    async def aclose(self) -> None:
        self._closed = True
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        proc = self._proc
        if self._stdin is not None:
            self._flush()
            self._stdin.close()  # the child ends at the end of its input
        if proc is not None:
            await _stop(proc)
        if self._reading is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading


def _verdict(fields: list[Any]) -> Verdict:
    action, category, scores, fired, policy, support = fields
    return Verdict(action, category, scores, tuple(fired), policy, support)


def _fields(verdict: Verdict) -> list[Any]:
    return [verdict.action, verdict.category, verdict.scores, verdict.fired, verdict.policy, verdict.support]


def _call(answer: Callable[[Answer], None], verdict: Answer) -> None:
    try:
        answer(verdict)
    except Exception:  # one send's trouble must not stop the answers to the others
        log.exception("answering a scanned send failed")


async def _read_frame(stream: asyncio.StreamReader) -> bytes:
    size = int.from_bytes(await stream.readexactly(HEADER), "big")
    return await stream.readexactly(size)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()


# -- the child ------------------------------------------------------------------------------


def _write_frame(out: BinaryIO, payload: bytes) -> None:
    out.write(len(payload).to_bytes(HEADER, "big") + payload)
    out.flush()


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def serve(home: Path, frames_in: BinaryIO, frames_out: BinaryIO) -> None:
    """The child's loop: a batch in, its verdicts out, until the input ends."""
    from keyhold.safety.pipeline import build_scanner

    scanner = build_scanner(home)
    _write_frame(frames_out, READY)
    print(READY_NOTICE.format(pid=os.getpid()), file=sys.stderr, flush=True)
    while (header := _read_exactly(frames_in, HEADER)) is not None:
        payload = _read_exactly(frames_in, int.from_bytes(header, "big"))
        if payload is None:
            return
        verdicts: list[list[Any] | None] = []
        for text, sender, conversation, recipients, minor, adult_stranger, age_days in orjson.loads(payload):
            context = ScanContext(sender, conversation, tuple(recipients), minor, adult_stranger, age_days)
            verdict = scanner.scan_local(text, context)
            verdicts.append(None if verdict.action == "allow" and not verdict.support else _fields(verdict))
        _write_frame(frames_out, orjson.dumps(verdicts))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m keyhold.safety.scan_process HOME", file=sys.stderr)
        return 2
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, never into the frames
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        serve(Path(argv[0]), sys.stdin.buffer, frames_out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
