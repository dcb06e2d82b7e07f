"""The scan in a child process (`keyhold.safety.scan_process`), with real child processes:
the same answers as the in-process scanner, in the order asked; a child that goes away answers
what it had not with GONE (its callers scan in-process), and a new one starts only after the
pause. The server-side fallback is in test_safety_verdicts.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from keyhold.config import load_settings
from keyhold.core.screening import TextToScreen
from keyhold.safety.pipeline import build_scanner
from keyhold.safety.scan_process import BATCH_MOST, GONE, RESTART_SECONDS, Answer, ScanProcess
from keyhold.safety.scanning import ScanContext, Verdict
from keyhold.safety.screening import SafetyScreen

DATA = Path(__file__).parent / "data" / "safety"
RULES = """
[[rule]]
name = "test-block"
category = "violent_threat"
action = "block"
terms = ["quokkablast"]
"""
CONTEXTS = (
    ScanContext(),
    ScanContext(sender_id=3, conversation_id=9, recipient_ids=(4,)),
    ScanContext(
        sender_id=5, conversation_id=1, recipient_ids=(6, 7), recipient_minor=True,
        sender_adult_non_friend=True, sender_account_age_days=1.5,
    ),
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def started(process: ScanProcess) -> None:
    assert process.scan("hello", ScanContext(), lambda _: None) is False  # none yet: one starts
    await until(lambda: process.running)


@contextlib.asynccontextmanager
async def running(home: Path, **options: Any) -> AsyncIterator[ScanProcess]:
    """A scan process with its child started; closed (the child stopped) afterwards."""
    process = ScanProcess(home, **options)
    try:
        await started(process)
        yield process
    finally:
        await process.aclose()


def texts() -> list[str]:
    lines = (DATA / "dev.jsonl").read_text(encoding="utf-8").splitlines()
    picked = [json.loads(line)["text"] for line in lines[:240]]
    # Repeats to new conversations (the spam tracker), and the operator's term.
    return picked + ["same words to everyone here"] * 4 + ["you will get a quokkablast"]


def children() -> list[int]:
    """This test process's scan children."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] if entry.name.isdigit() else ""
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if ppid == str(os.getpid()) and b"keyhold.safety.scan_process" in command:
            found.append(int(entry.name))
    return found


async def test_the_child_answers_as_the_in_process_scanner_in_the_order_asked(tmp_path: Path) -> None:
    (tmp_path / "safety-rules.toml").write_text(RULES)
    async with running(tmp_path) as process:
        process.start_soon()  # one runs: no second
        await asyncio.sleep(0.3)
        assert children() == [process.pid]
        asked = [(text, CONTEXTS[i % 3]) for i, text in enumerate(texts())]
        got: list[Answer] = []
        for i, (text, context) in enumerate(asked):
            assert process.scan(text, context, got.append)
            if i % 50 == 0:
                await asyncio.sleep(0)  # several batches, not one
        await until(lambda: len(got) == len(asked))
    local = build_scanner(tmp_path)
    expected = []
    for text, context in asked:
        verdict = local.scan_local(text, context)
        expected.append(None if verdict.action == "allow" and not verdict.support else verdict)
    assert got == expected
    assert sum(answer is not None for answer in got) > 20  # verdicts other than allow came back
    assert got[-1] is not None and got[-1].fired == ("rule:test-block",)  # type: ignore[union-attr]


async def test_a_child_that_goes_away_answers_gone_and_another_starts_after_the_pause(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock=clock) as process:
        pid = process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        got: list[Answer] = []
        for text in ("one", "two", "three"):
            process.scan(text, CONTEXTS[1], got.append)
        await until(lambda: not process.running)
        await until(lambda: len(got) == 3)
        assert got == [GONE, GONE, GONE]  # nothing waits forever: the callers scan in-process
        assert process.scan("four", CONTEXTS[1], got.append) is False
        await asyncio.sleep(0.5)
        assert not process.running and process.pid is None  # no restart within the pause
        clock.now += RESTART_SECONDS
        await started(process)
        assert process.pid not in (None, pid)
        assert process.scan("five", CONTEXTS[1], got.append)
        await until(lambda: len(got) == 4)
        assert got[3] is None
    assert process.pid is None and children() == []


def test_the_setting_says_where_the_scan_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(tmp_path, scanning_process="on").uses_scan_process
    assert not load_settings(tmp_path, scanning_process="off").uses_scan_process
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0})
    assert not load_settings(tmp_path).uses_scan_process  # auto: not on one CPU
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2, 3})
    assert load_settings(tmp_path).uses_scan_process
    with pytest.raises(ValueError, match="scanning_process must be auto, on or off"):
        load_settings(tmp_path, scanning_process="maybe")


def test_a_one_shot_command_scans_in_process_and_starts_no_child(tmp_path: Path) -> None:
    """With the scan process on, a server starts a scan child; a CLI command on the same
    settings (`with_service`: `demo seed`, `keys status`...) scans in-process and starts none."""
    from keyhold.app import Keyhold, initialize, start_keyhold
    from keyhold.cli.common import with_service

    settings = load_settings(tmp_path / "kh", scanning_process="on")
    initialize(settings, False, None)

    async def first_child(_svc: Keyhold, within: float) -> tuple[list[int], float]:
        started = time.monotonic()
        while not children() and time.monotonic() - started < within:
            await asyncio.sleep(0.02)
        return children(), time.monotonic() - started

    async def as_a_server() -> tuple[list[int], float]:
        svc = await start_keyhold(settings)
        try:
            return await first_child(svc, 10.0)
        finally:
            await svc.stop()

    spawned, after = asyncio.run(as_a_server())
    assert spawned, "a server with scanning_process = on starts a scan child"
    # Three times as long as the server's child took to appear.
    none, _ = with_service(settings, lambda svc: first_child(svc, max(0.5, 3 * after)))
    assert none == []


async def test_a_stuck_child_is_killed_and_its_sends_answered_gone(tmp_path: Path) -> None:
    async with running(tmp_path, answer_timeout=0.5) as process:
        pid = process.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # alive, answering nothing
        got: list[Answer] = []
        assert process.scan("are you there", CONTEXTS[1], got.append)
        await until(lambda: len(got) == 1, 10)
        assert got == [GONE] and not process.running
        await until(lambda: pid not in children(), 10)  # killed, not left behind


async def test_no_child_starts_while_the_rules_file_does_not_parse(tmp_path: Path) -> None:
    """A new child would start with no rules, where the server keeps the last ones that parsed."""
    (tmp_path / "safety-rules.toml").write_text("[[rule]]\nname = 'broken'\n")
    process = ScanProcess(tmp_path)
    try:
        assert process.scan("hello", ScanContext(), lambda _: None) is False
        await until(lambda: process._starting is None, 60)
        assert not process.running and children() == []
        assert process.scan("hello", ScanContext(), lambda _: None) is False  # and not again at once
        await asyncio.sleep(0.3)
        assert children() == []
    finally:
        await process.aclose()


async def test_a_full_answer_keeps_the_scores_of_an_allowed_message(tmp_path: Path) -> None:
    """What a send with an attachment records with the file's verdict (the waiting path)."""
    async with running(tmp_path) as process:
        got: list[Answer] = []
        assert process.scan("see you at the game tonight", CONTEXTS[1], got.append, full=True)
        assert process.scan("see you at the game tonight", CONTEXTS[1], got.append)
        await until(lambda: len(got) == 2)
    full, short = got
    assert isinstance(full, Verdict) and full.action == "allow" and set(full.scores) >= {"spam", "hate"}
    assert short is None


async def test_the_child_runs_as_batch_work(tmp_path: Path) -> None:
    """SCHED_BATCH: woken by a batch, it does not preempt the server's threads."""
    async with running(tmp_path) as process:
        assert process.pid is not None
        assert os.sched_getscheduler(process.pid) == os.SCHED_BATCH


async def test_answers_already_back_are_taken_when_the_next_batch_is_sent(tmp_path: Path) -> None:
    """Not only on the loop's next turn: a turn under load lasts milliseconds, every ack waits."""
    async with running(tmp_path) as process:
        got: list[Answer] = []
        assert process.scan("first batch", CONTEXTS[1], got.append)
        process._flush()
        # The loop does not run meanwhile: the answer can only be taken by the next batch.
        assert process._answers_fd is not None
        deadline = time.monotonic() + 30
        while not select.select([process._answers_fd], [], [], 0.05)[0]:
            assert time.monotonic() < deadline, "the child did not answer"
        assert got == []
        for i in range(BATCH_MOST):
            assert process.scan(f"second batch {i}", CONTEXTS[1], got.append)
        assert got == [None]  # taken as the full second batch was sent, before any await
        await until(lambda: len(got) == 1 + BATCH_MOST)


async def test_an_answer_for_a_request_that_stopped_waiting_is_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A REST send whose client left (its handler cancelled) while the child scanned its text:
    the late answer is dropped quietly, not logged as a failure (one log line per such request
    would let anyone fill the server's log)."""
    async with running(tmp_path) as process:
        local = build_scanner(tmp_path)
        screen = SafetyScreen(None, local, None, None, local.scan_local, process)  # type: ignore[arg-type]
        context = CONTEXTS[1]
        screen._audiences._known[(context.sender_id, context.conversation_id)] = (time.monotonic() + 600, context)
        waiting = asyncio.ensure_future(screen.text(TextToScreen(context.sender_id, context.conversation_id, "hi")))
        await asyncio.sleep(0)
        assert len(process._batch) == 1  # queued for the child, not sent yet
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        caplog.clear()
        await until(lambda: process._sent == 1 and not process._in_flight, 30)  # sent, answered
        await asyncio.sleep(0.05)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
