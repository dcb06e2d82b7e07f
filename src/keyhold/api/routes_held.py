"""Staff routes for messages the scanning pipeline held (`governance.held`): the queue of a
moderator's region, and release or refusal. Their content is read like any report case's,
through `/staff/reports/{case_id}/content` (logged)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import Field

from keyhold.api.deps import CurrentStaff
from keyhold.api.schemas import MAX_ID, Body, MultilineText
from keyhold.governance.held import HeldMessages

router = APIRouter(prefix="/staff/held")
CaseId = Annotated[int, Path(ge=1, le=MAX_ID)]


def held_messages(request: Request) -> HeldMessages:
    held: HeldMessages = request.app.state.keyhold.held
    return held


Held = Annotated[HeldMessages, Depends(held_messages)]


class ReviewBody(Body):
    note: Annotated[MultilineText, Field(max_length=1000)] = ""


@router.get("", summary="Held messages of my region awaiting review (their cases; no content)")
async def list_held(
    staff: CurrentStaff,
    held: Held,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    return await held.list_held(staff, after, limit)


@router.get("/{case_id}", summary="A held message's case, with where its review stands")
async def get_held(case_id: CaseId, staff: CurrentStaff, held: Held) -> dict[str, Any]:
    return await held.get(staff, case_id)


@router.post(
    "/{case_id}/release", summary="Release a held message: its members get it now (decides the case)"
)
async def release(
    case_id: CaseId, staff: CurrentStaff, held: Held, body: ReviewBody | None = None
) -> dict[str, Any]:
    return await held.release(staff, case_id, body.note if body else "")


@router.post(
    "/{case_id}/refuse", summary="Refuse a held message: it is deleted, its sender told (decides the case)"
)
async def refuse(
    case_id: CaseId, staff: CurrentStaff, held: Held, body: ReviewBody | None = None
) -> dict[str, Any]:
    return await held.refuse(staff, case_id, body.note if body else "")
