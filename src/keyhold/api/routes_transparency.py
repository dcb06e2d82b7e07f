"""The access log in public: signed tree heads, proofs; a member's own entries; reports.

`/transparency/sth`, `/key` and the proofs are public: they reveal hashes only. Entries are
shown to auditors whole, and to a member only where they concern that member (with the
other members' parts hidden behind salted hashes).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import HTMLResponse

from keyhold.api.deps import CurrentStaff, Gov, OptionalStaff, ReadingMember, RestrictedMember
from keyhold.api.limits import Reporter
from keyhold.api.schemas import MAX_ID, AppealBody, ReportBody, Text
from keyhold.core.errors import invalid
from keyhold.governance.reports import Revealed
from keyhold.governance.transparency import render_html

router = APIRouter()
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


@router.get("/transparency/proof/inclusion", summary="Inclusion proof of entry `index` in the tree of `size`")
async def inclusion(gov: Gov, index: Size, size: Size) -> dict[str, Any]:
    if not 0 <= index < size <= gov.committed_size:
        raise invalid(f"need 0 <= index < size <= {gov.committed_size}")
    return {"index": index, "size": size, "proof": [h.hex() for h in gov.log.inclusion_proof(index, size)]}


@router.get("/transparency/proof/consistency", summary="Consistency proof between two tree sizes")
async def consistency(gov: Gov, first: Size, second: Size) -> dict[str, Any]:
    if not 0 <= first <= second <= gov.committed_size:
        raise invalid(f"need 0 <= first <= second <= {gov.committed_size}")
    return {
        "first": first,
        "second": second,
        "proof": [h.hex() for h in gov.log.consistency_proof(first, second)],
    }


@router.get("/transparency/entries", summary="Whole log entries (auditors)")
async def entries(
    staff: CurrentStaff, gov: Gov, start: Size = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    return await gov.log_entries(staff, start, limit)


@router.get("/account/access-events", summary="Staff access to my data, each with an inclusion proof")
async def my_access_events(member: ReadingMember, gov: Gov) -> dict[str, Any]:
    return await gov.access_events(member)


@router.get(
    "/account/standing",
    summary="My active strikes, suspension or ban, the next step and moderation notices (open while "
    "suspended or banned)",
)
async def my_standing(member: RestrictedMember, gov: Gov) -> dict[str, Any]:
    return await gov.standing(member)


@router.post("/reports", status_code=201, summary="Report messages of one of my conversations")
async def report(body: ReportBody, member: Reporter, gov: Gov) -> dict[str, Any]:
    revealed = None
    if body.franking is not None:
        f = body.franking
        revealed = Revealed(f.message_id, f.content, f.franking_key, f.tag)
    case = await gov.reports.report(
        member, body.conversation_id, body.message_ids, body.category, body.comment, revealed
    )
    return {
        "id": case["id"],
        "status": case["status"],
        "category": case["details"]["category"],
        "verified_sender": bool(case["details"].get("verified_sender")),
    }


@router.post(
    "/reports/{case_id}/appeal", status_code=204, summary="Appeal a moderation decision about me (once)"
)
async def appeal(
    case_id: Annotated[int, Path(ge=1, le=MAX_ID)], body: AppealBody, member: RestrictedMember, gov: Gov
) -> Response:
    await gov.reports.appeal(member, case_id, body.statement)
    return Response(status_code=204)


REPORT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


@router.get(
    "/transparency/report",
    summary="Transparency report for a period (e.g. 2026-H1), computed from the log: public once the "
    "period has ended, to auditors before",
)
async def transparency_report(
    viewer: OptionalStaff,
    gov: Gov,
    period: Annotated[Text, Query(min_length=4, max_length=7, pattern=r"^\d{4}(-H[12]|-Q[1-4])?$")],
    format: Annotated[Text, Query(pattern="^(json|html)$")] = "json",
) -> Any:
    report = await gov.transparency_report(period, viewer)
    if format == "html":
        # A page on the app's own origin: no script, no frames, nothing fetched (its style is
        # inline, its charts are inline SVG).
        return HTMLResponse(render_html(report), headers={"content-security-policy": REPORT_POLICY})
    return report
