"""What a law-enforcement request may obtain, as code (defaults; one table per region).

- `message_content` needs a `search_warrant` (or `mlat`) of the data's region;
  `conversation_metadata` needs at least a `court_order`; `subscriber_info` and
  `connection_logs` at least a `subpoena`.
- A request from a country outside the data's region is refused unless it is `mlat`.
- `emergency`: no legal process, for imminent risk of death or serious injury: limited
  categories, a written justification, a second approver, and it expires after 72 hours.
- `preservation`: discloses nothing; freezes deletion of the targets' data for 90 days,
  extendable once by 90.
"""

from __future__ import annotations

from dataclasses import dataclass

PROCESSES = ("subpoena", "court_order", "search_warrant", "emergency", "preservation", "mlat")
CATEGORIES = ("subscriber_info", "connection_logs", "conversation_metadata", "message_content")
# How strong each process is; a category needs at least its minimum.
STRENGTH = {"subpoena": 1, "court_order": 2, "search_warrant": 3, "mlat": 3}
MINIMUM = {"subscriber_info": 1, "connection_logs": 1, "conversation_metadata": 2, "message_content": 3}
EMERGENCY_CATEGORIES = ("subscriber_info", "connection_logs", "conversation_metadata")
EMERGENCY_HOURS = 72
APPROVED_CASE_DAYS = 30
PRESERVATION_DAYS = 90
MIN_JUSTIFICATION = 40

EU = ("AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE").split()
REGION_COUNTRIES: dict[str, tuple[str, ...]] = {"us": ("US",), "eu": tuple(EU)}


def region_of_country(country: str, regions: tuple[str, ...]) -> str:
    for region, countries in REGION_COUNTRIES.items():
        if country in countries and region in regions:
            return region
    return "row"


@dataclass(frozen=True)
class Ruling:
    allowed: bool
    reason: str


def rule(
    process: str,
    country: str,
    data_region: str,
    categories: list[str],
    justification: str,
    regions: tuple[str, ...],
) -> Ruling:
    """Whether a request may be approved at all (a second legal staff member still decides)."""
    if process not in PROCESSES:
        return Ruling(False, f"unknown legal process {process!r}")
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        return Ruling(False, f"unknown data categories {unknown}")
    if process != "mlat" and region_of_country(country, regions) != data_region:
        return Ruling(
            False, f"a request from {country} reaches data in region {data_region} only through an MLAT"
        )
    if process == "preservation":
        if categories:
            return Ruling(False, "a preservation request discloses nothing: name no data categories")
        return Ruling(True, "preservation: deletion of the targets' data is frozen once approved")
    if not categories:
        return Ruling(False, "name at least one data category")
    if process == "emergency":
        beyond = [c for c in categories if c not in EMERGENCY_CATEGORIES]
        if beyond:
            return Ruling(False, f"an emergency request cannot obtain {beyond}; it needs legal process")
        if len(justification.strip()) < MIN_JUSTIFICATION:
            return Ruling(
                False,
                f"an emergency request needs a written justification ({MIN_JUSTIFICATION}+ characters)"
                " of the imminent risk of death or serious injury",
            )
        return Ruling(True, f"emergency: good-faith disclosure for {EMERGENCY_HOURS} hours after approval")
    strength = STRENGTH[process]
    short = [c for c in categories if MINIMUM[c] > strength]
    if short:
        need = {1: "subpoena", 2: "court_order", 3: "search_warrant"}
        needed = ", ".join(f"{c} needs a {need[MINIMUM[c]]}" for c in short)
        return Ruling(False, f"a {process} is not enough: {needed}")
    return Ruling(True, f"{process} covers {', '.join(categories)}")
