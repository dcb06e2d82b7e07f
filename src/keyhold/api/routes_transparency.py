"""The access log in public: signed tree heads, proofs; a member's own entries; reports.

`/transparency/sth`, `/key` and the proofs are public: they reveal hashes only. Entries are
shown to auditors whole, and to a member only where they concern that member (with the
other members' parts hidden behind salted hashes).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse

from keyhold.api.deps import CurrentMember, CurrentStaff, Gov, RestrictedMember
from keyhold.api.schemas import MAX_ID, AppealBody, ReportBody, Text
from keyhold.core.errors import Problem, forbidden, invalid
from keyhold.governance.accesslog import subject_view
from keyhold.governance.transparency import build_report, period_bounds, render_html
from keyhold.store import accesslog as log_store

router = APIRouter()
AUDITORS = ("auditor", "admin")
Size = Annotated[int, Query(ge=0, le=MAX_ID)]


@router.get("/transparency/sth", summary="The newest signed tree head of the access log")
async def sth(gov: Gov) -> dict[str, Any]:
    head = gov.log.head
    if head is None:
        return {"size": 0, "root": None, "public_key": gov.signer.public_key_bytes.hex()}
    return head.to_json(gov.signer.public_key_bytes)


@router.get("/transparency/key", summary="The service's Ed25519 public key (hex)")
async def key(gov: Gov) -> dict[str, str]:
    return {"algorithm": "Ed25519", "public_key": gov.signer.public_key_bytes.hex()}


def _committed_size(gov: Gov) -> int:
    return gov.log.head.size if gov.log.head else 0


@router.get("/transparency/proof/inclusion", summary="Inclusion proof of entry `index` in the tree of `size`")
async def inclusion(gov: Gov, index: Size, size: Size) -> dict[str, Any]:
    if not 0 <= index < size <= _committed_size(gov):
        raise invalid(f"need 0 <= index < size <= {_committed_size(gov)}")
    return {"index": index, "size": size, "proof": [h.hex() for h in gov.log.inclusion_proof(index, size)]}


@router.get("/transparency/proof/consistency", summary="Consistency proof between two tree sizes")
async def consistency(gov: Gov, first: Size, second: Size) -> dict[str, Any]:
    if not 0 <= first <= second <= _committed_size(gov):
        raise invalid(f"need 0 <= first <= second <= {_committed_size(gov)}")
    return {
        "first": first,
        "second": second,
        "proof": [h.hex() for h in gov.log.consistency_proof(first, second)],
    }


@router.get("/transparency/entries", summary="Whole log entries (auditors)")
async def entries(
    staff: CurrentStaff, gov: Gov, start: Size = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    if staff.role not in AUDITORS:
        raise forbidden("log entries are for auditors")
    end = min(start + limit, _committed_size(gov))
    async with gov.svc.engine.connect() as conn:
        rows = await log_store.entries(conn, start, end)
    return {"items": [{"index": r.idx, "entry": r.entry.decode()} for r in rows], "next_start": end}


@router.get("/account/access-events", summary="Staff access to my data, each with an inclusion proof")
async def my_access_events(member: CurrentMember, gov: Gov) -> dict[str, Any]:
    return await subject_view(gov.svc.engine, gov.log, member.id)


@router.post("/reports", status_code=201, summary="Report messages of one of my conversations")
async def report(body: ReportBody, member: CurrentMember, gov: Gov) -> dict[str, Any]:
    case = await gov.reports.report(
        member, body.conversation_id, body.message_ids, body.category, body.comment
    )
    return {"id": case["id"], "status": case["status"], "category": case["details"]["category"]}


@router.post(
    "/reports/{case_id}/appeal", status_code=204, summary="Appeal a moderation decision about me (once)"
)
async def appeal(
    case_id: Annotated[int, Path(ge=1, le=MAX_ID)], body: AppealBody, member: RestrictedMember, gov: Gov
) -> Response:
    await gov.reports.appeal(member, case_id, body.statement)
    return Response(status_code=204)


@router.get(
    "/transparency/report",
    summary="Transparency report for a period (e.g. 2026-H1), computed from the log: public once the "
    "period has ended, to auditors before",
)
async def transparency_report(
    request: Request,
    gov: Gov,
    period: Annotated[Text, Query(min_length=4, max_length=7, pattern=r"^\d{4}(-H[12]|-Q[1-4])?$")],
    format: Annotated[Text, Query(pattern="^(json|html)$")] = "json",
) -> Any:
    try:
        _start, end = period_bounds(period)
    except ValueError as exc:
        raise invalid(str(exc)) from exc
    if end > dt.datetime.now(dt.UTC).date():
        # A report of a running period would change with every new case: polling it would
        # show legal requests and holds as they happen. Auditors see it; the public waits.
        await _require_auditor(request, gov, end)
    try:
        report = await build_report(gov.svc.engine, period, gov.log.head)
    except ValueError as exc:  # the stored log does not match its signed head
        raise Problem(500, "integrity", "Access log does not verify", str(exc)) from exc
    if format == "html":
        return HTMLResponse(render_html(report))
    return report


async def _require_auditor(request: Request, gov: Gov, period_end: dt.date) -> None:
    closed = Problem(
        403,
        "period-not-ended",
        "Period not ended",
        f"a period's report is public once the period has ended (this one ends {period_end.isoformat()}); "
        "until then only auditors can read it",
    )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise closed
    staff = await gov.staff.authenticate(token.strip())
    if staff.role not in AUDITORS:
        raise closed
