"""`keyhold bench access` runs end to end and reports sane, self-consistent figures."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import keyhold_cli


def test_bench_access_reports_the_cost_of_governed_reads(tmp_path: Path) -> None:
    out = tmp_path / "access.json"
    result = keyhold_cli(
        "bench", "access", "--reads", "20", "--messages", "30", "--batch", "5", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert figures["reads"] == 20 and figures["batch"] == 5
    assert 0 < figures["staff_read_p50_ms"] <= figures["staff_read_p99_ms"]
    assert 0 < figures["member_read_p50_ms"] <= figures["member_read_p99_ms"]
    assert figures["staff_reads_per_second"] > 0
    # Every staff read appended one content_accessed entry plus a notification entry (and the
    # case opening and approval came first): the log proves the reads happened.
    assert figures["log_entries"] >= 2 * (20 + 20) + 2
