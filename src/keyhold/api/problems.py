"""RFC 9457 problem+json for every refusal, and the guard of request bodies' size and pace.

Bad input never reaches a handler as a 5xx: validation errors, malformed JSON and oversize
bodies are answered here. Error details never echo submitted values (they may be passwords).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyhold.api.schemas import refusal
from keyhold.core.errors import Problem, outage

log = logging.getLogger("keyhold.api")
PROBLEM_JSON = "application/problem+json"


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    if problem.retry_after is not None:
        headers = {**(headers or {}), "Retry-After": str(problem.retry_after)}
    return JSONResponse(
        problem.to_dict(), status_code=problem.status, media_type=PROBLEM_JSON, headers=headers
    )


def _describe(errors: list[Any]) -> tuple[str, list[dict[str, str]]]:
    cleaned = []
    for err in errors:
        if err.get("type") == "json_invalid":
            # Its location is a byte offset, not a field.
            cleaned.append({"field": "body", "problem": "not valid JSON"})
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        cleaned.append({"field": loc, "problem": refusal(err)})
    summary = "; ".join(f"{e['field']}: {e['problem']}" for e in cleaned[:5])
    return summary, cleaned


async def _on_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    summary, cleaned = _describe(list(exc.errors()))
    return problem_response(Problem(422, "invalid-request", "Invalid request", summary, errors=cleaned))


async def _on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return problem_response(exc, headers)


async def _on_http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    titles = {
        400: "Bad request",
        404: "Not found",
        405: "Method not allowed",
        408: "Request timeout",
        413: "Too large",
    }
    detail = exc.detail if isinstance(exc.detail, str) else "the request could not be processed"
    if exc.status_code == 400 and "parsing the body" in detail:
        detail = "the body is not valid JSON (UTF-8)"
    slug = titles.get(exc.status_code, "error").lower().replace(" ", "-")
    problem = Problem(exc.status_code, slug, titles.get(exc.status_code, "Error"), detail)
    return problem_response(problem, dict(exc.headers) if exc.headers else None)


async def _on_client_gone(_request: Request, _exc: Exception) -> JSONResponse:
    # The client closed the connection before its body was whole (an upload given up): an
    # everyday event, not a failure of ours. The answer is never delivered.
    log.debug("client went away before its body was whole")
    return problem_response(Problem(400, "client-gone", "Client gone", "the connection closed before the body ended"))


def _internal(exc: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
    log.error("unhandled %s", type(exc).__name__, exc_info=exc)
    return problem_response(
        Problem(500, "internal", "Internal error", "the server failed; it has been logged"), headers
    )


async def _on_storage_error(_request: Request, exc: Exception) -> JSONResponse:
    problem = outage(exc)
    if problem is not None:
        # A database restart, a lost connection: expected now and then, and the client's retry
        # will most likely work. One line, no traceback.
        log.warning("storage unavailable: %s", type(exc).__name__)
        return problem_response(problem)
    return _internal(exc)


# The last-resort handler answers from outside every middleware: it brings its own headers,
# and closes the connection, which the server drops after re-raising the error.
LAST_RESORT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Connection": "close",
}


async def _on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    return _internal(exc, LAST_RESORT_HEADERS)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(HTTPException, _on_http)
    # Handled by type, not as a bare Exception: Starlette re-raises what reaches its last-resort
    # handler, and the server would log a traceback for a routine database restart.
    app.add_exception_handler(ClientDisconnect, _on_client_gone)
    app.add_exception_handler(SQLAlchemyError, _on_storage_error)
    app.add_exception_handler(OSError, _on_storage_error)
    app.add_exception_handler(Exception, _on_unexpected)


DRAIN_BYTES = 32 * 1024 * 1024


async def _drain(receive: Receive, seconds: float) -> None:
    """Read and drop what the client is still sending (bounded), so that it reads our 413
    instead of a connection reset; past the bound the connection is simply closed."""
    dropped = 0
    try:
        async with asyncio.timeout(seconds):
            while dropped < DRAIN_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return
                dropped += len(message.get("body", b""))
                if not message.get("more_body"):
                    return
    except TimeoutError:
        return


# Beyond its first `stall_seconds`, a body must arrive at this rate on average (Apache's
# mod_reqtimeout uses the same figure): a pause limit alone lets a byte every 29 s hold a
# 64 KiB sign-in for 22 days.
MIN_BODY_BYTES_PER_SECOND = 500


class BodyLimits:
    """Refuse bodies over the limit with 413, counting bytes as they arrive (a missing or
    lying Content-Length does not get past it), and bodies that arrive too slowly with 408:
    a pause longer than `stall_seconds`, or less than `MIN_BODY_BYTES_PER_SECOND` on average
    beyond that. Attachment uploads and legal requests (which carry their document) have their
    own size limits."""

    def __init__(
        self,
        app: ASGIApp,
        max_body: int,
        max_upload: int,
        max_legal_document: int,
        drain_seconds: float,
        stall_seconds: float,
    ) -> None:
        self.app = app
        self.drain_seconds = drain_seconds
        self.stall_seconds = stall_seconds
        self.max_body = max_body
        self.max_upload = max_upload
        self.max_legal_document = max_legal_document

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.endswith("/attachments"):
            limit = self.max_upload
        elif path.endswith("/staff/legal"):  # carries the legal process document (base64)
            limit = self.max_legal_document
        else:
            limit = self.max_body
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    await self._refuse(scope, receive, send, limit)
                    return
        seen = 0
        started: float | None = None
        # Past the body, or once the answer has begun, a receive waits for the client to go away
        # (a streamed response listens for that): no deadline then.
        body_done = answering = False

        async def tracked_send(message: Message) -> None:
            nonlocal answering
            answering = True
            await send(message)

        async def paced_receive() -> Message:
            nonlocal started
            if answering:
                return await receive()
            now = asyncio.get_running_loop().time()
            started = now if started is None else started
            budget = started + self.stall_seconds + seen / MIN_BODY_BYTES_PER_SECOND - now
            try:
                async with asyncio.timeout(max(0.0, min(self.stall_seconds, budget))):
                    return await receive()
            except TimeoutError:
                if answering:
                    return await receive()
                detail = (
                    f"the body arrived too slowly (a pause of more than {self.stall_seconds:g} s, "
                    f"or less than {MIN_BODY_BYTES_PER_SECOND} bytes a second)"
                )
                raise HTTPException(408, detail, {"Connection": "close"}) from None

        async def limited_receive() -> Message:
            nonlocal seen, body_done
            if body_done:
                return await receive()
            message = await paced_receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                body_done = True
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if message.get("more_body"):
                        await _drain(receive, self.drain_seconds)
                    # An HTTPException passes through FastAPI's body parsing unchanged (any other
                    # exception there becomes a 400), and `_on_http` renders it as problem+json.
                    raise HTTPException(413, f"the body is larger than {limit} bytes")
            return message

        await self.app(scope, limited_receive, tracked_send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        # A client waiting for "100 Continue" has not sent the body: asking for it (the server's
        # first receive answers 100 Continue) would only invite what is refused.
        if not any(k == b"expect" and v.lower() == b"100-continue" for k, v in scope.get("headers", ())):
            await _drain(receive, self.drain_seconds)
        problem = Problem(
            413, "too-large", "Too large", f"the body is larger than {limit} bytes (or its length is invalid)"
        )
        await problem_response(problem, {"Connection": "close"})(scope, receive, send)
