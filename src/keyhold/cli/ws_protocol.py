"""uvicorn's WebSocket protocol, with its refusals of an upgrade in problem+json.

Before the app sees an upgrade, websockets refuses a malformed handshake (no or an invalid
`Sec-WebSocket-Key`, a `Sec-WebSocket-Version` other than 13) in plain text; uvicorn answers an
upgrade the app closes before accepting it (here: no WebSocket at that address) with an empty
403, and one the app fails on with a plain 500. Every other refusal of ours is problem+json, so
a client reads these the same way. The status and the response's other headers (such as the
`Sec-WebSocket-Version` a client should use) stay as websockets made them.
"""

from __future__ import annotations

import dataclasses
import http
from typing import Any

import orjson
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.http11 import Response

from keyhold.core.errors import Problem

# What websockets (and uvicorn, for a head websockets cannot parse) put before the reason.
_PREFIX = "Failed to open a WebSocket connection: "
# Where the text tells a client nothing: uvicorn's empty 403, its "Internal Server Error".
_DETAILS = {
    403: "there is no WebSocket at this address",
    500: "the server failed to open this WebSocket; try again",
}
_REPLACED = {"content-type", "content-length"}


def as_problem(refusal: Response, text: str) -> Response:
    """The refusal websockets made, with a problem+json body in place of its text."""
    status = http.HTTPStatus(refusal.status_code)
    reason = text.strip().removeprefix(_PREFIX).rstrip(".")
    detail = _DETAILS.get(status.value) or reason
    problem = Problem(
        status.value, status.phrase.lower().replace(" ", "-"), status.phrase.capitalize(), detail
    )
    body = orjson.dumps(problem.to_dict())
    headers = Headers(
        [(name, value) for name, value in refusal.headers.raw_items() if name.lower() not in _REPLACED]
    )
    headers["Content-Type"] = "application/problem+json"
    headers["Content-Length"] = str(len(body))
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Cache-Control"] = "no-store"
    return dataclasses.replace(refusal, headers=headers, body=body)


class ProblemRefusals(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # websockets' own `reject` builds every refusal above (its handshake checks call it, and
        # uvicorn calls it for the 403 and the 500): documented as the place to change one.
        plain = self.conn.reject

        def reject(status: http.HTTPStatus | int, text: str) -> Response:
            return as_problem(plain(status, text), text)

        self.conn.reject = reject  # type: ignore[method-assign]
