"""An operator's file that a running server re-reads when it changes, keeping the last good one.

Safety files (policy, rules, hash lists) are edited while the server runs. `ReloadingFile`
checks the file's stamp (modification time and size) at most once a second, parses it again
only when the stamp changed, and keeps the last value that parsed while a broken edit is in
place, so a typo never switches safety off. Files a value refers to (a hash list's `file =`)
can be watched too: a change to any of them reloads the whole.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Generic, TypeVar

log = logging.getLogger("keyhold.safety.reloading")

T = TypeVar("T")
RELOAD_CHECK_SECONDS = 1.0
Stamp = tuple[tuple[str, int, int] | tuple[str], ...]


def read_text(path: Path, error: type[Exception]) -> str | None:
    """An operator's file as text; None if it does not exist (the defaults apply)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise error("not UTF-8 text") from None


def toml_tables(text: str, error: type[Exception], known: tuple[str, ...], unknown_is: str) -> dict[str, Any]:
    """The TOML document in `text`, refused naming the problem if it does not parse or has a
    top-level key other than `known` (`unknown_is`: the refusal, `{name}` standing for the key)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"not TOML: {exc}") from None
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise error(unknown_is.format(name=repr(unknown[0])))
    return data


def _stamp_of(paths: Iterable[Path]) -> Stamp:
    stamps: list[tuple[str, int, int] | tuple[str]] = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            stamps.append((str(path),))  # missing (or unreadable) is a state of its own
        else:
            stamps.append((str(path), info.st_mtime_ns, info.st_size))
    return tuple(stamps)


def _watch_nothing(value: object) -> tuple[Path, ...]:
    return ()


class ReloadingFile(Generic[T]):
    """The value parsed from `path` by `load`, re-read when the file (or a file the value
    refers to, from `also_watch`) changes. `load` raises one of `errors` for a file that does
    not parse; the previous value stays in force and `error` says why."""

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], T],
        default: T,
        *,
        errors: tuple[type[Exception], ...] = (ValueError,),
        also_watch: Callable[[T], Iterable[Path]] = _watch_nothing,
        clock: Callable[[], float] = time.monotonic,
        check_seconds: float = RELOAD_CHECK_SECONDS,
    ) -> None:
        self.path = path
        self._load = load
        self._errors = errors
        self._also_watch = also_watch
        self._clock = clock
        self._check_seconds = check_seconds
        # Requests on several threads may ask at once: one of them reloads, the others wait
        # for it rather than parsing the same file in parallel.
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._watched: tuple[Path, ...] = (path,)
        self._stamp: Stamp | None = None
        # Until a version parses, `default` is in force (and `error` says why the file was refused).
        self.value = default
        self.error: str | None = None
        self.current()

    def current(self) -> T:
        with self._lock:
            now = self._clock()
            if now - self._checked < self._check_seconds:
                return self.value
            self._checked = now
            # Stamped before reading: an edit made while we parse shows as a change next time.
            stamp = _stamp_of(self._watched)
            if stamp == self._stamp:
                return self.value
            self._stamp = stamp
            try:
                value = self._load(self.path)
            except self._errors as exc:
                self.error = str(exc)
                log.warning("%s does not parse; the previous version stays in force: %s", self.path, exc)
                return self.value
            self.value, self.error = value, None
            watched = (self.path, *self._also_watch(value))
            if watched != self._watched:
                # Files the new version refers to were read just now; stamping them after the
                # read leaves a window of one parse in which an edit to them goes unnoticed.
                self._watched = watched
                self._stamp = _stamp_of(watched)
            return self.value
