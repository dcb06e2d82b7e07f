"""A deadline for a request's head, which uvicorn does not set.

uvicorn closes a connection that stays idle after a response (`timeout_keep_alive`), but not
one that never sends a request, nor one that sends its request line and headers a byte at a
time: any byte cancels its keep-alive timer. Such connections cost an attacker nothing and the
server a file descriptor and a parser each, for ever. Here a connection must complete each
request's head (request line and headers) within `head_seconds`, counted from the connection's
opening (for its first request) or from the request's first byte (after a response). A bare
idle connection is closed silently, as keep-alive closes one; a begun head gets a 408 first.

The body's pace is the app's business (`api.problems.BodyLimits`): by then the request has a
route, and the answer can be problem+json like every other refusal.
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from keyhold.core.errors import Problem

_TIMED_OUT = orjson.dumps(
    Problem(408, "request-timeout", "Request timeout", "the request line and headers did not arrive in time").to_dict()
)
_TIMED_OUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/problem+json\r\n"
    b"content-length: " + str(len(_TIMED_OUT)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _TIMED_OUT
)


def http_protocol(head_seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, with the head deadline above."""

    class HeadDeadlineProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None
        _head_begun = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_begun = True
            if self._head_timer is None:  # a later request on a kept-alive connection
                self._start_head_timer()

        def on_headers_complete(self) -> None:
            self._stop_head_timer()
            self._head_begun = False
            super().on_headers_complete()

        def _start_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(head_seconds, self._head_too_slow)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            # Not in the middle of a response to an earlier, pipelined request: the 408 would
            # land inside it. Then the connection is only closed.
            answering = self.cycle is not None and not self.cycle.response_complete
            if self._head_begun and not answering:
                self.transport.write(_TIMED_OUT_RESPONSE)
            self.transport.close()

    return HeadDeadlineProtocol
