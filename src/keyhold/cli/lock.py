"""One process writes a data dir's events and access log: the server, or a CLI command that
appends them (demo seed, legal export, keys shred). The server holds an advisory lock on
`<home>/server.lock` while it runs; those commands refuse to start while it is held."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class DataDirBusy(Exception):
    pass


def acquire(home: Path, purpose: str) -> IO[str]:
    """Take the lock for this process's lifetime (keep the returned file open)."""
    home.mkdir(parents=True, exist_ok=True)
    handle = (home / "server.lock").open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DataDirBusy(
            f"{home} is in use by {holder}; stop it first (or do this through the API)"
        ) from exc
    handle.seek(0)
    handle.truncate()
    handle.write(f"{purpose} (pid {os.getpid()})")
    handle.flush()
    return handle
