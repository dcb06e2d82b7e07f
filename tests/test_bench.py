"""`keyhold bench delivery`: a small run end to end (own server, then the bare relay).

No timing thresholds: the figures depend on the machine. The run must be complete and
self-consistent: every message acknowledged and delivered exactly once, sane numbers.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REQUIRED = (
    "messages_per_second",
    "delivery_p50_ms",
    "delivery_p95_ms",
    "delivery_p99_ms",
    "server_rss_mb",
    "baseline_messages_per_second",
    "ratio_to_baseline",
)


def run_bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "keyhold", "bench", "delivery", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc, json.loads(out.read_text())


def test_delivery_with_relay_baseline(tmp_path: Path) -> None:
    proc, report = run_bench(tmp_path, "--clients", "4", "--messages", "200", "--baseline", "relay")
    for key in REQUIRED:
        assert key in report, key
        value = report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)
    assert report["delivery_p50_ms"] <= report["delivery_p95_ms"] <= report["delivery_p99_ms"]  # type: ignore[operator]
    ratio = report["messages_per_second"] / report["baseline_messages_per_second"]  # type: ignore[operator]
    assert report["ratio_to_baseline"] == pytest.approx(ratio, rel=1e-3)
    assert report["server_rss_mb"] < 4096  # type: ignore[operator]
    assert report["sent"] == report["acked"] == report["delivered"] == 200
    assert report["lost"] == report["duplicates"] == report["errors"] == report["seq_errors"] == 0
    baseline = report["baseline"]
    assert isinstance(baseline, dict)
    assert baseline["delivered"] == 200
    assert baseline["lost"] == baseline["duplicates"] == baseline["errors"] == 0
    assert "Keyhold / relay throughput" in proc.stdout


def test_paced_delivery_without_baseline(tmp_path: Path) -> None:
    """`--rate` paces the offered load; without a baseline its keys are null."""
    _proc, report = run_bench(
        tmp_path, "--clients", "2", "--messages", "50", "--rate", "500", "--transport", "asyncio"
    )
    assert report["delivered"] == 50 and report["lost"] == 0 and report["duplicates"] == 0
    assert report["baseline_messages_per_second"] is None and report["ratio_to_baseline"] is None
    assert 0 < report["delivery_p50_ms"] <= report["delivery_p99_ms"]  # type: ignore[operator]
    # 50 messages at 500/s take about 0.1 s: the pacing held the sends back.
    assert report["duration_s"] >= 0.09  # type: ignore[operator]


def test_refuses_an_odd_number_of_clients(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "keyhold", "bench", "delivery", "--clients", "3", "--messages", "10"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "even number" in proc.stderr


def run_connections(tmp_path: Path, *args: str, **popen: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyhold", "bench", "connections", *args, "--json", str(tmp_path / "c.json")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "120"},
        **popen,
    )


def test_idle_connections_held_with_heartbeats_and_a_trickle(tmp_path: Path) -> None:
    """`keyhold bench connections` at a small scale: every connection stays up through the
    hold, every heartbeat is answered, every trickle message is delivered once."""
    proc = run_connections(
        tmp_path, "--idle", "40", "--hold", "2", "--heartbeat", "0.5", "--trickle", "10", "--trickle-pairs", "3"
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["idle_connections"] == 40 and report["trickle_pairs"] == 3
    assert report["trickle_messages"] == 20
    assert report["sent"] == report["acked"] == report["delivered"] == 20
    assert report["dropped"] == report["errors"] == report["lost"] == report["duplicates"] == 0
    # 40 clients pinging every 0.5 s for about 2 s: each was answered several times.
    assert report["pongs"] >= 2 * 40, report["pongs"]
    assert 0 < report["delivery_p50_ms"] <= report["delivery_p95_ms"] <= report["delivery_p99_ms"]
    assert 0 < report["server_rss_before_mb"] <= report["server_rss_peak_mb"]
    assert report["server_rss_mb"] > 0 and report["rss_target_met"] is True
    assert "idle connections held" in proc.stdout


def test_connections_refused_above_the_open_files_limit(tmp_path: Path) -> None:
    """With a hard limit too low for the sockets asked for, the bench says so before starting
    anything (rather than failing half-way with EMFILE)."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    proc = run_connections(tmp_path, "--idle", "2000", preexec_fn=low_limit)
    assert proc.returncode == 2
    assert "open files" in proc.stderr and "2,000 connections" in proc.stderr
    assert not (tmp_path / "c.json").exists()


def test_delivery_in_both_models(tmp_path: Path) -> None:
    """`--encryption both`: the same load on standard then e2ee conversations (texts Megolm-
    encrypted and decrypted by the load generator), and the e2ee costs beside it."""
    proc, report = run_bench(tmp_path, "--clients", "4", "--messages", "200", "--encryption", "both")
    assert report["encryption"] == "standard" and report["delivered"] == 200
    e2ee = report["e2ee"]
    assert isinstance(e2ee, dict)
    assert e2ee["delivered"] == 200 and e2ee["lost"] == e2ee["duplicates"] == e2ee["errors"] == 0
    assert e2ee["messages_per_second"] > 0 and e2ee["delivery_p99_ms"] > 0
    costs = report["e2ee_costs"]
    assert isinstance(costs, dict) and costs["olm_session_setups_per_second"] > 0
    group = costs["group_of_50"]
    assert group["group_size"] == 50 and group["e2ee"]["send_ms_mean"] > 0 and group["standard"]["send_ms_mean"] > 0
    assert "Olm session setups" in proc.stdout


def test_scanning_compare_alternates_rounds_between_two_servers(tmp_path: Path) -> None:
    """`--scanning compare`: every message to each server delivered once, over alternating
    rounds; the mode's figures are its rounds' sums, the ratio is of those figures."""
    out = tmp_path / "cmp.json"
    proc = subprocess.run(
        [sys.executable, "-m", "keyhold", "bench", "delivery", "--scanning", "compare", "--clients", "2",
         "--messages", "60", "--rounds", "3", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "120", "KEYHOLD_SCANNING_PROCESS": "on"},
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(out.read_text())
    assert report["rounds"] == 3 and report["scan_process"] is True
    for mode in ("scanning_off", "scanning_on"):
        figures = report[mode]
        assert figures["delivered"] == 60 and figures["lost"] == figures["duplicates"] == figures["errors"] == 0
        assert [r["messages"] for r in figures["rounds"]] == [20, 20, 20]
        # Each round timed on its own messages, not on replays of earlier rounds (seconds old).
        assert all(r["delivery_p99_ms"] < 1_000 for r in figures["rounds"])
        parts = figures["server_cpu_us_per_message_by_part"]
        assert set(parts) == {"loop_thread", "other_threads", "scan_process"}
        assert parts["loop_thread"] > 0 and all(v >= 0 for v in parts.values())
    # Only the server with scanning on has a scan process.
    assert report["scanning_off"]["server_cpu_us_per_message_by_part"]["scan_process"] == 0
    ratio = report["scanning_on"]["messages_per_second"] / report["scanning_off"]["messages_per_second"]
    assert report["throughput_on_over_off"] == pytest.approx(ratio, rel=1e-3)
    assert len(report["round_ratios"]) == 3
    # Run in the order off-on, on-off, off-on (the labels on stderr).
    labels = [line.split(" acked")[0].split()[-2:] for line in proc.stderr.splitlines() if " acked " in line]
    assert [mode for mode, _round in labels] == ["off", "on", "on", "off", "off", "on"]


def test_scanning_compare_refuses_rounds_with_no_message_for_a_client(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "keyhold", "bench", "delivery", "--scanning", "compare", "--clients", "4",
         "--messages", "10", "--rounds", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "at least one message per client in each round" in proc.stderr
