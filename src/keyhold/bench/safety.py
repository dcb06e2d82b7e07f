"""`keyhold bench safety`: what the scanning pipeline adds to each `standard` text message.

Scans N messages through the pipeline a server builds (`build_scanner`: the rules file of a
throwaway data dir with a few rules of each kind, and the built-in scanner), one at a time
through `await scanner.scan(...)` as the send path does, from 50 senders into 200
conversations (so the behaviour tracker works as under load). The messages cycle through
`tests/data/safety/dev.jsonl` when the checkout has it, else through generated ones. Prints
JSON: wall-clock microseconds per message (mean, p50, p99, max) and the CPU time of the same
calls (this process only: what the scanner costs, whatever else the machine runs).
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

DEV_FILE = Path(__file__).resolve().parents[3] / "tests" / "data" / "safety" / "dev.jsonl"
RULES = """
[[rule]]
name = "bench-domains"
category = "scam"
action = "block"
domains = ["bench-bad.example", "phish.test"]

[[rule]]
name = "bench-terms"
category = "spam"
action = "flag"
terms = ["casino bonus", "free spins", "cheap watches"]

[[rule]]
name = "bench-cards"
category = "scam"
action = "hold"
regex = '\\b(?:\\d[ -]?){15}\\d\\b'
"""
GENERATED = [
    "hey are we still on for lunch tomorrow?",
    "running 10 min late, sorry!!",
    "can you send me the notes from today's lecture",
    "i'll k1ll you if you tell anyone",
    "congrats!! 🎉 see you at the party at 8",
    "your account has been suspended, verify at secure-bank-verify.example now",
    "b u y   c h e a p   f o l l o w e r s at followz.example",
    "i want to end it all",
    "the meeting got moved to 3pm, bring the q3 numbers",
    "lol you're such a menace 😂",
]


def _messages() -> tuple[list[str], str]:
    if DEV_FILE.exists():
        texts = [
            json.loads(line)["text"]
            for line in DEV_FILE.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        return texts, str(DEV_FILE.name)
    return GENERATED, "generated"


def _micros(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "mean": round(statistics.fmean(ordered) * 1e6, 1),
        "p50": round(ordered[len(ordered) // 2] * 1e6, 1),
        "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e6, 1),
        "max": round(ordered[-1] * 1e6, 1),
    }


async def run_safety_bench(count: int, home: Path) -> dict[str, Any]:
    from keyhold.safety.pipeline import build_scanner
    from keyhold.safety.scanning import ScanContext

    started = time.perf_counter()
    scanner = build_scanner(home)
    build_seconds = time.perf_counter() - started
    texts, source = _messages()
    rng = random.Random(7)
    contexts = [
        ScanContext(
            sender_id=1 + i % 50, conversation_id=1 + rng.randrange(200), sender_account_age_days=30.0
        )
        for i in range(count)
    ]
    # One pass over the texts first: the first message a phrase is a candidate for compiles its
    # regex, and each word's reading is cached. That one-time cost is `warm_ms`, not the figures.
    started = time.perf_counter()
    for text in texts:
        await scanner.scan(text, ScanContext())
    warm_seconds = time.perf_counter() - started
    wall: list[float] = []
    cpu: list[float] = []
    actions: dict[str, int] = {}
    for i in range(count):
        text = texts[i % len(texts)]
        cpu_start, wall_start = time.thread_time(), time.perf_counter()
        verdict = await scanner.scan(text, contexts[i])
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.thread_time() - cpu_start)
        actions[verdict.action] = actions.get(verdict.action, 0) + 1
    await scanner.aclose()
    return {
        "messages": count,
        "source": source,
        "distinct_texts": len(texts),
        "build_ms": round(build_seconds * 1000, 1),
        "warm_ms": round(warm_seconds * 1000, 1),
        "wall_us": _micros(wall),
        "cpu_us": _micros(cpu),
        "actions": actions,
        "gc_collections": sum(stat["collections"] for stat in gc.get_stats()),
    }


def safety(
    messages: Annotated[int, typer.Option(min=100, help="Messages to scan.")] = 20_000,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures as JSON here.")
    ] = None,
) -> None:
    """Microseconds the scanning pipeline (rules + built-in scanner) adds per text message."""
    with tempfile.TemporaryDirectory(prefix="keyhold-bench-safety-") as tmp:
        home = Path(tmp)
        (home / "safety-rules.toml").write_text(RULES, encoding="utf-8")
        figures = asyncio.run(run_safety_bench(messages, home))
    text = json.dumps(figures, indent=2)
    sys.stdout.write(text + "\n")
    if json_out is not None:
        json_out.write_text(text + "\n", encoding="utf-8")
