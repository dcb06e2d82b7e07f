"""The scanning pipeline for `standard` text, and its in-memory twins for tests.

`build_scanner(home)` is what the send path calls once at start-up: the operator's rules
(`<home>/safety-rules.toml`, re-read when it changes), the built-in offline scanner, and,
when `http_url` is set, the operator's classification service. The message is normalized
once for the rules and the built-in scanner; the most severe verdict wins (`most_severe`),
with every category's highest score and every fired rule or signal kept. The HTTP service is
asked last, and not at all when the local scanners already block.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from keyhold.safety.behaviour import SendTracker
from keyhold.safety.builtin_scanner import BuiltinScanner
from keyhold.safety.http_scanner import DEFAULT_TIMEOUT, HttpScanner
from keyhold.safety.normalize import normalize
from keyhold.safety.rules import RULES_FILE, Rules, RulesScanner
from keyhold.safety.scanning import ALLOW, ScanContext, Verdict, most_severe


class PipelineScanner:
    def __init__(self, rules: RulesScanner, builtin: BuiltinScanner, http: HttpScanner | None = None) -> None:
        self.rules = rules
        self.builtin = builtin
        self.http = http
        self._vocabulary_of: tuple[Rules, frozenset[str]] | None = None

    def _vocabulary(self, rules: Rules) -> frozenset[str]:
        if self._vocabulary_of is None or self._vocabulary_of[0] is not rules:
            self._vocabulary_of = (rules, self.builtin.vocabulary | rules.vocabulary)
        return self._vocabulary_of[1]

    def scan_local(self, text: str, context: ScanContext) -> Verdict:
        """Rules and the built-in scanner (no waiting): what `scan` does without the service."""
        rules = self.rules.current()
        norm = normalize(text, self._vocabulary(rules))
        # The built-in verdict first: of equal actions the first is kept, and it carries the
        # self-harm category of an `allow` with support.
        verdicts = [self.builtin.scan_now(text, context, norm)]
        if rules.rules:
            verdicts.append(rules.scan(text, norm))
        return most_severe(verdicts)

    async def scan(self, text: str, context: ScanContext) -> Verdict:
        local = self.scan_local(text, context)
        if self.http is None or local.action == "block":
            return local
        return most_severe([local, await self.http.scan(text, context)])

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()


def build_scanner(
    home: Path,
    http_url: str | None = None,
    *,
    http_timeout: float = DEFAULT_TIMEOUT,
    fail_open: bool = True,
    tracker: SendTracker | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PipelineScanner:
    """The scanner for `standard` messages of the data dir `home` (see the module's doc)."""
    http = HttpScanner(http_url, timeout=http_timeout, fail_open=fail_open) if http_url else None
    return PipelineScanner(RulesScanner(home / RULES_FILE, clock=clock), BuiltinScanner(tracker), http)


class StaticScanner:
    """A scanner that answers `verdict` to everything (tests of the send path)."""

    def __init__(self, verdict: Verdict = ALLOW) -> None:
        self.verdict = verdict
        self.calls: list[tuple[str, ScanContext]] = []

    async def scan(self, text: str, context: ScanContext) -> Verdict:
        self.calls.append((text, context))
        return self.verdict


class MemoryScanner:
    """A scanner that answers from a mapping of exact texts to verdicts, `default` otherwise,
    and remembers what it was asked (a test can check that `e2ee` text never reached it)."""

    def __init__(self, verdicts: Mapping[str, Verdict], default: Verdict = ALLOW) -> None:
        self.verdicts = dict(verdicts)
        self.default = default
        self.calls: list[tuple[str, ScanContext]] = []

    async def scan(self, text: str, context: ScanContext) -> Verdict:
        self.calls.append((text, context))
        return self.verdicts.get(text, self.default)
