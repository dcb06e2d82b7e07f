"""The WebSocket at /api/v1/stream: events out, sends and receipts in.

Protocol (JSON text frames):
- authenticate with `Authorization: Bearer <token>` on the upgrade request, or (browsers)
  with a first frame `{"type": "auth", "token": "...", "since": N}` within 10 seconds;
  tokens are never put in URLs, which end up in access logs;
- `?since=N` (or `since` in the auth frame): the server first replays every stored event with
  seq > N, then streams live ones; each event carries the member's `seq`, strictly increasing;
  `?since=latest` skips the replay (live events only; the `ready` frame gives the position);
- client frames: `send` {ref, conversation_id, text, idempotency_key?, attachment_id?} →
  `ack` {ref, message} once durable, or `error` {ref, problem}; the sending stream gets no
  `message.new` for its own send (the ack carries the message), the sender's other streams do; `receipt` {ref,
  conversation_id, receipt: delivered|read, message_id} → `ack` {ref}; `ping` → `pong`;
- when the session ends (logout, password change elsewhere, ban, expiry...) the server closes
  the socket within a second: 4401 when the session ended, 4403 when the account may no longer
  act, with the reason; a frame that arrives after that is never acted on. A suspension leaves
  the socket open for receiving: `send` frames get an `error` frame (403, naming its end).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, WebSocket
from pydantic import Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnect

from keyhold.api.deps import Services, client_address
from keyhold.api.limits import Backoff
from keyhold.api.schemas import (
    MAX_ID,
    AttachmentId,
    Body,
    EncryptedContent,
    FrankingBody,
    Id,
    IdempotencyKey,
    MessageText,
    Text,
    refusal,
)
from keyhold.core.accounts import Member
from keyhold.core.errors import Problem, invalid
from keyhold.core.messages import SendRequest, Sent
from keyhold.core.screening import InLine

log = logging.getLogger("keyhold.stream")
router = APIRouter()
AUTH_TIMEOUT = 10.0
# A stream whose outbox holds more than this many live frames, or bytes, is cut off (4408): its
# client is not keeping up, and reconnects with `since` to get the rest from storage at its own
# pace. By frames alone, a client reading a trickle could hold 20,000 frames of up to 256 KiB.
# The bytes leave room for what waited behind a replay (`bus.local.MAX_PENDING_BYTES`, 2 MiB),
# handed over at once on top of what the replay keeps ahead (below) when it ends.
MAX_OUTBOX = 20_000
MAX_OUTBOX_BYTES = 4 * 1024 * 1024
# A replay pushes its next frame of history only while the outbox is down to this many frames
# and bytes: what a stream holds for a client that reads slowly, or not at all, stays below the
# limits above (a page of history can be 500 frames of 256 KiB).
REPLAY_AHEAD = 500
REPLAY_AHEAD_BYTES = 1024 * 1024
_origins = itertools.count(1)  # a process-unique id per connection (see `bus.base.Bus.publish`)
Ref = Annotated[Text, Field(max_length=64)] | Annotated[int, Field(ge=0, le=MAX_ID)] | None


class Frame(Body):
    """A client frame: strict, and its strings checked like request bodies."""


class AuthFrame(Frame):
    type: Literal["auth"]
    token: Annotated[Text, Field(max_length=200)]
    since: Annotated[int, Field(ge=0, le=2**62)] = 0


class SendFrame(Frame):
    type: Literal["send"]
    ref: Ref = None
    conversation_id: Id
    text: MessageText = ""
    encrypted: EncryptedContent | None = None
    franking: FrankingBody | None = None
    idempotency_key: IdempotencyKey | None = None
    attachment_id: AttachmentId | None = None


class ReceiptFrame(Frame):
    type: Literal["receipt"]
    ref: Ref = None
    conversation_id: Id
    receipt: Literal["delivered", "read"]
    message_id: Id


class PingFrame(Frame):
    type: Literal["ping"]
    ref: Ref = None


# One pass in pydantic's core: parse, pick the model by `type`, validate.
CLIENT_FRAMES: TypeAdapter[SendFrame | ReceiptFrame | PingFrame] = TypeAdapter(
    Annotated[SendFrame | ReceiptFrame | PingFrame, Field(discriminator="type")]
)
_NOT_A_FRAME_TYPE = ("union_tag_invalid", "union_tag_not_found", "model_attributes_type", "model_type")


def _frame_refusal(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return "the frame is not valid JSON"
    if first["type"] in _NOT_A_FRAME_TYPE or not first["loc"]:
        return "unknown frame type; expected send, receipt or ping"
    # loc[0] is the frame's type; pydantic also names the member of a union that failed.
    where = ".".join(str(p) for p in first["loc"][1:] if isinstance(p, int) or _is_field(p)) or "frame"
    return f"{where}: {refusal(first)}"


def _is_field(name: str) -> bool:
    return name.isidentifier() and name not in ("int", "str", "bool", "float", "none")


def _ref_in(raw: str | bytes) -> Any:
    """The `ref` of a refused frame, to answer it by (when there is one to read)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    ref = data.get("ref") if isinstance(data, dict) else None
    return ref if isinstance(ref, str | int) else None


def _error(problem: Problem, ref: Any = None) -> bytes:
    return orjson.dumps({"type": "error", "ref": ref, "problem": problem.to_dict()})


class Connection:
    """One authenticated socket: a pump (replay, then live events), a sender, and a reader."""

    def __init__(self, ws: WebSocket, svc: Services, member: Member) -> None:
        self.ws = ws
        self.svc = svc
        self.member = member
        self.outbox: deque[bytes] = deque()
        self.outbox_bytes = 0
        self.wakeup = asyncio.Event()
        self.drained = asyncio.Event()  # the outbox is down to REPLAY_AHEAD* (`room`)
        self.closed = False
        self.close_code = 4408
        self.close_reason = "fell behind; reconnect with since"
        self.tasks: set[asyncio.Task[None]] = set()
        self.origin = next(_origins)
        self.sending: InLine | None = None  # this socket's send being screened, if any
        self.address = client_address(ws)  # what rate limits count as this client
        self.backoff = Backoff()  # not read for a moment after a send over its rate limit

    def revoke(self, code: int, reason: str) -> None:
        """The session ended (see `core.revocation`): close now, whatever is still queued."""
        self.close_code, self.close_reason = code, reason
        self.end()

    def end(self, _task: asyncio.Task[None] | None = None) -> None:
        self.closed = True
        # Nothing queued is sent once closed: let it go now, not when the client does.
        self.outbox.clear()
        self.outbox_bytes = 0
        self.wakeup.set()
        self.drained.set()

    def push(self, frame: bytes) -> None:
        if self.closed:
            return  # ending: nothing more is sent, so nothing more is kept
        if len(self.outbox) >= MAX_OUTBOX or self.outbox_bytes + len(frame) > MAX_OUTBOX_BYTES:
            self.end()  # too slow: drop it; it reconnects with since=<last seq>
            return
        self.outbox.append(frame)
        self.outbox_bytes += len(frame)
        self.wakeup.set()

    async def room(self) -> bool:
        """Until the outbox is down to `REPLAY_AHEAD` frames and `REPLAY_AHEAD_BYTES`; False once
        the connection ends."""
        while not self._has_room() and not self.closed:
            self.drained.clear()
            await self.drained.wait()
        return not self.closed

    def _has_room(self) -> bool:
        return len(self.outbox) <= REPLAY_AHEAD and self.outbox_bytes <= REPLAY_AHEAD_BYTES

    async def sender(self) -> None:
        while not self.closed:
            while self.outbox and not self.closed:
                frame = self.outbox.popleft()
                self.outbox_bytes -= len(frame)
                await self.ws.send_text(frame.decode())
                if not self.drained.is_set() and self._has_room():
                    self.drained.set()
            self.wakeup.clear()
            if not self.outbox and not self.closed:
                await self.wakeup.wait()
        # Revoked, fell behind, or the pump ended: close so that the client knows why (and,
        # unless revoked, reconnects and replays).
        with contextlib.suppress(Exception):
            await self.ws.close(code=self.close_code, reason=self.close_reason)

    async def pump(self, since: int) -> None:
        """Replayed, then live events (`core.delivery`); when they end, the member fell behind."""
        await self.svc.delivery.deliver(self.member, since, self.origin, self.push, self.room)
        self.end()

    async def handle(self, raw: str | bytes) -> None:
        await self.backoff.wait()
        if self.closed:
            return  # revoked or closing: nothing more is acted on
        try:
            frame = CLIENT_FRAMES.validate_json(raw)
        except ValidationError as exc:
            self.push(_error(invalid(_frame_refusal(exc)), _ref_in(raw)))
            return
        if isinstance(frame, SendFrame):
            self._send(frame)
        elif isinstance(frame, ReceiptFrame):
            task = asyncio.create_task(self._receipt(frame))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif isinstance(frame, PingFrame):
            self.push(orjson.dumps({"type": "pong", "ref": frame.ref}))

    def _send(self, frame: SendFrame) -> None:
        request = SendRequest(
            self.member.id,
            self.member.username,
            frame.conversation_id,
            frame.text,
            frame.idempotency_key,
            frame.attachment_id,
            self.member.session,
            self.origin,
            frame.encrypted,
            device_id=self.member.device_id,
            franking=frame.franking,
        )
        try:
            self.svc.limits.take("messages", self.member, self.address)  # before any work: 429 error frame
            self.svc.messages.validate(request)
        except Problem as problem:
            self.backoff.refused(problem)
            self.push(_error(problem, frame.ref))
            return
        ref = frame.ref

        def done(result: Sent | Problem) -> None:
            if isinstance(result, Problem):
                self.push(_error(result, ref))
            else:
                self.push(orjson.dumps({"type": "ack", "ref": ref, "message": orjson.Fragment(result.json)}))

        # Screened first when it must be (`core.screening`), queued after this socket's earlier sends.
        self.sending = self.svc.messages.screen_and_submit(request, done, self.sending)

    async def _receipt(self, frame: ReceiptFrame) -> None:
        try:
            await self.svc.conversations.receipt(
                self.member, frame.conversation_id, frame.receipt, frame.message_id
            )
            self.push(orjson.dumps({"type": "ack", "ref": frame.ref}))
        except Problem as problem:
            self.push(_error(problem, frame.ref))


async def _authenticate(ws: WebSocket, svc: Services) -> tuple[Member, int] | None:
    since_param = ws.query_params.get("since", "0")
    header = ws.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    latest = since_param == "latest"  # live events only, no replay
    try:
        since = 0 if latest else int(since_param)
        if not 0 <= since <= 2**62:
            raise ValueError
    except ValueError:
        await _refuse(ws, invalid("since must be a non-negative integer or 'latest'"), 4400)
        return None
    if scheme.lower() != "bearer" or not token:
        try:
            raw = await asyncio.wait_for(ws.receive_text(), AUTH_TIMEOUT)
            auth = AuthFrame.model_validate(orjson.loads(raw))
        except (WebSocketDisconnect, RuntimeError):
            return None  # the client went away before authenticating: nothing to answer or log
        except (TimeoutError, ValidationError, orjson.JSONDecodeError, KeyError):
            await _refuse(ws, Problem(401, "unauthorized", "Not signed in", "send an auth frame first"), 4401)
            return None
        token, since = auth.token, max(since, auth.since)
    try:
        # A suspended member still receives; their `send` frames get the suspension's 403.
        member = await svc.accounts.authenticate(token.strip(), "read")
        _room_for_a_stream(svc, member)  # before any work for a stream that cannot open
    except Problem as problem:
        await _refuse(ws, problem, _CLOSE_CODES.get(problem.status, 4403))
        return None
    await svc.devices.seen(member)
    return member, await svc.delivery.position(member, None if latest else since)


_CLOSE_CODES = {401: 4401, 429: 4429}  # else 4403: the account may not act


def _room_for_a_stream(svc: Services, member: Member) -> None:
    """Raise the 429 of a member who has `max_streams_per_member` streams open already."""
    most = svc.settings.max_streams_per_member
    if svc.revocations.open_streams(member.id) >= most:
        raise Problem(
            429,
            "too-many-streams",
            "Too many open streams",
            f"at most {most} streams of one member may be open at once, from all their sessions "
            "and devices; close one, then connect again",
        )


async def _refuse(ws: WebSocket, problem: Problem, code: int) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(_error(problem).decode())
        await ws.close(code=code, reason=problem.title)


@router.websocket("/stream")
async def stream(ws: WebSocket) -> None:
    svc: Services = ws.app.state.keyhold
    await ws.accept()
    authenticated = await _authenticate(ws, svc)
    if authenticated is None:
        return
    member, since = authenticated
    try:
        _room_for_a_stream(svc, member)  # again: others may have opened meanwhile
    except Problem as problem:
        await _refuse(ws, problem, 4429)
        return
    conn = Connection(ws, svc, member)
    svc.revocations.watch(conn)  # counted: no await since the check above
    tasks = [asyncio.create_task(conn.pump(since)), asyncio.create_task(conn.sender())]
    for task in tasks:
        # Either ending (even by a bug) ends the connection: checked once per frame below.
        task.add_done_callback(conn.end)
    try:
        while not conn.closed:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text") or message.get("bytes")
            if raw is not None:
                await conn.handle(raw)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away, or we closed the socket after it fell behind
    finally:
        svc.revocations.unwatch(conn)
        conn.end()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await ws.close(code=1000)
