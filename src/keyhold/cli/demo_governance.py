"""Governed-access part of `keyhold demo seed`: staff, a report case, an approved warrant with
a logged content access, and a preservation hold — so that every staff workflow has data."""

from __future__ import annotations

import datetime as dt
from typing import Any

from keyhold.app import Keyhold
from keyhold.core.accounts import Member
from keyhold.governance.legal import LegalRequest
from keyhold.governance.staff import StaffMember

DEMO_STAFF = (  # username, role, region
    ("mia", "moderator", "us"),
    ("lee", "legal", "us"),
    ("lou", "legal", "us"),
    ("ada", "auditor", "us"),
)


async def _staff(svc: Keyhold, password: str, notes: list[str]) -> dict[str, StaffMember]:
    out: dict[str, StaffMember] = {}
    for username, role, region in DEMO_STAFF:
        member = await svc.governance.staff.acting_as(username)
        if member is None:
            made = await svc.governance.staff.add(username, password, role, region)
            notes.append(f"staff {username} ({role}, {region}): TOTP secret {made['totp_secret']}")
            member = StaffMember(made["id"], username, role, region)
        out[username] = member
    return out


async def seed_governance(
    svc: Keyhold,
    members: dict[str, Member],
    conversation_ids: dict[str, int],
    password: str,
    notes: list[str],
) -> None:
    gov = svc.governance
    if not {"alice", "bob"} <= set(members) or "alice-bob" not in conversation_ids:
        notes.append("governance demo skipped (needs alice, bob and their conversation)")
        return
    staff = await _staff(svc, password, notes)
    existing = await gov.case_count()
    if existing:
        notes.append(f"{existing} case(s) exist: report/legal demo cases skipped")
        return
    alice, bob = members["alice"], members["bob"]
    conversation = conversation_ids["alice-bob"]
    history = await _history(svc, alice, conversation)
    from_bob = [int(m["id"]) for m in history if m["sender"] == "bob"]
    report = await gov.reports.report(alice, conversation, from_bob[-1:], "spam", "demo: looks like spam")
    notes.append(f"report case {report['id']} (spam) assigned to moderator mia")

    year = dt.date.today().year

    def request(process: str, target: str, categories: list[str], document_name: str) -> LegalRequest:
        return LegalRequest(
            agency="Demo County Sheriff", officer="Det. R. Quinn", contact="quinn@sheriff.example",
            country="US", process=process, targets=[target], date_from=f"{year}-01-01",
            date_to=f"{year}-12-31", categories=categories, document_name=document_name,
        )  # fmt: skip

    warrant = await gov.legal.create(
        staff["lee"],
        request("search_warrant", bob.username, ["subscriber_info", "message_content"], "warrant.pdf"),
        b"%PDF-1.4 demo search warrant (not a real document)",
    )
    await gov.legal.approve(staff["lou"], warrant["id"])
    await gov.access.read_messages(
        staff["lee"],
        warrant["id"],
        [int(m["id"]) for m in history[:2]],
        "demo: review of messages named in the warrant",
    )
    notes.append(
        f"legal case {warrant['id']} (search warrant, approved by lou) with one logged content access"
    )

    hold = await gov.legal.create(
        staff["lee"],
        request("preservation", alice.username, [], "preservation-letter.pdf"),
        b"%PDF-1.4 demo preservation letter (not a real document)",
    )
    await gov.legal.approve(staff["lou"], hold["id"])
    notes.append(f"legal case {hold['id']}: preservation hold on alice for 90 days")


async def _history(svc: Keyhold, member: Member, conversation_id: int) -> list[dict[str, Any]]:
    return list((await svc.conversations.history(member, conversation_id, None, None, 50))["items"])
