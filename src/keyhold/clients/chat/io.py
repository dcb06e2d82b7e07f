"""The chat's terminal: whole lines out (`Screen`), whole lines in (`Lines`), from a terminal
with readline editing or from a pipe.

It reads one line at a time, so it works in a plain terminal, in tmux, and driven by a pipe.
Input is read on a thread; the event loop meanwhile prints new messages as they arrive. In a
terminal, a live message erases the half-typed line, prints itself, then redraws the prompt and
what was typed (GNU readline keeps the buffer), so typing is not lost.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from rich.text import Text

from keyhold.clients.terminal import console

try:  # GNU readline: line editing and history at the prompt, when available
    import readline as _readline
except ImportError:  # pragma: no cover - readline is part of CPython on Debian
    _readline = None  # type: ignore[assignment]

Part = str | tuple[str, str]

# Bidirectional controls: they reorder what follows them on the line (a name that reads
# "gnp.exe" shown as "exe.png"), so they are shown by name instead.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_VISIBLE = {n: f"\\x{n:02x}" for n in [*range(0x20), *range(0x7F, 0xA0)] if chr(n) not in "\n\t"}
_VISIBLE.update({ord(c): f"<U+{ord(c):04X}>" for c in _BIDI})


def visible(text: str) -> str:
    """`text` safe to write to a terminal: C0 controls (but newline and tab), DEL and C1
    controls as `\\xNN` (an escape sequence from someone else cannot clear the screen, move
    the cursor, set the title or write the clipboard) and bidi controls as `<U+202E>`."""
    return text.translate(_VISIBLE)


def visible_parts(parts: tuple[Part, ...]) -> list[Part]:
    return [visible(p) if isinstance(p, str) else (visible(p[0]), p[1]) for p in parts]


# -- output ------------------------------------------------------------------------------------


class Screen:
    """Prints whole lines; `live` lines keep an interactive user's half-typed input intact.
    Every line goes through `visible` first: what others wrote reaches the terminal as text."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self.prompt: str | None = None  # set while the reader thread waits in input()
        self._lock = threading.Lock()

    def show(self, *parts: Part) -> None:
        self.emit(visible_parts(parts), live=False)

    def live(self, *parts: Part) -> None:
        self.emit(visible_parts(parts), live=True)

    def emit(self, parts: list[Part], live: bool) -> None:
        """Draw one line of parts already made `visible`."""
        prompt = self.prompt
        if not live or not self.interactive or prompt is None:
            with self._lock:
                console.print(Text.assemble(*parts), soft_wrap=True, highlight=False)
            return
        typed = _readline.get_line_buffer() if _readline is not None else ""
        with self._lock:
            sys.stdout.write("\r\x1b[2K")
            sys.stdout.flush()
            console.print(Text.assemble(*parts), soft_wrap=True, highlight=False)
            sys.stdout.write(prompt + typed)
            sys.stdout.flush()


@contextlib.contextmanager
def ctrl_c_calls(callback: Callable[[], None], enabled: bool = True) -> Iterator[None]:
    """Within the block, Ctrl-C calls `callback` (on the event loop) instead of ending the
    chat; outside it, Ctrl-C does what it did before. Nothing changes where the loop cannot
    take the signal (not the main thread, no signals)."""
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGINT)
    installed = False
    if enabled:
        try:
            loop.add_signal_handler(signal.SIGINT, callback)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


# -- input -------------------------------------------------------------------------------------


class Lines(Protocol):
    async def read(self, prompt: str, discard_typeahead: bool = False) -> str | None:
        """The next line without its newline, or None at the end of input. `discard_typeahead`:
        a question in the middle of a command, which what was typed before it must not answer."""


def _post(loop: asyncio.AbstractEventLoop, q: asyncio.Queue[str | None], item: str | None) -> bool:
    try:
        loop.call_soon_threadsafe(q.put_nowait, item)
    except RuntimeError:  # the loop is closed: the chat has ended
        return False
    return True


class PipedLines:
    """Lines from a pipe or file, read ahead on a daemon thread. `os.read` holds no Python-level
    lock, so a thread still blocked in it never stalls the interpreter's exit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int = 0) -> None:
        self._loop = loop
        self._fd = fd
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._ended = False
        threading.Thread(target=self._run, name="chat-stdin", daemon=True).start()

    def _run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:
                chunk = b""
            pending += decoder.decode(chunk, final=not chunk)
            *complete, pending = pending.split("\n")
            for line in complete:
                if not _post(self._loop, self._queue, line.removesuffix("\r")):
                    return
            if not chunk:
                if pending:
                    _post(self._loop, self._queue, pending)
                _post(self._loop, self._queue, None)
                return

    async def read(self, prompt: str, discard_typeahead: bool = False) -> str | None:
        if self._ended:  # a script's lines are its answers: nothing of them is discarded
            return None
        line = await self._queue.get()
        self._ended = line is None
        return line


class TerminalLines:
    """`input()` with readline editing, on a daemon thread, one prompt at a time: the loop asks
    for the next line only when it has finished with the previous one, so the prompt is current."""

    def __init__(self, loop: asyncio.AbstractEventLoop, screen: Screen) -> None:
        self._loop = loop
        self._screen = screen
        self._prompts: queue.Queue[tuple[str, bool]] = queue.Queue()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._ended = False
        self._stale = False  # a read was cancelled (Ctrl-C at a question): its line answers nothing
        threading.Thread(target=self._run, name="chat-input", daemon=True).start()

    def _run(self) -> None:
        while True:
            asked, discard = self._prompts.get()
            prompt = visible(asked)  # a title someone else chose is in it
            if discard:  # lines typed while a command ran are not the answer to its question
                with contextlib.suppress(Exception):
                    import termios

                    termios.tcflush(sys.stdin.fileno(), termios.TCIFLUSH)
            if _readline is not None:
                # Set once readline has drawn the prompt, so a live line redraws it only then.
                def drawn(shown: str = prompt) -> None:
                    self._screen.prompt = shown

                _readline.set_pre_input_hook(drawn)
            else:
                self._screen.prompt = prompt
            line: str | None
            try:
                line = input(prompt)
            except (EOFError, OSError):
                line = None
            finally:
                self._screen.prompt = None
            if not _post(self._loop, self._queue, line) or line is None:
                return

    async def read(self, prompt: str, discard_typeahead: bool = False) -> str | None:
        if self._ended:
            return None
        if self._stale:  # the line typed at the cancelled question's prompt, still on screen
            line = await self._queue.get()
            self._stale = False
            if line is None:
                self._ended = True
                return None
        self._prompts.put((prompt, discard_typeahead))
        try:
            line = await self._queue.get()
        except asyncio.CancelledError:
            self._stale = True
            raise
        if line is None:
            self._ended = True
            self._screen.show("")
        return line
