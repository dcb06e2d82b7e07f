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
import os
import queue
import sys
import threading
from typing import Protocol

from rich.text import Text

from keyhold.clients.terminal import console

try:  # GNU readline: line editing and history at the prompt, when available
    import readline as _readline
except ImportError:  # pragma: no cover - readline is part of CPython on Debian
    _readline = None  # type: ignore[assignment]

Part = str | tuple[str, str]


# -- output ------------------------------------------------------------------------------------


class Screen:
    """Prints whole lines; `live` lines keep an interactive user's half-typed input intact."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self.prompt: str | None = None  # set while the reader thread waits in input()
        self._lock = threading.Lock()

    def show(self, *parts: Part) -> None:
        with self._lock:
            console.print(Text.assemble(*parts), soft_wrap=True, highlight=False)

    def live(self, *parts: Part) -> None:
        prompt = self.prompt
        if not self.interactive or prompt is None:
            self.show(*parts)
            return
        typed = _readline.get_line_buffer() if _readline is not None else ""
        with self._lock:
            sys.stdout.write("\r\x1b[2K")
            sys.stdout.flush()
            console.print(Text.assemble(*parts), soft_wrap=True, highlight=False)
            sys.stdout.write(prompt + typed)
            sys.stdout.flush()


# -- input -------------------------------------------------------------------------------------


class Lines(Protocol):
    async def read(self, prompt: str) -> str | None:
        """The next line without its newline, or None at the end of input."""


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

    async def read(self, prompt: str) -> str | None:
        if self._ended:
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
        self._prompts: queue.Queue[str] = queue.Queue()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._ended = False
        threading.Thread(target=self._run, name="chat-input", daemon=True).start()

    def _run(self) -> None:
        while True:
            prompt = self._prompts.get()
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

    async def read(self, prompt: str) -> str | None:
        if self._ended:
            return None
        self._prompts.put(prompt)
        line = await self._queue.get()
        if line is None:
            self._ended = True
            self._screen.show("")
        return line
