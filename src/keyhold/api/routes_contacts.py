"""Who may message me: blocks, my DM audience, message requests, guardian links.

A suspended member can still read these and protect themselves (block, delete a request, end a
guardian link); what lets them reach others (accepting a request, widening their audience,
linking) waits for the suspension to end."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response

from keyhold.api.deps import CurrentMember, ReadingMember, Service
from keyhold.api.schemas import MAX_ID, Body, Text

router = APIRouter()
UsernamePath = Annotated[Text, Path(min_length=1, max_length=64)]
ConversationId = Annotated[int, Path(ge=1, le=MAX_ID)]
Cursor = Annotated[int | None, Query(ge=0, le=2**62)]


class AudienceBody(Body):
    dm_audience: Literal["everyone", "friends", "no_one"]


class GuardianAudienceBody(Body):
    dm_audience: Literal["friends", "no_one"]


@router.get("/blocks", summary="Members I block")
async def blocks(member: ReadingMember, svc: Service) -> dict[str, Any]:
    return await svc.contacts.blocked(member)


@router.put(
    "/blocks/{username}",
    status_code=204,
    summary="Block a member: no messages, conversations, requests or group adds either way; "
    "following ends both ways",
)
async def block(username: UsernamePath, member: ReadingMember, svc: Service) -> Response:
    await svc.contacts.block(member, username)
    return Response(status_code=204)


@router.delete("/blocks/{username}", status_code=204, summary="Unblock (restores nothing retroactively)")
async def unblock(username: UsernamePath, member: ReadingMember, svc: Service) -> Response:
    await svc.contacts.unblock(member, username)
    return Response(status_code=204)


@router.get("/account/messaging", summary="Who may start a conversation with me (in force, and my choice)")
async def messaging(member: ReadingMember, svc: Service) -> dict[str, Any]:
    return await svc.contacts.settings(member)


@router.put("/account/messaging", summary="Set who may start a conversation with me")
async def set_messaging(body: AudienceBody, member: CurrentMember, svc: Service) -> dict[str, Any]:
    return await svc.contacts.set_audience(member, body.dm_audience)


@router.get("/requests", summary="My message requests: conversations from non-friends I have not accepted")
async def requests(
    member: ReadingMember,
    svc: Service,
    before: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    return await svc.conversations.list_mine(member, before, limit, requests=True)


@router.post("/requests/{conversation_id}/accept", status_code=204, summary="Accept a message request")
async def accept(conversation_id: ConversationId, member: CurrentMember, svc: Service) -> Response:
    await svc.contacts.accept(member, conversation_id)
    return Response(status_code=204)


@router.delete(
    "/requests/{conversation_id}", status_code=204, summary="Delete a message request (its sender is not told)"
)
async def decline(conversation_id: ConversationId, member: ReadingMember, svc: Service) -> Response:
    await svc.contacts.decline(member, conversation_id, block=False)
    return Response(status_code=204)


@router.post(
    "/requests/{conversation_id}/block", status_code=204, summary="Delete a message request and block its sender"
)
async def decline_and_block(conversation_id: ConversationId, member: ReadingMember, svc: Service) -> Response:
    await svc.contacts.decline(member, conversation_id, block=True)
    return Response(status_code=204)


@router.get("/guardian/links", summary="My guardian links (as guardian or as teen) and what a guardian sees")
async def guardian_links(member: ReadingMember, svc: Service) -> dict[str, Any]:
    return await svc.guardians.links(member)


@router.put(
    "/guardian/links/{username}",
    summary="Ask for a guardian link with a member, or accept theirs (active once both did)",
)
async def guardian_link(username: UsernamePath, member: CurrentMember, svc: Service) -> dict[str, Any]:
    return await svc.guardians.link(member, username)


@router.delete("/guardian/links/{username}", status_code=204, summary="End a guardian link (either side)")
async def guardian_unlink(username: UsernamePath, member: ReadingMember, svc: Service) -> Response:
    await svc.guardians.unlink(member, username)
    return Response(status_code=204)


@router.get(
    "/guardian/teens/{username}",
    summary="A linked teen's DM settings and conversation partners (never content)",
)
async def guardian_teen(username: UsernamePath, member: CurrentMember, svc: Service) -> dict[str, Any]:
    return await svc.guardians.teen(member, username)


@router.put("/guardian/teens/{username}/messaging", summary="Set a linked teen's DMs to no_one (off) or friends")
async def guardian_set(
    username: UsernamePath, body: GuardianAudienceBody, member: CurrentMember, svc: Service
) -> dict[str, Any]:
    return await svc.guardians.set_teen_audience(member, username, body.dm_audience)
