"""`keyhold.bench.procs.cpu_parts`: a server's CPU split into its loop thread, its other
threads and its children (the compare bench reports where scanning's cost lands)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from keyhold.bench.procs import cpu_parts, tree_cpu_s

BURN_S = 0.4


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_cpu_parts_puts_a_thread_and_a_child_where_they_ran() -> None:
    before = cpu_parts(os.getpid())
    assert before is not None
    # A child that burns CPU, then stays alive (a dead child's CPU is no longer in /proc).
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nend = time.process_time() + float(sys.argv[1])\n"
         "while time.process_time() < end: pass\nprint('done', flush=True)\ntime.sleep(60)",
         str(BURN_S)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        worker = threading.Thread(target=_burn, args=(BURN_S,))
        worker.start()
        worker.join()
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        after = cpu_parts(os.getpid())
        total = tree_cpu_s(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert after is not None and total is not None
    spent = after - before
    # The clock ticks in hundredths of a second: a margin of a few ticks.
    assert spent.other_threads >= BURN_S - 0.05
    assert spent.children >= BURN_S - 0.05
    assert spent.loop_thread < BURN_S / 2  # this thread only waited
    assert total >= after.total - 0.01


def test_cpu_parts_of_no_process_is_none() -> None:
    assert cpu_parts(None) is None
    assert cpu_parts(2**22 + 12345) is None  # above Linux's largest pid
