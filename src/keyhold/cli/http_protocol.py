"""uvicorn's httptools protocol, with the limits on request heads that uvicorn does not set.

uvicorn closes a connection that stays idle after a response (`timeout_keep_alive`), but:
- not one that never sends a request, nor one that sends its head a byte at a time: any byte
  cancels its keep-alive timer. Such connections cost an attacker nothing and the server a file
  descriptor and a parser each, for ever;
- nor does it bound a head's size: one connection streaming header lines kept the event loop
  busy (8 s of CPU in 8 s) and grew the server by 2.3 GB in 8 s (measured, uvicorn 0.55).

Here a connection must complete each request's head (request line and headers) within
`head_seconds`, counted from the connection's opening (for its first request) or from the
request's first byte (after a response); a bare idle connection is closed silently, as
keep-alive closes one, a begun head gets a 408. A head may be at most `MAX_HEAD_BYTES` (431).
And a request that is not HTTP/1.1 at all gets its 400 as problem+json, like every refusal.

The body's pace and size are the app's business (`api.problems.BodyLimits`): by then the
request has a route.
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from keyhold.core.errors import Problem

# Browsers send heads of 0.5 to 2 KiB. nginx allows 32 KiB by default (4 buffers of 8 KiB),
# h11 (uvicorn's other parser) 16 KiB.
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


_NOT_HTTP = _refusal(
    Problem(400, "bad-request", "Bad request", "the request line or a header is not valid HTTP/1.1")
)
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


def http_protocol(head_seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, with the head deadline and size limit above."""

    class LimitedHeadProtocol(HttpToolsProtocol):
        # Armed while a head is awaited (from the connection's opening, or from a later
        # request's first byte) and not yet complete.
        _head_timer: asyncio.TimerHandle | None = None
        _head_begun = False
        _head_bytes = 0
        _lingering = False  # refused: reading only to drop what still comes
        _dropped = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                self._dropped += len(data)
                if self._dropped > LINGER_BYTES:
                    self.transport.close()
                return
            awaited_before = self._head_timer is not None
            super().data_received(data)
            # Counted only when the whole read belongs to an unfinished head: a read that ends
            # a head, or starts one after an earlier request's bytes, is not. So the count may
            # miss one read of a head, and never counts a body.
            if awaited_before and self._head_timer is not None:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._stop_head_timer()
                    self._refuse(_TOO_LARGE)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_begun = True
            if self._head_timer is None:  # a later request on a kept-alive connection
                self._start_head_timer()

        def on_headers_complete(self) -> None:
            self._stop_head_timer()
            self._head_begun = False
            self._head_bytes = 0
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            self._stop_head_timer()
            self._refuse(_NOT_HTTP)

        def _start_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(head_seconds, self._head_too_slow)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self._head_begun:
                self._refuse(_TIMED_OUT)
            elif not self.transport.is_closing():
                self.transport.close()

        def _refuse(self, response: bytes) -> None:
            if self.transport.is_closing():
                return
            # Not in the middle of a response to an earlier, pipelined request: the refusal
            # would land inside it. Then the connection is only closed.
            if self.cycle is not None and not self.cycle.response_complete:
                self.transport.close()
                return
            self.transport.write(response)
            if not self.transport.can_write_eof():  # TLS: no half-close
                self.transport.close()
                return
            self.transport.write_eof()
            self._lingering = True
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

    return LimitedHeadProtocol
