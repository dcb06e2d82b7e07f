"""The local scan (the operator's rules and the built-in scanner) in a process of its own.

Why: the scan is Python work, some tens of microseconds a message, and on the server's event
loop that is time in which no socket is served: at saturation, delivery with scanning on ran
at half its rate with scanning off (docs/benchmarks.md). In a child process it runs on another
core. The loop only hands texts over and takes verdicts back, batched: the sends screened in
one turn of the loop go in one write (`BATCH_MOST` at most: the child starts on the first ones
while the loop still reads the rest), and the child answers each batch in one write. The
answers are read as soon as they are there and after each batch sent, not only on the loop's
next turn (which under load comes milliseconds later, and every ack with it). The child runs
as batch work (SCHED_BATCH): it never preempts the server's own threads.

What crosses the pipe: each text with its `ScanContext` (ids, the minors' flags, the sender's
account age), to a child of this process only; back, per text, its `Verdict`, or `None` for a
message allowed without support to offer when the caller asked for no more (a text-only send:
an allowed send's scores are never recorded), or "could not" (the scan raised: the server
scans that text itself). Nothing is written to disk, and no text is logged. The child reads
the same rules file (`<home>/safety-rules.toml`, re-read when it changes) and keeps its own
spam tracker; the server's in-process scanner stays for what the child cannot answer.

When the child is not there (starting, gone, or refusing to start while the rules file does
not parse: a new child would have no rules, where the server keeps the last good ones) `scan`
answers False and the caller scans in-process. A lost child is replaced after
`RESTART_SECONDS`, one that would not start after `START_FAILED_SECONDS`. A child that leaves a
batch unanswered for `answer_timeout` is killed. Sends waiting on a child that goes away are
answered with `GONE`, and their caller scans them in-process: nothing is lost, nothing is
scanned by no one. The spam tracker's counts start again in a new child, which only makes it
more lenient.

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
RESTART_SECONDS = 5.0  # after a lost child, so that a crashing child does not spin
START_FAILED_SECONDS = 60.0  # after a child that would not start (a broken rules file)
ANSWER_TIMEOUT = 10.0  # a child that has not answered a batch this long is stuck: killed
STOP_TIMEOUT = 5.0
READY: Final = b"ready"
# Printed into the server's log (the child's stderr is the server's) once the child is ready.
READY_NOTICE: Final = "keyhold: scanning in a child process (pid {pid})"
HEADER = 4
BATCH_MOST = 64  # texts in one frame at most: the child starts on them while the loop still reads sends


class _Gone:
    def __repr__(self) -> str:
        return "GONE"


GONE: Final = _Gone()  # the answer to a send whose child went away before answering
Answer = Verdict | None | _Gone  # None: allowed, nothing to note
Request = tuple[bool, str, int, int, tuple[int, ...], bool, bool, float]
# How an answer reaches its caller: (the caller's callback, the answer, what was asked).
Settle = Callable[[Callable[[Any], None], Answer, Request], None]


def asked(request: Request) -> tuple[str, ScanContext]:
    """The text and context of a request, as given to `scan` (or as it came over the pipe,
    where the recipients are a list)."""
    _full, text, sender, conversation, recipients, minor, adult_stranger, age_days = request
    return text, ScanContext(sender, conversation, tuple(recipients), minor, adult_stranger, age_days)


def _as_is(answer: Callable[[Any], None], got: Answer, _request: Request) -> None:
    answer(got)


def _request(full: bool, text: str, c: ScanContext) -> Request:
    return (
        full,
        text,
        c.sender_id,
        c.conversation_id,
        c.recipient_ids,
        c.recipient_minor,
        c.sender_adult_non_friend,
        c.sender_account_age_days,
    )


class ScanProcess:
    def __init__(
        self, home: Path, clock: Callable[[], float] = time.monotonic, answer_timeout: float = ANSWER_TIMEOUT
    ) -> None:
        # Hands each answer to its caller; by default the answer as it came (`Answer`). Its
        # user may set its own (`SafetyScreen`: a screening, with no object per send).
        self.settle: Settle = _as_is
        self._home = home
        self._clock = clock
        self._answer_timeout = answer_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._stdin: asyncio.StreamWriter | None = None
        self._starting: asyncio.Task[None] | None = None
        self._answers_fd: int | None = None  # the child's stdout, read without blocking
        self._unread = bytearray()  # what came from it and is not a whole frame yet
        self._not_before = 0.0
        self._closed = False
        self._batch: list[Request] = []
        self._batch_answers: list[Callable[[Any], None]] = []
        self._in_flight: deque[tuple[list[Request], list[Callable[[Any], None]]]] = deque()
        self._sent = 0  # batches written to the current child
        self._answered = 0  # batches it answered

    @property
    def running(self) -> bool:
        return self._stdin is not None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return None if self._proc is None else self._proc.pid

    def scan(self, text: str, context: ScanContext, answer: Callable[[Any], None], *, full: bool = False) -> bool:
        """Queue `text` for the child; `answer` is called once (through `settle`) with its
        verdict, on the loop (in the order of the calls, unless the child is lost: then GONE).
        `full`: the verdict even of an allowed message, scores and all (else None for one
        allowed without support). False when there is no child to ask (one is started)."""
        if self._stdin is None:
            self.start_soon()
            return False
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch.append(_request(full, text, context))
        self._batch_answers.append(answer)
        if len(self._batch) >= BATCH_MOST:
            self._flush()
        return True

    def _flush(self) -> None:
        batch, answers = self._batch, self._batch_answers
        self._batch, self._batch_answers = [], []
        if not batch:
            return
        if self._stdin is None or self._stdin.is_closing():
            self._gone(batch, answers)
            return
        try:
            payload = orjson.dumps(batch)
        except orjson.JSONEncodeError:  # a text JSON cannot carry (a lone surrogate): scanned here
            self._gone(batch, answers)
            return
        self._stdin.write(len(payload).to_bytes(HEADER, "big") + payload)
        self._in_flight.append((batch, answers))
        self._sent += 1
        asyncio.get_running_loop().call_later(self._answer_timeout, self._check_answered, self._proc, self._sent)
        # Answers already back are taken now, not on the loop's next turn: under load a turn
        # takes milliseconds, and a send waiting for its answer that long waits for its ack
        # that much longer.
        self._answered_now()

    def _check_answered(self, proc: asyncio.subprocess.Process | None, batch: int) -> None:
        """A child still on a batch `answer_timeout` after it was sent is stuck (a runaway
        operator regex, a stopped process): killed, and its sends are scanned in-process."""
        if proc is not None and proc is self._proc and self._answered < batch:
            log.warning("the scan process did not answer for %.1f s: killed", self._answer_timeout)
            _kill(proc)

    def start_soon(self) -> None:
        """Start a child unless one runs or is starting (or the pause after a lost one lasts)."""
        if self._stdin is None and self._starting is None and not self._closed and self._clock() >= self._not_before:
            self._starting = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        proc: asyncio.subprocess.Process | None = None
        answers_fd, child_out = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",  # the working directory is not put on the child's module path
                "-m",
                "keyhold.safety.scan_process",
                str(self._home),
                stdin=asyncio.subprocess.PIPE,
                stdout=child_out,
            )
            os.close(child_out)
            child_out = -1
            os.set_blocking(answers_fd, False)
            hello = await asyncio.wait_for(_first_frame(answers_fd), START_TIMEOUT)
            if hello != READY:
                raise RuntimeError("the scan process did not say it was ready")
        except BaseException as exc:
            for fd in (answers_fd, child_out):
                if fd >= 0:
                    os.close(fd)
            if proc is not None:
                _kill(proc)
                await proc.wait()
            self._starting = None
            if not isinstance(exc, Exception):
                raise  # cancelled (closing): the half-started child is gone
            log.warning("the scan process did not start (%s); scanning in-process", type(exc).__name__)
            self._not_before = self._clock() + START_FAILED_SECONDS
            return
        if self._closed:
            os.close(answers_fd)
            await _stop(proc)
            return
        self._sent = self._answered = 0
        self._proc, self._stdin = proc, proc.stdin
        self._answers_fd, self._unread = answers_fd, bytearray()
        asyncio.get_running_loop().add_reader(answers_fd, self._answered_now)
        self._starting = None

    def _answered_now(self) -> None:
        """Take the answers the child has written so far: when its output is readable, and
        after each batch sent. Its output ending or not making sense ends it (`_lost`)."""
        fd = self._answers_fd
        if fd is None:
            return
        try:
            open_ = _read_available(fd, self._unread)
            while (frame := _take_frame(self._unread)) is not None:
                verdicts = [None if v is None else _answer(v) for v in orjson.loads(frame)]
                if not self._in_flight or len(verdicts) != len(self._in_flight[0][0]):
                    raise ValueError("an answer that fits no batch")
                batch, answers = self._in_flight.popleft()
                self._answered += 1
                self._settle_all(batch, answers, verdicts)
            if not open_:
                raise ConnectionError("the scan process's output ended")
        except (OSError, ValueError, TypeError) as exc:
            if not self._closed:
                log.warning("the scan process went away (%s); scanning in-process", type(exc).__name__)
            self._lost()

    def _lost(self) -> None:
        """The child is gone (or talks nonsense: ended): what it had not answered is answered
        GONE (scanned in-process)."""
        if self._answers_fd is not None:
            asyncio.get_running_loop().remove_reader(self._answers_fd)
            os.close(self._answers_fd)
            self._answers_fd = None
        if self._proc is not None:
            _kill(self._proc)
        self._stdin = None
        self._proc = None
        self._not_before = self._clock() + RESTART_SECONDS
        while self._in_flight:
            self._gone(*self._in_flight.popleft())

    def _gone(self, batch: list[Request], answers: list[Callable[[Any], None]]) -> None:
        self._settle_all(batch, answers, [GONE] * len(batch))

    def _settle_all(self, batch: list[Request], answers: list[Callable[[Any], None]], got: list[Answer]) -> None:
        settle = self.settle
        for answer, verdict, request in zip(answers, got, batch, strict=True):
            try:
                settle(answer, verdict, request)
            except Exception as exc:  # one send's trouble must not stop the answers to the others
                log.error("answering a scanned send failed: %s", type(exc).__name__)  # the text could be in it

    async def aclose(self) -> None:
        self._closed = True
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        proc = self._proc
        if self._stdin is not None:
            self._flush()
            self._stdin.close()  # the child answers what it has, and ends at the end of its input
        if proc is not None:
            await _stop(proc)
            self._answered_now()  # its last answers, then the end of its output
        if self._answers_fd is not None:
            self._lost()


def _answer(fields: list[Any] | None) -> Answer:
    """One answer off the pipe: None (allowed), GONE (the child could not scan it), a verdict."""
    if fields is None:
        return None
    if not fields:
        return GONE
    action, category, scores, fired, policy, support = fields
    return Verdict(action, category, scores, tuple(fired), policy, support)


def _fields(verdict: Verdict) -> list[Any]:
    return [verdict.action, verdict.category, verdict.scores, verdict.fired, verdict.policy, verdict.support]


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # it ended before we noticed
            proc.kill()


READ_SIZE = 1 << 20


def _read_available(fd: int, into: bytearray) -> bool:
    """Append what can be read from `fd` now; False at its end."""
    while True:
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        into += chunk


def _take_frame(unread: bytearray) -> bytes | None:
    """The first whole frame of `unread`, taken off it; None while there is none."""
    if len(unread) < HEADER:
        return None
    end = HEADER + int.from_bytes(unread[:HEADER], "big")
    if len(unread) < end:
        return None
    frame = bytes(unread[HEADER:end])
    del unread[:end]
    return frame


async def _first_frame(fd: int) -> bytes:
    """The child's first frame (it says it is ready), waited for on the loop."""
    unread = bytearray()
    while (frame := _take_frame(unread)) is None:
        await _readable(fd)
        if not _read_available(fd, unread):
            raise ConnectionError("the scan process ended before it was ready")
    return frame


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await readable
    finally:
        loop.remove_reader(fd)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        _kill(proc)
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
    if scanner.rules.error is not None:
        # The server keeps the last rules that parsed; a new child would start with none.
        print("keyhold: the scan process does not start while safety-rules.toml does not parse", file=sys.stderr)
        return
    _write_frame(frames_out, READY)
    print(READY_NOTICE.format(pid=os.getpid()), file=sys.stderr, flush=True)
    while (header := _read_exactly(frames_in, HEADER)) is not None:
        payload = _read_exactly(frames_in, int.from_bytes(header, "big"))
        if payload is None:
            return
        verdicts: list[list[Any] | None] = []
        for request in orjson.loads(payload):
            try:
                verdict = scanner.scan_local(*asked(request))
            except Exception as exc:  # this text only: the server scans it (and answers for it)
                print(f"keyhold: scanning a message failed: {type(exc).__name__}", file=sys.stderr)
                verdicts.append([])
                continue
            full = request[0]
            verdicts.append(None if verdict.nothing_to_note and not full else _fields(verdict))
        _write_frame(frames_out, orjson.dumps(verdicts))


def _as_batch_work() -> None:
    """Linux's SCHED_BATCH: woken by a batch, the child does not preempt the server's threads
    (the event loop, the database writer) where it lands, it waits for its turn. Measured: with
    the normal policy, each batch woke the child onto the loop's CPU and the server's CPU per
    message rose by 10 to 15 µs (docs/benchmarks.md). Elsewhere: the normal policy."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m keyhold.safety.scan_process HOME", file=sys.stderr)
        return 2
    _as_batch_work()
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, never into the frames
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        serve(Path(argv[0]), sys.stdin.buffer, frames_out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
