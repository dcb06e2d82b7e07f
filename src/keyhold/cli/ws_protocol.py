"""uvicorn's WebSocket protocol, with its refusals of an upgrade in problem+json, and the stall
rule for a client that takes nothing (`client_watch.py`).

Before the app sees an upgrade, websockets refuses a malformed handshake (no or an invalid
`Sec-WebSocket-Key`, a `Sec-WebSocket-Version` other than 13) in plain text; uvicorn answers an
upgrade the app closes before accepting it (here: no WebSocket at that address) with an empty
403, and one the app fails on with a plain 500. Every other refusal of ours is problem+json, so
a client reads these the same way. The status and the response's other headers stay as
websockets made them, but for a `Sec-WebSocket-Version` missing or other than 13: RFC 6455
(4.2.2) asks for the versions the server speaks in that header, which websockets left out, and
suggests 426 for a version it does not speak (websockets answered 400).

A WebSocket whose client stops reading: uvicorn pings it and, with no pong, closes it, but its
close waits for the transport's buffer to drain, which never happens if the client's window
stays shut. Measured before this rule (a member's stream replaying 12 MB of history to a client
with a 4 KiB receive buffer that read nothing): each such socket kept 2.8 MB queued in the kernel
and ~26 MB more in the server, past the ping timeout, for as long as the probe ran (190 s).
Here it is dropped once it has taken nothing for `stall_seconds`, and the closes that can leave
data unsent (the app's close frame, the close after an unanswered ping, the answers to a
client's close frame and to a frame refused) leave the kernel the same limit. Not covered: the
close uvicorn makes when the app returns without closing (our stream always closes) and the
refusals of a handshake (small, and before any data of ours).
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
from typing import Any

import orjson
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader, InvalidHeaderValue
from websockets.frames import Frame
from websockets.http11 import Response

from keyhold.cli.client_watch import ClientWatch
from keyhold.core.errors import Problem

# What websockets (and uvicorn, for a head websockets cannot parse) put before the reason.
_PREFIX = "Failed to open a WebSocket connection: "
# Where the text tells a client nothing: uvicorn's empty 403, its "Internal Server Error".
_DETAILS = {
    403: "there is no WebSocket at this address",
    500: "the server failed to open this WebSocket; try again",
}
_REPLACED = {"content-type", "content-length"}
# RFC 9110's name where Python's is older ("Request-URI Too Long").
_NAMES = {414: "URI Too Long"}
SPOKEN_VERSION = "13"  # RFC 6455's, the only one websockets speaks


def _title(name: str) -> str:
    """A status's name as our titles are written: "Bad request", "URI too long"."""
    title = " ".join(word if word.isupper() else word.lower() for word in name.split())
    return title[:1].upper() + title[1:]


def as_problem(refusal: Response, text: str) -> Response:
    """The refusal websockets made, with a problem+json body in place of its text."""
    status = http.HTTPStatus(refusal.status_code)
    reason = text.strip().removeprefix(_PREFIX).rstrip(".")
    detail = _DETAILS.get(status.value) or reason
    name = _NAMES.get(status.value, status.phrase)
    problem = Problem(status.value, name.lower().replace(" ", "-"), _title(name), detail)
    body = orjson.dumps(problem.to_dict())
    headers = Headers(
        [(name, value) for name, value in refusal.headers.raw_items() if name.lower() not in _REPLACED]
    )
    headers["Content-Type"] = "application/problem+json"
    headers["Content-Length"] = str(len(body))
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Cache-Control"] = "no-store"
    return dataclasses.replace(refusal, headers=headers, body=body)


def websocket_protocol(stall_seconds: float) -> type[WebSocketsSansIOProtocol]:
    """uvicorn's sans-I/O WebSocket protocol, with the refusals and the stall rule above."""

    class LimitedWebSocket(WebSocketsSansIOProtocol):
        _watch: ClientWatch

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # websockets' own `reject` builds every refusal above (its handshake checks call
            # it, and uvicorn calls it for the 403 and the 500): documented as the place to
            # change one.
            plain = self.conn.reject

            def reject(status: http.HTTPStatus | int, text: str) -> Response:
                refused = self.conn.handshake_exc
                version = isinstance(refused, InvalidHeader) and refused.name == "Sec-WebSocket-Version"
                unspoken = version and isinstance(refused, InvalidHeaderValue)
                if unspoken:
                    status = http.HTTPStatus.UPGRADE_REQUIRED  # RFC 6455, 4.2.2: a version we do not speak
                response = as_problem(plain(status, text), text)
                if version:
                    response.headers["Sec-WebSocket-Version"] = SPOKEN_VERSION  # the RFC's MUST
                if unspoken:
                    # RFC 9110, 15.5.22: a 426 names the protocol (websockets adds it to its own).
                    response.headers["Upgrade"] = "websocket"
                return response

            self.conn.reject = reject  # type: ignore[method-assign]
            sending_close = self.conn.send_close

            def send_close(code: int | None = None, reason: str = "") -> None:
                # The app ends it (revoked, fell behind, done) or the server shuts down: uvicorn
                # calls this once the transport takes writes again, for the close frame.
                self._watch.limit_what_a_close_leaves()
                sending_close(code, reason)

            self.conn.send_close = send_close  # type: ignore[method-assign]

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._watch = ClientWatch(self.loop, self.transport, stall_seconds)

        def connection_lost(self, exc: Exception | None) -> None:
            self._watch.stop()
            super().connection_lost(exc)

        def pause_writing(self) -> None:
            super().pause_writing()
            self._watch.start()

        def resume_writing(self) -> None:
            super().resume_writing()
            if not self.transport.is_closing():  # a close still sends what is left: watched
                self._watch.stop()

        def keepalive_timeout(self) -> None:
            self._watch.limit_what_a_close_leaves()  # no pong: the client is not reading
            super().keepalive_timeout()

        def handle_close(self, event: Frame) -> None:
            self._watch.limit_what_a_close_leaves()  # the client ends it: our answer may be stuck
            super().handle_close(event)

        def handle_parser_exception(self) -> None:
            self._watch.limit_what_a_close_leaves()  # a frame refused (too big, not UTF-8)
            super().handle_parser_exception()

    return LimitedWebSocket
