"""Process and machine probes for the benchmarks: free ports, waiting for a server, RSS and
CPU of a process, the machine and the git commit a figure belongs to."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

API = "/api/v1"

# -- processes: server, relay, workers ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status_mb(pid: int, field_name: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return None if fields is None else _cpu_s(fields)


def _stat_fields(stat: Path) -> list[str] | None:
    """The fields of a /proc `stat` file (a process's or a thread's) after its name: [0] is
    the state, [1] the parent's pid, [11] and [12] the user and system CPU in clock ticks."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields if len(fields) > 12 else None


def _cpu_s(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuParts:
    """A server's CPU seconds so far, by where they went: its main thread (the event loop), its
    other threads (the database writer, password hashing) and its live children (the scan
    process)."""

    loop_thread: float
    other_threads: float
    children: float

    @property
    def total(self) -> float:
        return self.loop_thread + self.other_threads + self.children

    def __sub__(self, earlier: CpuParts) -> CpuParts:
        return CpuParts(
            self.loop_thread - earlier.loop_thread,
            self.other_threads - earlier.other_threads,
            self.children - earlier.children,
        )


def cpu_parts(pid: int | None) -> CpuParts | None:
    """`pid`'s CPU by part (`CpuParts`); None when it is not running."""
    own = proc_cpu_s(pid)
    if own is None:
        return None
    loop = _stat_fields(Path(f"/proc/{pid}/task/{pid}/stat"))
    if loop is None:  # ended meanwhile
        return None
    children = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(entry / "stat")) is not None and fields[1] == str(pid):
            children += _cpu_s(fields)
    return CpuParts(_cpu_s(loop), max(0.0, own - _cpu_s(loop)), children)


def tree_cpu_s(pid: int | None) -> float | None:
    """CPU seconds of `pid` and of its live children (a server's scan process is its work too)."""
    parts = cpu_parts(pid)
    return None if parts is None else parts.total


def machine_busy_s() -> float:
    """CPU seconds spent by the whole machine (all cores) on anything but idling."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class _Snapshot:
    wall: float
    server_cpu: float | None
    server_rss_mb: float | None
    machine_busy: float

    @classmethod
    def take(cls, pid: int | None) -> _Snapshot:
        return cls(
            time.monotonic(),
            tree_cpu_s(pid),
            proc_status_mb(pid, "VmRSS") if pid is not None else None,
            machine_busy_s(),
        )


def _wait_http(url: str, process: subprocess.Popen[bytes] | None, log: Path | None, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"the server exited early:\n{tail}")
        try:
            if httpx.get(url + API + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the server at {url} did not answer /health within {timeout:.0f}s")


def _wait_tcp(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the relay exited early")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError("the relay did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class OwnServer:
    """A throwaway `keyhold serve` for one benchmark: SQLite on disk, a free loopback port, its
    output in a log file beside the data dir. The data dir is a temp dir (removed on stop)
    unless `home` names one (kept)."""

    def __init__(self, home: Path | None, env: Mapping[str, str]) -> None:
        self._temp_dir = None if home is not None else tempfile.mkdtemp(prefix="keyhold-bench-")
        self.data_dir = home.resolve() if home is not None else Path(self._temp_dir or ".") / "home"
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-bench-server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = dict(env)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "keyhold",
            "serve",
            "--home",
            str(self.data_dir),
            "--port",
            str(self.port),
        ]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self._env)
        _wait_http(self.url, self._process, self.log_path, 90)

    def stop(self) -> None:
        """Stop the server (the data dir stays until `close`)."""
        if self._process is not None:
            _stop(self._process)
            self._process = None

    def close(self) -> None:
        self.stop()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> OwnServer:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


def raise_open_files_limit(needed: int) -> int:
    """Raise this process's soft limit on open files (children inherit it) to at least
    `needed`, up to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed if soft == resource.RLIM_INFINITY else soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _default_workers() -> int:
    # The server needs a core of its own; more generator processes than the spare cores only
    # fight it for CPU.
    return max(1, min(4, (os.cpu_count() or 2) - 1))
