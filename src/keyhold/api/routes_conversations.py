"""Conversations, messages, receipts and attachments."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError

from keyhold.api.deps import CurrentMember, ReadingMember, Service
from keyhold.api.limits import ConversationStarter, MessageSender, refund
from keyhold.api.schemas import (
    MAX_ID,
    AddMembersBody,
    ReceiptBody,
    RenameBody,
    RoleBody,
    SendBody,
    StartConversationBody,
    Text,
    TimerBody,
)
from keyhold.core.errors import invalid
from keyhold.core.messages import SendRequest

router = APIRouter()
ConversationId = Annotated[int, Path(ge=1, le=MAX_ID)]
MessageId = Annotated[int, Path(ge=1, le=MAX_ID)]
Cursor = Annotated[int | None, Query(ge=0, le=2**62)]
UsernamePath = Annotated[Text, Path(min_length=1, max_length=64)]


@router.post("/conversations", summary="Start a conversation (an existing 1:1 is returned, 200)")
async def start(
    body: StartConversationBody, member: ConversationStarter, svc: Service, response: Response, request: Request
) -> dict[str, Any]:
    view, created = await svc.conversations.start(
        member, body.members, body.encryption, body.title, body.kind
    )
    response.status_code = 201 if created else 200
    if not created:  # the 1:1 existed: no new conversation to count
        refund(svc, request)
    return view


@router.get("/conversations", summary="My conversations, most recent activity first")
async def list_mine(
    member: ReadingMember,
    svc: Service,
    before: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    return await svc.conversations.list_mine(member, before, limit)


@router.get("/conversations/{conversation_id}", summary="One of my conversations")
async def get(conversation_id: ConversationId, member: ReadingMember, svc: Service) -> dict[str, Any]:
    return await svc.conversations.get(member, conversation_id)


@router.patch("/conversations/{conversation_id}", summary="Rename a group (its owner and admins)")
async def rename(
    conversation_id: ConversationId, body: RenameBody, member: CurrentMember, svc: Service
) -> dict[str, Any]:
    return await svc.groups.rename(member, conversation_id, body.title)


@router.post("/conversations/{conversation_id}/members", summary="Add members to a group (its owner and admins)")
async def add_members(
    conversation_id: ConversationId, body: AddMembersBody, member: CurrentMember, svc: Service
) -> dict[str, Any]:
    return await svc.groups.add(member, conversation_id, body.members)


@router.delete("/conversations/{conversation_id}/members/me", status_code=204, summary="Leave a group")
async def leave(conversation_id: ConversationId, member: CurrentMember, svc: Service) -> Response:
    await svc.groups.leave(member, conversation_id)
    return Response(status_code=204)


@router.delete(
    "/conversations/{conversation_id}/members/{username}",
    summary="Remove a member from a group (owner and admins; an admin only by the owner)",
)
async def remove_member(
    conversation_id: ConversationId, username: UsernamePath, member: CurrentMember, svc: Service
) -> dict[str, Any]:
    return await svc.groups.remove(member, conversation_id, username)


@router.put(
    "/conversations/{conversation_id}/timer",
    summary="Disappearing messages: delete each message sent from now on this many seconds after it was sent (null: off)",
)
async def set_timer(
    conversation_id: ConversationId, body: TimerBody, member: CurrentMember, svc: Service
) -> dict[str, Any]:
    return await svc.conversations.set_timer(member, conversation_id, body.seconds)


@router.put(
    "/conversations/{conversation_id}/members/{username}/role",
    summary="Make a member admin (owner and admins) or an admin member again (owner)",
)
async def set_role(
    conversation_id: ConversationId, username: UsernamePath, body: RoleBody, member: CurrentMember, svc: Service
) -> dict[str, Any]:
    return await svc.groups.set_role(member, conversation_id, username, body.role)


@router.get("/conversations/{conversation_id}/messages", summary="History, paginated by message id")
async def history(
    conversation_id: ConversationId,
    member: ReadingMember,
    svc: Service,
    before: Cursor = None,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    if before is not None and after is not None:
        raise invalid("give either before or after, not both")
    return await svc.conversations.history(member, conversation_id, before, after, limit)


@router.post("/conversations/{conversation_id}/messages", status_code=201, summary="Send a message")
async def send(
    conversation_id: ConversationId, body: SendBody, member: MessageSender, svc: Service
) -> dict[str, Any]:
    request = SendRequest(
        member.id,
        member.username,
        conversation_id,
        body.text,
        body.idempotency_key,
        body.attachment_id,
        member.session,
        encrypted=body.encrypted,
        device_id=member.device_id,
        franking=body.franking,
    )
    return await svc.messages.send(request)


@router.delete("/messages/{message_id}", summary="Delete a message for everyone (a tombstone stays)")
async def delete_message(message_id: MessageId, member: CurrentMember, svc: Service) -> dict[str, Any]:
    return await svc.messages.delete_for_everyone(member.id, message_id)


@router.post(
    "/conversations/{conversation_id}/receipts", summary="Mark messages delivered or read up to an id"
)
async def receipt(
    conversation_id: ConversationId, body: ReceiptBody, member: ReadingMember, svc: Service
) -> dict[str, bool]:
    changed = await svc.conversations.receipt(member, conversation_id, body.type, body.message_id)
    return {"changed": changed}


FILENAME_HEADER = "Keyhold-Filename"
_FILENAME = TypeAdapter(Annotated[Text, Field(min_length=1, max_length=200)])


def upload_filename(request: Request, encoded: str | None) -> str | None:
    """The file name of an upload: the `Keyhold-Filename` header, percent-encoded UTF-8.

    Never the query string: proxies and access logs keep URLs, and a file's name can say as much
    as the file (a name in a `standard` conversation is kept under the region's key like the
    file; one in a URL would be written down in plaintext along the way)."""
    if "filename" in request.query_params:
        raise _refused(
            ("query", "filename"),
            f"send the file name in the {FILENAME_HEADER} header (percent-encoded UTF-8), not in the URL",
        )
    if encoded is None:
        return None
    try:
        # Not ASCII: raw bytes, which HTTP headers carry as Latin-1 (UTF-8 would read as "cafÃ©").
        name = unquote(encoded, errors="strict") if encoded.isascii() else None
    except UnicodeDecodeError:
        name = None
    if name is None:
        raise _refused(("header", FILENAME_HEADER), "must be percent-encoded UTF-8 (ASCII only)")
    try:
        return _FILENAME.validate_python(name)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("header", FILENAME_HEADER)} for error in exc.errors(include_input=False)]
        ) from None


def _refused(loc: tuple[str, str], why: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": why}])


@router.post(
    "/conversations/{conversation_id}/attachments",
    status_code=201,
    summary="Upload an attachment (raw body; the file name in the `Keyhold-Filename` header, required in standard conversations, ignored in e2ee ones); then send a message with its id",
)
async def upload(
    conversation_id: ConversationId,
    request: Request,
    member: CurrentMember,
    svc: Service,
    encoded_filename: Annotated[
        Text | None,
        Header(
            alias=FILENAME_HEADER,
            max_length=2400,  # 200 characters of up to 4 UTF-8 bytes each, percent-encoded
            description="The file's name, percent-encoded UTF-8 (`plan%20v2.pdf`)",
        ),
    ] = None,
    content_type: Annotated[Text, Header(max_length=200)] = "application/octet-stream",
) -> dict[str, Any]:
    filename = upload_filename(request, encoded_filename)
    data = await request.body()
    return await svc.messages.upload(member.id, conversation_id, filename, content_type, data)


@router.get("/attachments/{attachment_id}", summary="Download an attachment of one of my conversations")
async def download(
    attachment_id: Annotated[Text, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")],
    member: ReadingMember,
    svc: Service,
) -> Response:
    meta, data = await svc.messages.download(member.id, attachment_id)
    return attachment_response(meta["filename"] or "encrypted.bin", meta["content_type"], data)


# Types a browser may show inline: raster images, which run no script. Everything else (HTML,
# SVG, scripts, PDF...) is served as bytes to save, whatever type its uploader claimed.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"})


def attachment_response(filename: str, content_type: str, data: bytes) -> Response:
    declared = content_type.split(";", 1)[0].strip().lower()
    inline = declared in INLINE_TYPES
    # RFC 6266/5987: a quoted UTF-8 file name can carry any character without header injection.
    disposition = f"{'inline' if inline else 'attachment'}; filename*=UTF-8''{quote(filename, safe='')}"
    return Response(
        data,
        media_type=declared if inline else "application/octet-stream",
        headers={
            "Content-Disposition": disposition,
            "X-Content-Type-Options": "nosniff",
            # Even if a browser were talked into rendering it: no script, no same-origin access.
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )
