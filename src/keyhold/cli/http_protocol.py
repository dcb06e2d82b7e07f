"""uvicorn's httptools protocol, with the limits on slow and oversized clients uvicorn lacks.

uvicorn closes a connection that stays idle after a response (`timeout_keep_alive`), but:
- not one that never sends a request, nor one that sends its head a byte at a time: any byte
  cancels its keep-alive timer, even a byte that begins no request (a bare CRLF, or the rest of
  a body the app answered without reading), after which no timer at all was left;
- it does not bound a head's size: one connection streaming header lines kept the event loop
  busy (8 s of CPU in 8 s) and grew the server by 2.3 GB in 8 s (measured, uvicorn 0.55);
- a client that stops reading a response holds the connection and its request for ever.

Here:
- a connection must complete each request's head (request line and headers) within
  `head_seconds`, counted from the connection's opening (for its first request) or from the
  request's first byte (after a response); a bare idle connection is closed silently, as
  keep-alive closes one, a begun head gets a 408. Bytes that begin no request leave the
  keep-alive deadline where it was;
- a head may be at most `MAX_HEAD_BYTES` (431);
- a response the client has not read a byte of for `stall_seconds` (the buffers full all that
  time) is given up and the connection dropped. Once we close a connection, what is still
  unsent is the kernel's (the socket outlives our side as soon as the transport's buffer is
  empty): `TCP_USER_TIMEOUT` holds it to the same rule, where before the socket kept it for as
  long as the client answered the kernel's probes (338 s for 58 KiB, measured);
- a request the parser refuses gets its 400 as problem+json, like every refusal.

The body's pace and size are the app's business (`api.problems.BodyLimits`): by then the
request has a route.
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from keyhold.cli.client_watch import ClientWatch
from keyhold.core.errors import Problem

# Browsers send heads of 0.5 to 2 KiB. nginx allows 32 KiB by default (4 buffers of 8 KiB),
# h11 (uvicorn's other parser) 16 KiB. Counted: the request target and the header lines.
MAX_HEAD_BYTES = 32 * 1024
# After a refusal, what the client still sends is read and dropped for this long (at most this
# much) before the connection closes: closed with unread bytes, a socket sends a reset, and the
# client would see that instead of its refusal.
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024

_STATUS_LINES = {
    400: b"HTTP/1.1 400 Bad Request",
    408: b"HTTP/1.1 408 Request Timeout",
    431: b"HTTP/1.1 431 Request Header Fields Too Large",
}


def _refusal(problem: Problem) -> bytes:
    body = orjson.dumps(problem.to_dict())
    return (
        _STATUS_LINES[problem.status]
        + b"\r\ncontent-type: application/problem+json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
        + body
    )


_NOT_HTTP = _refusal(Problem(400, "bad-request", "Bad request", "the request line or a header is not valid HTTP"))
_TIMED_OUT = _refusal(
    Problem(408, "request-timeout", "Request timeout", "the request line and headers did not arrive in time")
)
_TOO_LARGE = _refusal(
    Problem(
        431,
        "request-header-fields-too-large",
        "Request header fields too large",
        f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes",
    )
)


class _HeadTooLarge(Exception):
    """Raised in a parser callback: httptools stops parsing and uvicorn answers its 400 path,
    which `send_400_response` below turns into the 431."""


def http_protocol(head_seconds: float, stall_seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, with the limits above."""

    class LimitedProtocol(HttpToolsProtocol):
        # Armed while a head is awaited (from the connection's opening, or from a later
        # request's first byte) and not yet complete.
        _head_timer: asyncio.TimerHandle | None = None
        _heads_started = 0  # counts heads, so that a read can tell whether it began one
        _in_head = False  # between a request's first byte and the end of its headers
        _head_bytes = 0  # reads wholly inside the unfinished head: a bound while it lasts
        _head_size = 0  # the head's target and header lines, exact once it is complete
        _too_large = False
        _watch: ClientWatch  # the stall rule for a client that takes nothing (client_watch.py)
        _running: RequestResponseCycle | None = None  # the request being answered
        _lingering = False  # refused: reading only to drop what still comes
        _dropped = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch = ClientWatch(self.loop, transport, stall_seconds)
            self._start_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            # uvicorn marks only the last request it parsed as disconnected; a pipelined one
            # behind a response still being sent would leave that response writing to a closed
            # transport (a traceback, twice).
            running = self._running
            if running is not None and not running.response_complete:
                running.disconnected = True
                running.message_event.set()
            self._stop_head_timer()
            self._watch.stop()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                self._dropped += len(data)
                if self._dropped > LINGER_BYTES:
                    self._close()
                return
            idle = self.timeout_keep_alive_task  # uvicorn cancels it on any byte
            heads_before = self._heads_started
            awaited_before = self._head_timer is not None
            super().data_received(data)
            if awaited_before and self._head_timer is not None and heads_before == self._heads_started:
                # The whole read belongs to one unfinished head (a read that begins or ends a
                # head is measured exactly by the callbacks).
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._stop_head_timer()
                    self._refuse(_TOO_LARGE)
            began_none = heads_before == self._heads_started
            if idle is not None and began_none and not self._lingering and not self.transport.is_closing():
                # Bytes that began no request: the connection is as idle as before.
                self.timeout_keep_alive_task = self.loop.call_at(idle.when(), self.timeout_keep_alive_handler)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._heads_started += 1
            self._in_head = True
            self._head_bytes = self._head_size = 0
            if self._head_timer is None:  # a later request on a kept-alive connection
                self._start_head_timer()

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
            if not self._in_head:
                # A trailer, after a chunked body: never merged into the request's headers
                # (RFC 9110, 6.5), which the app may be reading, nor kept.
                return
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._stop_head_timer()
            self._in_head = False
            super().on_headers_complete()

        def _count_head(self, size: int) -> None:
            """Refused as it grows, trailers included."""
            self._head_size += size
            if self._head_size > MAX_HEAD_BYTES:
                self._too_large = True
                raise _HeadTooLarge

        def send_400_response(self, msg: str) -> None:
            self._stop_head_timer()
            self._refuse(_TOO_LARGE if self._too_large else _NOT_HTTP)

        def pause_writing(self) -> None:
            super().pause_writing()
            self._watch.start()

        def resume_writing(self) -> None:
            super().resume_writing()
            # Once the connection is closing, what is left must still reach the client: keep
            # watching until it has (connection_lost) or the client stops taking it.
            if not self.transport.is_closing():
                self._watch.stop()

        def timeout_keep_alive_handler(self) -> None:
            if self._watch.unsent_bytes() > 0 and not self.transport.is_closing():
                # The end of a response is still on its way: closed now, it would be the
                # kernel's, out of this stall check's reach. Closed once it has been taken;
                # meanwhile the watch drops a client that takes nothing.
                self._watch.start()
                self.timeout_keep_alive_task = self.loop.call_later(
                    stall_seconds, self.timeout_keep_alive_handler
                )
                return
            super().timeout_keep_alive_handler()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing():  # a `Connection: close` answer: closed just now
                self._watch.limit_what_a_close_leaves()

        def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
            self._running = cycle
            super()._start_asgi_task(cycle, app)

        def handle_websocket_upgrade(self) -> None:
            if self.cycle is not None and (not self.cycle.response_complete or self._watch.unsent_bytes() > 0):
                # Pipelined behind a response still being sent, or sent but not yet taken (no
                # browser does this): switching protocols under it would lose the response's
                # flow control and this stall check, and a refused handshake's close would leave
                # it to the kernel for minutes. (Without an earlier request, what is unsent is
                # TLS's own: a session ticket in flight.)
                self._watch.drop()
                return
            self._watch.stop()
            super().handle_websocket_upgrade()

        def _start_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(head_seconds, self._head_too_slow)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self._in_head:
                self._refuse(_TIMED_OUT)
            elif not self.transport.is_closing():
                self._close()

        def _refuse(self, response: bytes) -> None:
            if self.transport.is_closing():
                return
            # Not in the middle of a response to an earlier, pipelined request: the refusal
            # would land inside it. Then the connection is only closed.
            if self.cycle is not None and not self.cycle.response_complete:
                self._close()
                return
            self.transport.write(response)
            if not self.transport.can_write_eof():  # TLS: no half-close
                self._close()
                return
            self.transport.write_eof()
            self._lingering = True
            self.loop.call_later(LINGER_SECONDS, self._close)

        def _close(self) -> None:
            self._watch.limit_what_a_close_leaves()
            self.transport.close()

    return LimitedProtocol
