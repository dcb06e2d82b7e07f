"""Run a Keyhold process (server or CLI command) with its clock shifted: a `sitecustomize`
module on its PYTHONPATH moves `time.time` and `time.time_ns` in that process only."""

from __future__ import annotations

import os
from pathlib import Path

SITECUSTOMIZE = """
import os
import time

_shift_ms = int(os.environ.get("KEYHOLD_TEST_CLOCK_SHIFT_MS") or 0)
if _shift_ms:
    _time_ns, _time = time.time_ns, time.time
    time.time_ns = lambda: _time_ns() + _shift_ms * 1_000_000
    time.time = lambda: _time() + _shift_ms / 1000
"""


def shifted_env(shim_dir: Path, shift_s: float) -> dict[str, str]:
    """Environment for a process whose clock runs `shift_s` seconds ahead (or behind, < 0);
    the shim is written into `shim_dir`."""
    shim_dir.mkdir(parents=True, exist_ok=True)
    (shim_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(shim_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "KEYHOLD_TEST_CLOCK_SHIFT_MS": str(int(shift_s * 1000))}
