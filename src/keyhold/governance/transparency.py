"""Transparency reports, computed only from the access log so that anyone holding the log can
recompute every figure.

`compute_report` is pure: it counts the entries whose `time_ms` falls in the period (UTC,
start inclusive, end exclusive) by the rules in `DEFINITIONS`. `build_report` loads the entries
a signed tree head covers, checks that they hash to its root, and computes the report against
it. `render_html` makes a self-contained page (inline CSS and SVG charts, nothing fetched).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.clock import iso
from keyhold.core.signed_log import TreeHead
from keyhold.crypto.merkle import MerkleTree, leaf_hash
from keyhold.governance.legal_rules import PROCESSES
from keyhold.governance.reports import ACTIONS
from keyhold.governance.reports import CATEGORIES as REPORT_CATEGORIES
from keyhold.store import merkle_log
from keyhold.store.db import create_engine
from keyhold.store.merkle_log import ACCESS_LOG

FORMAT = "keyhold-transparency/v1"
_PERIOD = re.compile(r"(\d{4})(?:-(H[12]|Q[1-4]))?")

DEFINITIONS: dict[str, str] = {
    "period": "An entry counts when its time_ms is in [window_ms.start, window_ms.end) (UTC).",
    "legal.requests": "case_opened entries with case.kind = legal (a request refused by the rules is opened too).",
    "legal.by_country / by_process": "Those entries grouped by details.country / details.process.",
    "legal.accounts_specified": "Sum of details.accounts over those entries.",
    "legal.with_data_disclosed": "Legal case ids opened in the period that also have a disclosure_produced "
    "entry in the period, divided by legal.requests.",
    "legal.disclosures": "disclosure_produced entries (packages) and their distinct case ids.",
    "legal.refused": "case_refused entries with case.kind = legal, split by details.by (rules or staff).",
    "legal.emergency": "Legal requests with process emergency; approved = case_approved entries of that process.",
    "legal.preservation": "Legal requests with process preservation; holds_set / extensions = "
    "preservation_set entries with extended false / true; released = preservation_released entries.",
    "reports.by_category": "case_opened entries with case.kind = report, grouped by details.category.",
    "reports.decisions": "case_decided entries with appeal = false, grouped by details.action.",
    "reports.appeals": "case_decided entries with appeal = true: overturned when details.action is "
    "'overturned', upheld otherwise.",
    "content_access": "content_accessed entries grouped by details.case.kind; messages = sum of "
    "details.messages (a count); cases = distinct case ids.",
    "notifications": "notification_sent and notification_deferred entries (deferred: a non-disclosure order).",
}


def period_bounds(period: str) -> tuple[dt.date, dt.date]:
    """`2026`, `2026-H1|H2` or `2026-Q1..Q4` -> (first day, first day after), UTC dates."""
    match = _PERIOD.fullmatch(period.strip())
    if match is None or not 1970 <= int(match.group(1)) <= 9998:
        raise ValueError("period must look like 2026, 2026-H2 or 2026-Q3, from 1970")
    year, part = int(match.group(1)), match.group(2)
    if part is None:
        first, months = 1, 12
    elif part[0] == "H":
        first, months = 1 + 6 * (int(part[1]) - 1), 6
    else:
        first, months = 1 + 3 * (int(part[1]) - 1), 3
    end_month = first + months
    start = dt.date(year, first, 1)
    end = dt.date(year + 1, 1, 1) if end_month > 12 else dt.date(year, end_month, 1)
    return start, end


def _ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def _case(entry: dict[str, Any]) -> tuple[str | None, Any]:
    case = entry.get("details", {}).get("case")
    return (case.get("kind"), case.get("id")) if isinstance(case, dict) else (None, None)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _tally(counter: Counter[str], known: Sequence[str] = ()) -> dict[str, int]:
    """Known keys first in their order (zeros included), then any others by count."""
    out = {key: counter.get(key, 0) for key in known}
    for key, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
        out.setdefault(key, n)
    return out


def _share(part: int, whole: int) -> dict[str, Any]:
    if whole == 0:
        return {"count": part, "fraction": None, "percent": None}
    return {"count": part, "fraction": round(part / whole, 4), "percent": round(100 * part / whole, 1)}


def compute_report(
    entries: Iterable[dict[str, Any]],
    period: str,
    *,
    tree_size: int | None = None,
    root: str | None = None,
    signed_at: str | None = None,
) -> dict[str, Any]:
    """Every figure of the report for `period`, from access-log entries (parsed JSON)."""
    start, end = period_bounds(period)
    start_ms, end_ms = _ms(start), _ms(end)
    seen = 0
    by: defaultdict[str, Counter[str]] = defaultdict(Counter)  # figure -> key -> count
    n: Counter[str] = Counter()  # plain counts and sums
    accessed_cases: defaultdict[str, set[Any]] = defaultdict(set)
    legal_ids: set[Any] = set()
    disclosed_ids: set[Any] = set()
    for entry in entries:
        seen += 1
        time_ms = entry.get("time_ms")
        if not isinstance(time_ms, int) or not start_ms <= time_ms < end_ms:
            continue
        kind_of = str(entry.get("type"))
        by["type"][kind_of] += 1
        details = entry.get("details") or {}
        kind, case_id = _case(entry)
        if kind_of == "case_opened" and kind == "legal":
            legal_ids.add(case_id)
            by["country"][str(details.get("country"))] += 1
            by["process"][str(details.get("process"))] += 1
            n["accounts"] += _int(details.get("accounts"))
        elif kind_of == "case_opened" and kind == "report":
            by["category"][str(details.get("category"))] += 1
            n["messages_reported"] += _int(details.get("messages"))
        elif kind_of == "case_approved" and kind == "legal":
            by["approved"][str(details.get("process"))] += 1
        elif kind_of == "case_refused" and kind == "legal":
            by["refused"][str(details.get("by"))] += 1
        elif kind_of == "case_decided" and details.get("appeal") is True:
            n["overturned" if details.get("action") == "overturned" else "upheld"] += 1
        elif kind_of == "case_decided":
            by["action"][str(details.get("action"))] += 1
        elif kind_of == "content_accessed":
            read = details.get("messages")
            by["accesses"][str(kind)] += 1
            by["messages_read"][str(kind)] += len(read) if isinstance(read, list) else _int(read)
            accessed_cases[str(kind)].add(case_id)
        elif kind_of == "disclosure_produced" and kind == "legal":
            n["packages"] += 1
            disclosed_ids.add(case_id)
        elif kind_of == "preservation_set" and details.get("extended") is True:
            n["extensions"] += 1
        elif kind_of == "preservation_set":
            n["holds"] += 1
            n["accounts_preserved"] += _int(details.get("accounts"))
        elif kind_of == "preservation_released":
            n["released"] += 1
    requests = by["process"].total()
    accesses, read_counts = by["accesses"], by["messages_read"]
    return {
        "format": FORMAT,
        "period": period.strip(),
        "from": start.isoformat(),
        "to": (end - dt.timedelta(days=1)).isoformat(),
        "window_ms": {"start": start_ms, "end": end_ms},
        "tree_size": seen if tree_size is None else tree_size,
        "root": root,
        "tree_head_signed_at": signed_at,
        "entries_considered": by["type"].total(),
        "entries_by_type": _tally(by["type"]),
        "legal": {
            "requests": requests,
            "by_country": _tally(by["country"]),
            "by_process": _tally(by["process"], PROCESSES),
            "accounts_specified": n["accounts"],
            "approved": by["approved"].total(),
            "with_data_disclosed": _share(len(legal_ids & disclosed_ids), requests),
            "disclosures": {"packages": n["packages"], "cases": len(disclosed_ids)},
            "refused": {
                "total": by["refused"].total(),
                "by_rules": by["refused"]["rules"],
                "by_staff": by["refused"]["staff"],
            },
            "emergency": {"requests": by["process"]["emergency"], "approved": by["approved"]["emergency"]},
            "preservation": {
                "requests": by["process"]["preservation"],
                "holds_set": n["holds"],
                "extensions": n["extensions"],
                "released": n["released"],
                "accounts_preserved": n["accounts_preserved"],
            },
        },
        "reports": {
            "cases": by["category"].total(),
            "messages_reported": n["messages_reported"],
            "by_category": _tally(by["category"], REPORT_CATEGORIES),
            "decisions": {"total": by["action"].total(), "by_action": _tally(by["action"], ACTIONS)},
            "appeals": {
                "decided": n["upheld"] + n["overturned"],
                "upheld": n["upheld"],
                "overturned": n["overturned"],
            },
        },
        "content_access": {
            "accesses": accesses.total(),
            "messages": read_counts.total(),
            "by_case_type": {
                key: {
                    "accesses": accesses[key],
                    "messages": read_counts[key],
                    "cases": len(accessed_cases[key]),
                }
                for key in sorted(accesses, key=lambda k: (k != "report", k != "legal", k))
            },
        },
        "notifications": {
            "sent": by["type"]["notification_sent"],
            "deferred": by["type"]["notification_deferred"],
        },
        "definitions": DEFINITIONS,
    }


async def build_report(engine: AsyncEngine, period: str, head: TreeHead | None) -> dict[str, Any]:
    """The report over the entries `head` covers; refuses if they do not hash to its root."""
    period_bounds(period)  # a bad period fails before any I/O
    size = head.size if head else 0
    async with engine.connect() as conn:
        rows = [r for r in await merkle_log.all_entries(conn, ACCESS_LOG) if r.idx < size]
    if [r.idx for r in rows] != list(range(size)):
        raise ValueError(
            f"the log in storage does not hold entries 0..{size - 1}; run `keyhold audit verify`"
        )
    tree = MerkleTree.from_leaf_hashes(leaf_hash(r.entry) for r in rows)
    root = tree.root()
    if head is not None and root != head.root:
        raise ValueError(
            f"the stored entries do not hash to the signed root of size {size}; run `keyhold audit verify`"
        )
    entries = (orjson.loads(r.entry) for r in rows)
    signed_at = iso(head.timestamp_ms) if head else None
    return compute_report(entries, period, tree_size=size, root=root.hex(), signed_at=signed_at)


# -- HTML ------------------------------------------------------------------------------------------


_LABELS = {"mlat": "MLAT", "escalate_legal": "Escalate to legal", "no_violation": "No violation found"}


def _label(key: str) -> str:
    if key in _LABELS:
        return _LABELS[key]
    return key.replace("_", " ").capitalize() if key.islower() else key


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    y: int
    width: float  # to the value's end
    drawn: float  # what is drawn: a sliver for small non-zero values, nothing for zero


@dataclass(frozen=True)
class Chart:
    """A horizontal bar chart's geometry; the template draws it as inline SVG."""

    title: str
    bars: list[Bar]
    label_width: int = 200
    bar_width: int = 340
    row_height: int = 26

    @property
    def width(self) -> int:
        return self.label_width + self.bar_width + 60

    @property
    def height(self) -> int:
        return self.row_height * len(self.bars) + 6


def bar_chart(title: str, rows: Sequence[tuple[str, int]]) -> Chart:
    if not rows or not any(n for _, n in rows):
        return Chart(title, [])
    chart = Chart(title, [])
    top = max(n for _, n in rows)
    for i, (label, n) in enumerate(rows):
        width = round(chart.bar_width * n / top, 1) if top else 0
        chart.bars.append(Bar(_label(label), n, 3 + i * chart.row_height, width, max(width, 1.5) if n else 0))
    return chart


def _n(count: int, noun: str) -> str:
    return f"{count} {noun if count != 1 else noun.removesuffix('es' if noun.endswith('sses') else 's')}"


def _percent(share: dict[str, Any]) -> str:
    return "—" if share["percent"] is None else f"{share['percent']}%"


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("keyhold.governance", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page (templates/transparency.html): inline CSS, inline SVG, no
    scripts, opens offline."""
    legal, reports, access = report["legal"], report["reports"], report["content_access"]
    refused, preservation = legal["refused"], legal["preservation"]
    share, emergency, appeals = legal["with_data_disclosed"], legal["emergency"], reports["appeals"]
    by_type = access["by_case_type"]
    holds = f"{preservation['holds_set']} / {preservation['extensions']} / {preservation['released']}"
    return _TEMPLATES.get_template("transparency.html").render(
        title=f"Keyhold transparency report — {report['period']}",
        report=report,
        cards=[
            (legal["requests"], "legal requests"),
            (legal["accounts_specified"], "accounts specified"),
            (_percent(share), "of legal requests with data disclosed"),
            (reports["cases"], "user reports"),
            (access["accesses"], "staff content accesses"),
            (access["messages"], "messages read by staff"),
        ],
        legal_rows=[
            ("Requests received", legal["requests"]),
            ("Accounts specified", legal["accounts_specified"]),
            ("Approved (four eyes)", legal["approved"]),
            ("Requests with data disclosed", f"{share['count']} ({_percent(share)})"),
            ("Disclosure packages produced", legal["disclosures"]["packages"]),
            ("Refused by the rules", refused["by_rules"]),
            ("Refused by legal staff", refused["by_staff"]),
            ("Emergency requests (approved)", f"{emergency['requests']} ({emergency['approved']})"),
            ("Preservation requests", preservation["requests"]),
            ("Preservation holds set / extended / released", holds),
        ],
        report_rows=[
            ("Report cases opened", reports["cases"]),
            ("Messages reported", reports["messages_reported"]),
            ("Decisions", reports["decisions"]["total"]),
            ("Appeals decided", appeals["decided"]),
            ("Appeals: decision upheld", appeals["upheld"]),
            ("Appeals: decision overturned", appeals["overturned"]),
        ],
        access_rows=[
            ("Content accesses", access["accesses"]),
            ("Messages read", access["messages"]),
            *(
                (f"{_label(kind)} cases", ", ".join(_n(v[k], k) for k in ("accesses", "messages", "cases")))
                for kind, v in by_type.items()
            ),
            ("Members notified of an access", report["notifications"]["sent"]),
            ("Notifications deferred (non-disclosure order)", report["notifications"]["deferred"]),
        ],
        charts={
            "by_country": bar_chart("Legal requests by country", list(legal["by_country"].items())),
            "by_process": bar_chart("Legal requests by legal process", list(legal["by_process"].items())),
            "by_category": bar_chart("Reports by category", list(reports["by_category"].items())),
            "by_action": bar_chart(
                "Moderation decisions by action", list(reports["decisions"]["by_action"].items())
            ),
            "accesses_by_type": bar_chart(
                "Content accesses by case type", [(f"{k} cases", v["accesses"]) for k, v in by_type.items()]
            ),
            "messages_by_type": bar_chart(
                "Messages read by case type", [(f"{k} cases", v["messages"]) for k, v in by_type.items()]
            ),
        },
    )


async def report_from_storage(database_url: str, period: str) -> dict[str, Any]:
    """The report of a data dir, as of its newest signed tree head, without starting its
    services (an operator's or auditor's command; any period)."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = await merkle_log.latest_head(conn, ACCESS_LOG)
        head = TreeHead(row.size, row.root, row.timestamp_ms, row.signature) if row else None
        return await build_report(engine, period, head)
    finally:
        await engine.dispose()
