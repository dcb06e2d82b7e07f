"""Staff workflows: sign-in (password + TOTP), report cases, legal cases, governed reads.

Every route here takes a staff token (`ks_…`); a member token is refused. Content reaches
staff only through `governance.access`, under a case, after its access-log entry is durable.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from keyhold.api.deps import CurrentStaff, Gov, Token, client_address
from keyhold.api.schemas import (
    MAX_ID,
    AppealDecisionBody,
    DecisionBody,
    LegalCaseBody,
    ReadBody,
    RefuseBody,
    StaffLoginBody,
    Text,
)
from keyhold.core.errors import invalid
from keyhold.governance.legal import LegalRequest

router = APIRouter(prefix="/staff")


def page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A page of cases and the cursor of the next one (None on the last page)."""
    return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}


CaseId = Annotated[int, Path(ge=1, le=MAX_ID)]
After = Annotated[int, Query(ge=0, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=200)]
Status = Annotated[Text | None, Query(max_length=20)]


@router.post(
    "/sessions",
    status_code=201,
    summary="Staff sign-in: password and TOTP code (1 h session; throttled per address and account)",
)
async def staff_login(body: StaffLoginBody, request: Request, gov: Gov) -> dict[str, Any]:
    return await gov.staff.login(body.username, body.password, body.totp, client_address(request))


@router.delete("/sessions/current", status_code=204, summary="Staff sign-out")
async def staff_logout(_staff: CurrentStaff, token: Token, gov: Gov) -> Response:
    await gov.staff.logout(token)
    return Response(status_code=204)


@router.get("/me", summary="The signed-in staff member")
async def staff_me(staff: CurrentStaff) -> dict[str, Any]:
    return {"id": staff.id, "username": staff.username, "role": staff.role, "region": staff.region}


# -- report cases -------------------------------------------------------------------------------


@router.get("/reports", summary="Report cases of my region")
async def list_reports(
    staff: CurrentStaff, gov: Gov, after: After = 0, limit: Limit = 50, status: Status = None
) -> dict[str, Any]:
    items = await gov.reports.list_cases(staff, after, limit, status)
    return page(items, limit)


@router.get("/reports/{case_id}", summary="A report case (no content: read it through /content)")
async def get_report(case_id: CaseId, staff: CurrentStaff, gov: Gov) -> dict[str, Any]:
    return await gov.reports.get(staff, case_id)


@router.post("/reports/{case_id}/claim", summary="Take a report case (or its appeal)")
async def claim_report(case_id: CaseId, staff: CurrentStaff, gov: Gov) -> dict[str, Any]:
    return await gov.reports.claim(staff, case_id)


@router.get("/reports/{case_id}/content", summary="The reported messages and K before and after (logged)")
async def report_content(
    case_id: CaseId,
    staff: CurrentStaff,
    gov: Gov,
    reason: Annotated[Text, Query(min_length=1, max_length=500)],
) -> dict[str, Any]:
    return {"items": await gov.access.read_report_window(staff, case_id, reason)}


@router.post("/cases/{case_id}/read", summary="Read named messages under a case (each read is logged)")
async def read_messages(case_id: CaseId, body: ReadBody, staff: CurrentStaff, gov: Gov) -> dict[str, Any]:
    return {"items": await gov.access.read_messages(staff, case_id, body.message_ids, body.reason)}


@router.post("/reports/{case_id}/decision", summary="Decide a report case")
async def decide_report(case_id: CaseId, body: DecisionBody, staff: CurrentStaff, gov: Gov) -> dict[str, Any]:
    return await gov.reports.decide(
        staff, case_id, body.action, body.note, body.suspend_hours, body.hotline_reference
    )


@router.post("/reports/{case_id}/appeal-decision", summary="Decide an appeal (a different moderator)")
async def decide_appeal(
    case_id: CaseId, body: AppealDecisionBody, staff: CurrentStaff, gov: Gov
) -> dict[str, Any]:
    return await gov.reports.decide_appeal(staff, case_id, body.uphold, body.note)


# -- legal cases --------------------------------------------------------------------------------


@router.post("/legal", status_code=201, summary="Record a law-enforcement request (rules are checked now)")
async def create_legal(body: LegalCaseBody, staff: CurrentStaff, gov: Gov) -> dict[str, Any]:
    try:
        document = base64.b64decode(body.document_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid("document_base64 is not valid base64") from exc
    request = LegalRequest(**body.model_dump(exclude={"document_base64"}))
    return await gov.legal.create(staff, request, document)


@router.get("/legal", summary="Legal cases of my region")
async def list_legal(
    staff: CurrentStaff, gov: Gov, after: After = 0, limit: Limit = 50, status: Status = None
) -> dict[str, Any]:
    items = await gov.legal.list_cases(staff, after, limit, status)
    return page(items, limit)


@router.get("/legal/{case_id}", summary="A legal case")
async def get_legal(case_id: CaseId, staff: CurrentStaff, gov: Gov) -> dict[str, Any]:
    return await gov.legal.get(staff, case_id)


@router.post("/legal/{case_id}/approve", summary="Approve (four eyes: not the creator)")
async def approve_legal(case_id: CaseId, staff: CurrentStaff, gov: Gov) -> dict[str, Any]:
    return await gov.legal.approve(staff, case_id)


@router.post("/legal/{case_id}/refuse", summary="Refuse, with a reason")
async def refuse_legal(case_id: CaseId, body: RefuseBody, staff: CurrentStaff, gov: Gov) -> dict[str, Any]:
    return await gov.legal.refuse(staff, case_id, body.reason)


@router.post("/legal/{case_id}/extend", summary="Extend a preservation once by 90 days")
async def extend_legal(case_id: CaseId, staff: CurrentStaff, gov: Gov) -> dict[str, Any]:
    return await gov.legal.extend_preservation(staff, case_id)


@router.post("/legal/{case_id}/release", summary="Release a preservation hold")
async def release_legal(case_id: CaseId, staff: CurrentStaff, gov: Gov) -> dict[str, Any]:
    return await gov.legal.release(staff, case_id)


@router.post(
    "/legal/{case_id}/disclosure", summary="Build the signed disclosure package (content reads are logged)"
)
async def disclose_legal(case_id: CaseId, staff: CurrentStaff, gov: Gov) -> dict[str, Any]:
    return await gov.legal.disclose(staff, case_id)
