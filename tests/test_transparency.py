"""Transparency reports: every figure is a count over access-log entries, so an auditor can
recompute it. Unit tests of `compute_report` on hand-made entries, then a real server whose
report (from `keyhold transparency report`) is checked against counts recomputed here from the
raw entries an auditor fetches over the API."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from conftest import TLS, Server, keyhold_cli, new_member, start_server, stop_server
from keyhold.crypto.merkle import leaf_hash, root_from_leaf_hashes
from keyhold.governance.transparency import compute_report, period_bounds, render_html
from staff_helpers import STAFF_PASSWORD, create_staff

H2_START = int(dt.datetime(2026, 7, 1, tzinfo=dt.UTC).timestamp() * 1000)
H2_END = int(dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def entry(kind: str, time_ms: int, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "v": 1,
        "idx": 0,
        "type": kind,
        "time": "",
        "time_ms": time_ms,
        "details": details,
        "subjects": [],
    }


def legal(case_id: int) -> dict[str, Any]:
    return {"id": case_id, "kind": "legal"}


def report_case(case_id: int) -> dict[str, Any]:
    return {"id": case_id, "kind": "report"}


def opened_legal(case_id: int, t: int, country: str, process: str, accounts: int) -> dict[str, Any]:
    details = {"case": legal(case_id), "region": "us", "country": country, "process": process}
    return entry("case_opened", t, {**details, "accounts": accounts, "categories": ["subscriber_info"]})


def sample_log() -> list[dict[str, Any]]:
    t = H2_START + 1000
    return [
        # Before the period: never counted.
        opened_legal(1, H2_START - 1, "US", "subpoena", 50),
        entry("disclosure_produced", H2_START - 1, {"case": legal(1), "accounts": 50}),
        # Legal requests in the period.
        opened_legal(2, H2_START, "US", "search_warrant", 2),  # first millisecond counts
        entry("case_approved", t, {"case": legal(2), "process": "search_warrant"}),
        entry("content_accessed", t, {"case": legal(2), "staff": 7, "messages": [10, 11, 12]}),
        entry("disclosure_produced", t, {"case": legal(2), "accounts": 2}),
        entry("disclosure_produced", t + 1, {"case": legal(2), "accounts": 2}),  # a second package
        opened_legal(3, t, "US", "subpoena", 1),
        entry("case_refused", t, {"case": legal(3), "process": "subpoena", "reason": "x", "by": "rules"}),
        opened_legal(4, t, "DE", "mlat", 3),
        entry("case_refused", t, {"case": legal(4), "process": "mlat", "reason": "x", "by": "staff"}),
        opened_legal(5, t, "US", "emergency", 1),
        entry("case_approved", t, {"case": legal(5), "process": "emergency"}),
        entry("disclosure_produced", t, {"case": legal(5), "accounts": 1}),
        opened_legal(6, t, "US", "preservation", 4),
        entry("case_approved", t, {"case": legal(6), "process": "preservation"}),
        entry("preservation_set", t, {"case": legal(6), "accounts": 4, "extended": False}),
        entry("preservation_set", t, {"case": legal(6), "accounts": 4, "extended": True}),
        entry("preservation_released", t, {"case": legal(6), "accounts": 4}),
        # A disclosure in the period for a request of an earlier period: a package, not a share.
        entry("disclosure_produced", t, {"case": legal(1), "accounts": 50}),
        # Reports.
        entry("case_opened", t, {"case": report_case(20), "category": "harassment", "messages": 2}),
        entry("case_opened", t, {"case": report_case(21), "category": "spam", "messages": 1}),
        entry("case_opened", t, {"case": report_case(22), "category": "harassment", "messages": 1}),
        entry("content_accessed", t, {"case": report_case(20), "messages": [1, 2, 3, 4]}),
        entry("content_accessed", t, {"case": report_case(20), "messages": [5]}),
        entry("content_accessed", t, {"case": report_case(22), "messages": [6, 7]}),
        entry("case_decided", t, {"case": report_case(20), "action": "warn", "appeal": False}),
        entry("case_decided", t, {"case": report_case(21), "action": "no_violation", "appeal": False}),
        entry("case_decided", t, {"case": report_case(22), "action": "warn", "appeal": False}),
        entry("case_decided", t, {"case": report_case(20), "action": "overturned", "appeal": True}),
        entry("case_decided", t, {"case": report_case(22), "action": "warn", "appeal": True}),
        entry("notification_sent", t, {"about": legal(2), "members": 2}),
        entry("notification_deferred", t, {"about": legal(5), "members": 1, "until": "2027-01-01"}),
        # The last millisecond counts; the next one is the next period's.
        entry("case_opened", H2_END - 1, {"case": report_case(23), "category": "scam", "messages": 1}),
        entry("case_opened", H2_END, {"case": report_case(24), "category": "scam", "messages": 1}),
        opened_legal(7, H2_END, "US", "subpoena", 9),
    ]


def test_every_figure_of_a_hand_made_log() -> None:
    log = sample_log()
    r = compute_report(log, "2026-H2", tree_size=len(log), root="ab" * 32)
    assert (r["period"], r["from"], r["to"]) == ("2026-H2", "2026-07-01", "2026-12-31")
    assert r["window_ms"] == {"start": H2_START, "end": H2_END}
    assert (r["tree_size"], r["root"]) == (len(log), "ab" * 32)
    assert r["entries_considered"] == len(log) - 4
    assert sum(r["entries_by_type"].values()) == r["entries_considered"]

    lg = r["legal"]
    assert lg["requests"] == 5
    assert lg["by_country"] == {"US": 4, "DE": 1}
    assert lg["by_process"] == {
        "subpoena": 1,
        "court_order": 0,
        "search_warrant": 1,
        "emergency": 1,
        "preservation": 1,
        "mlat": 1,
    }
    assert lg["accounts_specified"] == 2 + 1 + 3 + 1 + 4
    assert lg["approved"] == 3
    assert lg["with_data_disclosed"] == {"count": 2, "fraction": 0.4, "percent": 40.0}  # cases 2 and 5
    assert lg["disclosures"] == {"packages": 4, "cases": 3}
    assert lg["refused"] == {"total": 2, "by_rules": 1, "by_staff": 1}
    assert lg["emergency"] == {"requests": 1, "approved": 1}
    assert lg["preservation"] == {
        "requests": 1,
        "holds_set": 1,
        "extensions": 1,
        "released": 1,
        "accounts_preserved": 4,
    }

    rp = r["reports"]
    assert rp["cases"] == 4 and rp["messages_reported"] == 5
    assert {k: v for k, v in rp["by_category"].items() if v} == {"harassment": 2, "spam": 1, "scam": 1}
    assert list(rp["by_category"])[:2] == ["harassment", "hate"]  # every category, in a fixed order
    assert rp["decisions"]["total"] == 3
    assert {k: v for k, v in rp["decisions"]["by_action"].items() if v} == {"warn": 2, "no_violation": 1}
    assert rp["appeals"] == {"decided": 2, "upheld": 1, "overturned": 1}

    ca = r["content_access"]
    assert (ca["accesses"], ca["messages"]) == (4, 10)
    assert ca["by_case_type"] == {
        "report": {"accesses": 3, "messages": 7, "cases": 2},
        "legal": {"accesses": 1, "messages": 3, "cases": 1},
    }
    assert r["notifications"] == {"sent": 1, "deferred": 1}


def test_other_periods_split_the_same_log() -> None:
    log = sample_log()
    h1 = compute_report(log, "2026-H1")
    assert h1["entries_considered"] == 2 and h1["legal"]["requests"] == 1
    assert h1["legal"]["with_data_disclosed"]["percent"] == 100.0
    assert h1["tree_size"] == len(log) and h1["root"] is None
    q3 = compute_report(log, "2026-Q3")
    assert q3["entries_considered"] == compute_report(log, "2026-H2")["entries_considered"] - 1  # Dec 31
    year = compute_report(log, "2026")
    assert year["entries_considered"] == len(log) - 2
    nxt = compute_report(log, "2027-Q1")
    assert nxt["legal"]["by_process"]["subpoena"] == 1 and nxt["reports"]["by_category"]["scam"] == 1


def test_an_empty_period() -> None:
    r = compute_report([], "2025")
    assert r["legal"]["requests"] == 0
    assert r["legal"]["with_data_disclosed"] == {"count": 0, "fraction": None, "percent": None}
    assert r["content_access"] == {"accesses": 0, "messages": 0, "by_case_type": {}}
    page = render_html(r)
    assert "None in this period." in page and "—" in page


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("2026", "2026-01-01", "2027-01-01"),
        ("2026-H1", "2026-01-01", "2026-07-01"),
        ("2026-H2", "2026-07-01", "2027-01-01"),
        ("2026-Q1", "2026-01-01", "2026-04-01"),
        ("2026-Q3", "2026-07-01", "2026-10-01"),
        ("2026-Q4", "2026-10-01", "2027-01-01"),
    ],
)
def test_period_bounds(period: str, start: str, end: str) -> None:
    assert tuple(d.isoformat() for d in period_bounds(period)) == (start, end)


@pytest.mark.parametrize("period", ["2026-H3", "2026-Q5", "26-H1", "2026H2", "2026-h2", "", "2026-07"])
def test_bad_periods_are_refused(period: str) -> None:
    with pytest.raises(ValueError, match="period must look like"):
        period_bounds(period)


def test_html_escapes_log_text_and_loads_nothing() -> None:
    log = [opened_legal(1, H2_START, "<b>X</b>", '"><script>alert(1)</script>', 1)]
    page = render_html(compute_report(log, "2026-H2", root="00" * 32))
    assert "<script" not in page and "<b>X" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;X&lt;/b&gt;" in page
    assert page.count("<svg") >= 2
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=""", page)


# -- end to end --------------------------------------------------------------------------------

DOCUMENT = base64.b64encode(b"%PDF-1.4 signed by a judge").decode()


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def current_half() -> str:
    today = dt.datetime.now(dt.UTC)
    return f"{today.year}-H{1 if today.month <= 6 else 2}"


def recompute(entries: list[dict[str, Any]], start_ms: int, end_ms: int) -> dict[str, Any]:
    """The auditor's side: the published definitions, written again independently."""
    es = [e for e in entries if start_ms <= e["time_ms"] < end_ms]

    def of(kind: str, case_kind: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in es
            if e["type"] == kind and (case_kind is None or e["details"]["case"]["kind"] == case_kind)
        ]

    opened = of("case_opened", "legal")
    disclosed = {e["details"]["case"]["id"] for e in of("disclosure_produced", "legal")}
    opened_ids = {e["details"]["case"]["id"] for e in opened}
    decided = of("case_decided")
    accessed = of("content_accessed")
    kinds = {e["details"]["case"]["kind"] for e in accessed}
    return {
        "entries_considered": len(es),
        "requests": len(opened),
        "by_country": Counter(e["details"]["country"] for e in opened),
        "by_process": Counter(e["details"]["process"] for e in opened),
        "accounts_specified": sum(e["details"]["accounts"] for e in opened),
        "disclosed": len(opened_ids & disclosed),
        "refused_rules": sum(1 for e in of("case_refused", "legal") if e["details"]["by"] == "rules"),
        "refused_staff": sum(1 for e in of("case_refused", "legal") if e["details"]["by"] == "staff"),
        "preservation_sets": Counter(e["details"]["extended"] for e in of("preservation_set")),
        "report_categories": Counter(e["details"]["category"] for e in of("case_opened", "report")),
        "actions": Counter(e["details"]["action"] for e in decided if not e["details"]["appeal"]),
        "appeals": Counter(e["details"]["action"] == "overturned" for e in decided if e["details"]["appeal"]),
        "accesses": {
            k: (
                sum(1 for e in accessed if e["details"]["case"]["kind"] == k),
                sum(e["details"]["messages"] for e in accessed if e["details"]["case"]["kind"] == k),
            )
            for k in kinds
        },
    }


def nonzero(figures: dict[str, int]) -> Counter[str]:
    return Counter({k: v for k, v in figures.items() if v})


async def make_activity(server: Server, secrets: dict[str, str]) -> None:
    """Reports, decisions, appeals and legal cases of every kind, through the public API."""
    api = server.url + "/api/v1"
    async with httpx.AsyncClient(verify=TLS, base_url=api, timeout=60) as http:
        staff: dict[str, dict[str, str]] = {}
        ids: dict[str, int] = {}
        for name, secret in secrets.items():
            body = {"username": name, "password": STAFF_PASSWORD, "totp": pyotp.TOTP(secret).now()}
            headers = {
                "Authorization": "Bearer " + ok(await http.post("/staff/sessions", json=body), 201)["token"]
            }
            staff[name] = headers
            ids[name] = ok(await http.get("/staff/me", headers=headers))["id"]
        alice, bob, carol = [await new_member(server) for _ in range(3)]
        try:
            conv = await alice.start_conversation([bob.username])
            sent = [(await bob.send(conv.id, f"line {i}")).id for i in range(12)]
            member = {c.username: {"Authorization": f"Bearer {c.token}"} for c in (alice, bob)}

            async def report(message: int, category: str) -> tuple[int, dict[str, str]]:
                body = {"conversation_id": conv.id, "message_ids": [message], "category": category}
                case = ok(await http.post("/reports", json=body, headers=member[alice.username]), 201)["id"]
                assignee = ok(await http.get(f"/staff/reports/{case}", headers=staff["mod1"]))["assigned_to"]
                return case, staff["mod1" if assignee == ids["mod1"] else "mod2"]

            async def decide(case: int, who: dict[str, str], action: str, read: bool) -> None:
                if read:
                    got = ok(await http.get(f"/staff/reports/{case}/content?reason=review", headers=who))
                    assert got["items"]
                ok(await http.post(f"/staff/reports/{case}/decision", json={"action": action}, headers=who))

            async def appeal(case: int, decided_by: dict[str, str], uphold: bool) -> None:
                body = {"statement": "this was a joke between friends"}
                assert (
                    await http.post(f"/reports/{case}/appeal", json=body, headers=member[bob.username])
                ).status_code == 204
                other = staff["mod2"] if decided_by is staff["mod1"] else staff["mod1"]
                ok(await http.post(f"/staff/reports/{case}/claim", headers=other))
                ok(
                    await http.post(
                        f"/staff/reports/{case}/appeal-decision", json={"uphold": uphold}, headers=other
                    )
                )

            c1, m1 = await report(sent[3], "harassment")
            await decide(c1, m1, "warn", read=True)
            await appeal(c1, m1, uphold=False)
            c2, m2 = await report(sent[5], "spam")
            await decide(c2, m2, "no_violation", read=False)
            c3, m3 = await report(sent[7], "harassment")
            await decide(c3, m3, "remove_message", read=True)
            await appeal(c3, m3, uphold=True)
            c4, m4 = await report(sent[9], "scam")
            ok(await http.get(f"/staff/reports/{c4}/content?reason=first look", headers=m4))  # still open

            l1, l2 = staff["legal1"], staff["legal2"]
            base = {
                "agency": "County Sheriff",
                "officer": "Det. Ray",
                "contact": "ray@sheriff.example",
                "country": "US",
                "date_from": "2020-01-01",
                "date_to": "2030-12-31",
                "document_base64": DOCUMENT,
            }

            async def legal(expect: str, **fields: Any) -> int:
                case = ok(await http.post("/staff/legal", json={**base, **fields}, headers=l1), 201)
                assert case["status"] == expect, case
                return int(case["id"])

            warrant = await legal(
                "pending",
                process="search_warrant",
                targets=[bob.username],
                categories=["message_content", "subscriber_info"],
            )
            ok(await http.post(f"/staff/legal/{warrant}/approve", headers=l2))
            ok(await http.post(f"/staff/legal/{warrant}/disclosure", headers=l2))
            await legal("refused", process="subpoena", targets=[bob.username], categories=["message_content"])
            await legal(
                "refused",
                country="DE",
                process="court_order",
                targets=[carol.username],
                categories=["subscriber_info"],
            )
            emergency = await legal(
                "pending",
                process="emergency",
                targets=[alice.username, carol.username],
                categories=["subscriber_info", "connection_logs"],
                justification="A credible threat to kill a named person tonight, reported by a witness.",
            )
            ok(await http.post(f"/staff/legal/{emergency}/approve", headers=l2))
            ok(await http.post(f"/staff/legal/{emergency}/disclosure", headers=l1))
            hold = await legal(
                "pending", process="preservation", targets=[bob.username, carol.username], categories=[]
            )
            ok(await http.post(f"/staff/legal/{hold}/approve", headers=l2))
            ok(await http.post(f"/staff/legal/{hold}/extend", headers=l1))
            denied = await legal(
                "pending", process="subpoena", targets=[alice.username], categories=["subscriber_info"]
            )
            refusal = {"reason": "the subpoena names the wrong account holder"}
            ok(await http.post(f"/staff/legal/{denied}/refuse", json=refusal, headers=l2))
            await legal(
                "pending",
                country="DE",
                process="mlat",
                targets=[carol.username],
                categories=["subscriber_info"],
            )
        finally:
            for client in (alice, bob, carol):
                await client.close()


async def fetch_entries(url: str, secret: str) -> list[str]:
    """Every log entry, as the exact stored text, through the auditors' API."""
    async with httpx.AsyncClient(verify=TLS, base_url=url + "/api/v1", timeout=60) as http:
        body = {"username": "auditor1", "password": STAFF_PASSWORD, "totp": pyotp.TOTP(secret).now()}
        headers = {
            "Authorization": "Bearer " + ok(await http.post("/staff/sessions", json=body), 201)["token"]
        }
        entries: list[str] = []
        while True:
            page = ok(
                await http.get(f"/transparency/entries?start={len(entries)}&limit=1000", headers=headers)
            )
            if not page["items"]:
                return entries
            assert [i["index"] for i in page["items"]] == list(
                range(len(entries), len(entries) + len(page["items"]))
            )
            entries += [i["entry"] for i in page["items"]]


async def test_report_from_a_real_server_equals_the_auditors_recount(tmp_path: Path) -> None:
    home = tmp_path / "kh"
    keyhold_cli("init", "--home", str(home))
    roles = {
        "mod1": "moderator",
        "mod2": "moderator",
        "legal1": "legal",
        "legal2": "legal",
        "auditor1": "auditor",
    }
    secrets = create_staff(home, "", {name: (role, "us") for name, role in roles.items()})
    auditor = secrets.pop("auditor1")
    server = start_server(home)
    try:
        await make_activity(server, secrets)
        period = current_half()
        done = keyhold_cli(
            "transparency", "report", "--period", period, "--format", "json", "--home", str(home)
        )
        report = json.loads(done.stdout)
        raw = await fetch_entries(server.url, auditor)
        sth = ok(httpx.get(server.url + "/api/v1/transparency/sth", verify=TLS))
    finally:
        stop_server(server)

    # The report names the tree it counted; the auditor's entries hash to that signed root.
    assert report["tree_size"] == len(raw) == sth["size"]
    leaves = [leaf_hash(text.encode()) for text in raw]
    assert root_from_leaf_hashes(leaves).hex() == report["root"] == sth["root"]

    entries = [json.loads(text) for text in raw]
    want = recompute(entries, report["window_ms"]["start"], report["window_ms"]["end"])
    lg, rp, ca = report["legal"], report["reports"], report["content_access"]
    assert report["entries_considered"] == want["entries_considered"] == len(entries)
    assert lg["requests"] == want["requests"] == 7
    assert Counter(lg["by_country"]) == want["by_country"] == Counter({"US": 5, "DE": 2})
    assert nonzero(lg["by_process"]) == want["by_process"]
    assert want["by_process"] == Counter(
        {"subpoena": 2, "search_warrant": 1, "court_order": 1, "emergency": 1, "preservation": 1, "mlat": 1}
    )
    assert lg["accounts_specified"] == want["accounts_specified"] == 1 + 1 + 1 + 2 + 2 + 1 + 1
    assert lg["with_data_disclosed"]["count"] == want["disclosed"] == 2
    assert lg["with_data_disclosed"]["fraction"] == round(2 / 7, 4)
    assert lg["with_data_disclosed"]["percent"] == round(200 / 7, 1)
    assert (
        (lg["refused"]["by_rules"], lg["refused"]["by_staff"])
        == (want["refused_rules"], want["refused_staff"])
        == (2, 1)
    )
    assert lg["emergency"]["requests"] == want["by_process"]["emergency"] == 1
    assert lg["preservation"]["requests"] == want["by_process"]["preservation"] == 1
    assert lg["preservation"]["holds_set"] == want["preservation_sets"][False] == 1
    assert lg["preservation"]["extensions"] == want["preservation_sets"][True] == 1
    assert (
        nonzero(rp["by_category"])
        == want["report_categories"]
        == Counter({"harassment": 2, "spam": 1, "scam": 1})
    )
    assert nonzero(rp["decisions"]["by_action"]) == want["actions"]
    assert want["actions"] == Counter({"warn": 1, "no_violation": 1, "remove_message": 1})
    assert (
        (rp["appeals"]["overturned"], rp["appeals"]["upheld"])
        == (want["appeals"][True], want["appeals"][False])
        == (1, 1)
    )
    got_access = {k: (v["accesses"], v["messages"]) for k, v in ca["by_case_type"].items()}
    assert got_access == want["accesses"]
    assert set(got_access) == {"report", "legal"} and got_access["report"][0] == 3

    # The same report as a page: charts, and nothing loaded from anywhere.
    out = tmp_path / "report.html"
    keyhold_cli(
        "transparency",
        "report",
        "--period",
        period,
        "--format",
        "html",
        "--out",
        str(out),
        "--home",
        str(home),
    )
    page = out.read_text()
    assert page.count("<svg") >= 5 and "Legal requests by country" in page
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=""", page)
    assert report["root"] in page

    # Another period of the same log is empty; a bad period is refused.
    other = keyhold_cli(
        "transparency", "report", "--period", "2025-Q1", "--format", "json", "--home", str(home)
    )
    assert json.loads(other.stdout)["entries_considered"] == 0
    bad = keyhold_cli("transparency", "report", "--period", "2026-H3", "--home", str(home), check=False)
    assert bad.returncode != 0 and "period must look like" in bad.stderr

    # A report is only computed over entries that hash to the signed root: change one byte of
    # one stored entry and the command refuses (naming `keyhold audit verify`) instead of counting.
    with sqlite3.connect(home / "keyhold.db") as db:
        (text,) = db.execute("SELECT entry FROM access_log WHERE idx = 3").fetchone()
        db.execute(
            "UPDATE access_log SET entry = ? WHERE idx = 3", (bytes(text).replace(b'"v":1', b'"v":2'),)
        )
    tampered = keyhold_cli("transparency", "report", "--period", period, "--home", str(home), check=False)
    assert tampered.returncode != 0 and "keyhold audit verify" in " ".join(tampered.stderr.split())
