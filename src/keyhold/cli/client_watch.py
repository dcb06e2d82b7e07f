"""One rule for a client that takes nothing of what the server sends, on HTTP and WebSocket alike.

While there is something unsent (in the transport's buffer or the kernel's), the client must
take some of it within `stall_seconds`, or the connection is dropped with a reset: it holds its
buffers, and on a WebSocket its member's queued events, for as long as it answers the
kernel's probes otherwise (minutes for an orphaned socket; for ever for an open one). What
counts as taken is what the client's side acknowledged (`TCP_INFO`), whatever layers (TLS
included) buffer above it. Linux only, where the kernel says so; elsewhere the rule falls back
to what is still unsent.

Once the server closes a connection, what is still unsent is the kernel's: `TCP_USER_TIMEOUT`
holds it to the same rule (`limit_what_a_close_leaves`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios

# Linux's `struct tcp_info`: `tcpi_bytes_acked` (since 4.1) is the u64 at this offset.
TCPI_BYTES_ACKED = 120
TCP_INFO_SIZE = 256


class ClientWatch:
    """The stall rule above for one connection's transport."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, stall_seconds: float
    ) -> None:
        self._loop = loop
        self._transport = transport
        self._stall_seconds = stall_seconds
        self._timer: asyncio.TimerHandle | None = None
        self._taken = 0

    def start(self) -> None:
        """Watch while something is unsent (from a pause of writing, or a close that waits for
        the end of a response)."""
        if self._timer is None and self.unsent_bytes() > 0:
            self._taken = self.taken_bytes()
            self._timer = self._loop.call_later(self._stall_seconds, self._check)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        # A slow reader may not let writing resume for a while (the kernel wakes a writer only
        # once a third of its buffer is free): what counts is whether it took anything.
        self._timer = None
        taken = self.taken_bytes()
        if taken > self._taken:
            self._taken = taken
            self._timer = self._loop.call_later(self._stall_seconds, self._check)
            return
        if self.unsent_bytes() == 0:
            return
        self.drop()  # nothing can be said to a client that takes nothing

    def drop(self) -> None:
        """With a reset, so that the kernel does not keep feeding the client what was queued."""
        self.stop()
        sock = self._transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    def taken_bytes(self) -> int:
        """Bytes the client's side has acknowledged; without TCP_INFO, minus what is still unsent."""
        sock = self._transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError, ValueError, struct.error):
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
            return int(struct.unpack_from("Q", info, TCPI_BYTES_ACKED)[0])
        return -self.unsent_bytes()

    def unsent_bytes(self) -> int:
        """What was written and is not yet sent on: ours and the kernel's."""
        kernel = 0
        sock = self._transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError, ValueError):
            kernel = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        return int(self._transport.get_write_buffer_size()) + int(kernel)

    def limit_what_a_close_leaves(self) -> None:
        """The kernel drops the connection once the client has acknowledged nothing for
        `stall_seconds` (a zero window included, as measured on Linux 6.18), also after our
        side is gone. Set only at a close: its timer does not count data squeezed through a
        window smaller than a segment (it dropped an honest reader with an 8 KiB buffer over
        loopback), and set while the client has long been stalled, it acts only at the
        kernel's next probe (20 s into a zero window: not within 3 s). Over the open
        connection, `_check` judges by the bytes acknowledged. Linux only."""
        sock = self._transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError, ValueError, OverflowError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, round(self._stall_seconds * 1000))
