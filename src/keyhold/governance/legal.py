"""Legal cases (law-enforcement requests): record, four-eyes approval, preservation holds,
and fulfilment as a signed disclosure package holding only in-scope data.

Content in a package is obtained through `governance.access` like any other staff read, so
every message disclosed is in the access log before it is opened.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import iso, now_ms
from keyhold.config import Settings
from keyhold.core.erasure import Erasure
from keyhold.core.errors import conflict, forbidden, invalid, not_found
from keyhold.core.writer import EventSink, Writer
from keyhold.crypto.envelope import new_data_key, seal_document
from keyhold.crypto.keyprovider import KeyProvider
from keyhold.crypto.signing import ServiceSigner
from keyhold.governance import legal_rules as rules
from keyhold.governance.access import GovernedAccess
from keyhold.governance.accesslog import AccessLog, LogEntry, Subject, canonical, case_ref
from keyhold.governance.staff import HANDLE_LEGAL, StaffMember, require_role
from keyhold.store import accounts as account_store
from keyhold.store import cases as store
from keyhold.store import disclosure as disclosure_store
from keyhold.store.blobs import BlobStore
from keyhold.store.cases import Case

DAY_MS = 24 * 3600 * 1000
MAX_DOCUMENT = 20 * 1024 * 1024


@dataclass
class LegalRequest:
    agency: str
    officer: str
    contact: str
    country: str
    process: str
    targets: list[str]
    date_from: str
    date_to: str
    categories: list[str]
    justification: str = ""
    nondisclosure_until: str | None = None
    document_name: str = "request.pdf"


def _day_ms(value: str, field: str) -> int:
    try:
        day = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise invalid(f"{field} must be a date written YYYY-MM-DD") from exc
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def _count(section: Any) -> Any:
    """Items in a package section (per part for sections made of several lists)."""
    return {k: len(v) for k, v in section.items()} if isinstance(section, dict) else len(section)


def legal_view(case: Case, targets: Sequence[str] = ()) -> dict[str, Any]:
    details = case.details
    return {
        "id": case.id,
        "kind": "legal",
        "region": case.region,
        "status": case.status,
        "created_at": iso(case.created_ms),
        "expires_at": iso(case.expires_ms) if case.expires_ms else None,
        "created_by": case.created_by,
        "created_by_name": case.created_by_name,
        "approved_by": case.approved_by,
        "approved_by_name": case.approved_by_name,
        "targets": list(targets),
        "details": details,
        "decision": case.decision,
    }


class LegalService:
    def __init__(
        self,
        engine: AsyncEngine,
        writer: Writer,
        log: AccessLog,
        access: GovernedAccess,
        provider: KeyProvider,
        blobs: BlobStore,
        erasure: Erasure,
        signer: ServiceSigner,
        settings: Settings,
    ) -> None:
        self._engine = engine
        self._writer = writer
        self._log = log
        self._access = access
        self._provider = provider
        self._blobs = blobs
        self._erasure = erasure
        self._signer = signer
        self._settings = settings

    @staticmethod
    def _require_legal(staff: StaffMember) -> None:
        require_role(staff, HANDLE_LEGAL, "handling legal cases")

    async def create(self, staff: StaffMember, request: LegalRequest, document: bytes) -> dict[str, Any]:
        self._require_legal(staff)
        if not document or len(document) > MAX_DOCUMENT:
            raise invalid(f"attach the legal document (1 byte to {MAX_DOCUMENT} bytes)")
        start, end = _day_ms(request.date_from, "date_from"), _day_ms(request.date_to, "date_to") + DAY_MS
        if end <= start:
            raise invalid("date_to must not be before date_from")
        if not request.targets or len(request.targets) > 100:
            raise invalid("name 1 to 100 target accounts")
        nondisclosure_ms = (
            _day_ms(request.nondisclosure_until, "nondisclosure_until") if request.nondisclosure_until else 0
        )
        country = request.country.strip().upper()
        if len(country) != 2 or not country.isalpha():
            raise invalid("country must be an ISO 3166 two-letter code")

        async def run(conn: AsyncConnection, sink: EventSink) -> int:
            found = await account_store.by_usernames(conn, sorted(set(request.targets)))
            missing = [t for t in request.targets if t not in found]
            if missing:
                raise not_found(f"{len(missing)} of the targets are not accounts")
            regions = {row.region for row in found.values()}
            if regions != {staff.region}:
                raise forbidden(
                    f"every target must be in your region {staff.region}; found {sorted(regions)}"
                )
            ruling = rules.rule(
                request.process,
                country,
                staff.region,
                request.categories,
                request.justification,
                self._settings.regions,
            )
            now = now_ms()
            details = {
                "agency": request.agency,
                "officer": request.officer,
                "contact": request.contact,
                "country": country,
                "process": request.process,
                "categories": sorted(set(request.categories)),
                "date_from": request.date_from,
                "date_to": request.date_to,
                "start_ms": start,
                "end_ms": end,
                "justification": request.justification,
                "nondisclosure_until_ms": nondisclosure_ms,
                "document_sha256": hashlib.sha256(document).hexdigest(),
                "ruling": ruling.reason,
            }
            case_id = await store.insert_case(
                conn,
                {
                    "kind": "legal",
                    "region": staff.region,
                    "status": "pending" if ruling.allowed else "refused",
                    "created_ms": now,
                    "created_by": staff.id,
                    "details": details,
                    "decision": {} if ruling.allowed else {"refused": ruling.reason},
                },
            )
            await store.add_targets(conn, case_id, [row.id for row in found.values()])
            await self._store_document(conn, case_id, staff.region, document, request.document_name)
            summary = {
                **case_ref(case_id, "legal", staff.region),
                "country": country,
                "process": request.process,
                "accounts": len(found),
                "categories": details["categories"],
            }
            entries = [LogEntry("case_opened", summary)]
            if not ruling.allowed:
                entries.append(LogEntry("case_refused", {**summary, "reason": ruling.reason, "by": "rules"}))
            await self._log.append(conn, sink, entries)
            return case_id

        case_id = await self._writer.run(run)
        return await self.get(staff, case_id)

    async def _store_document(
        self, conn: AsyncConnection, case_id: int, region: str, data: bytes, name: str
    ) -> None:
        dek = new_data_key()
        wrapped = self._provider.wrap(region, dek, b"keyhold/legal-document|" + str(case_id).encode())
        self._blobs.write(f"legal_{case_id}", seal_document(dek, case_id, b"data", data))
        await store.insert_document(
            conn,
            {
                "case_id": case_id,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "kek_version": wrapped.kek_version,
                "wrapped_dek": wrapped.blob,
                "sealed_meta": seal_document(dek, case_id, b"meta", orjson.dumps({"filename": name})),
            },
        )

    async def _case(self, conn: AsyncConnection, staff: StaffMember, case_id: int) -> Case:
        case = await store.by_id(conn, case_id)
        if case is None or case.kind != "legal" or case.region != staff.region:
            raise not_found(f"legal case {case_id} not found in region {staff.region}")
        return case

    async def get(self, staff: StaffMember, case_id: int) -> dict[str, Any]:
        self._require_legal(staff)
        async with self._engine.connect() as conn:
            case = await self._case(conn, staff, case_id)
            names = await store.target_names(conn, [case_id])
        return legal_view(case, names.get(case_id, []))

    async def list_cases(
        self, staff: StaffMember, after: int, limit: int, status: str | None
    ) -> list[dict[str, Any]]:
        self._require_legal(staff)
        async with self._engine.connect() as conn:
            rows = await store.list_cases(conn, "legal", staff.region, after, limit, status)
            names = await store.target_names(conn, [r.id for r in rows])
        return [legal_view(r, names.get(r.id, [])) for r in rows]

    async def approve(self, staff: StaffMember, case_id: int) -> dict[str, Any]:
        self._require_legal(staff)

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            case = await self._case(conn, staff, case_id)
            if case.status != "pending":
                raise conflict(f"case {case_id} is {case.status}, not pending")
            if case.created_by == staff.id:
                raise forbidden(
                    "four eyes: a case is approved by a second legal staff member, not its creator"
                )
            details = case.details
            now = now_ms()
            process = details["process"]
            if process == "emergency":
                expires = now + rules.EMERGENCY_HOURS * 3600 * 1000
            elif process == "preservation":
                expires = now + rules.PRESERVATION_DAYS * DAY_MS
            else:
                expires = now + rules.APPROVED_CASE_DAYS * DAY_MS
            await store.update_case(
                conn, case_id, status="approved", approved_by=staff.id, expires_ms=expires
            )
            summary = {**case_ref(case_id, "legal", case.region), "process": process}
            entries = [LogEntry("case_approved", summary)]
            if process == "preservation":
                targets = await store.target_ids(conn, case_id)
                await store.insert_holds(
                    conn,
                    [
                        {"case_id": case_id, "user_id": uid, "starts_ms": now, "ends_ms": expires}
                        for uid in targets
                    ],
                )
                entries.append(
                    LogEntry(
                        "preservation_set",
                        {**summary, "accounts": len(targets), "until": iso(expires), "extended": False},
                    )
                )
            await self._log.append(conn, sink, entries)

        await self._writer.run(run)
        return await self.get(staff, case_id)

    async def refuse(self, staff: StaffMember, case_id: int, reason: str) -> dict[str, Any]:
        self._require_legal(staff)
        if not reason.strip():
            raise invalid("a refusal carries a reason")

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            case = await self._case(conn, staff, case_id)
            if case.status != "pending":
                raise conflict(f"case {case_id} is {case.status}, not pending")
            decision = {"refused": reason.strip()[:2000], "by": staff.id}
            await store.update_case(conn, case_id, status="refused", decision=decision)
            await self._log.append(
                conn,
                sink,
                [
                    LogEntry(
                        "case_refused",
                        {
                            **case_ref(case_id, "legal", case.region),
                            "process": case.details["process"],
                            "reason": reason.strip()[:500],
                            "by": "staff",
                        },
                    )
                ],
            )

        await self._writer.run(run)
        return await self.get(staff, case_id)

    async def extend_preservation(self, staff: StaffMember, case_id: int) -> dict[str, Any]:
        self._require_legal(staff)

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            case = await self._case(conn, staff, case_id)
            details = case.details
            holds = await store.holds_of_case(conn, case_id)
            if details["process"] != "preservation" or case.status != "approved" or not holds:
                raise conflict("only an approved preservation can be extended")
            if any(h.extended for h in holds) or any(h.released_ms for h in holds):
                raise conflict("a preservation is extended once, and not after its release")
            ends = max(h.ends_ms for h in holds) + rules.PRESERVATION_DAYS * DAY_MS
            await store.update_holds(conn, case_id, ends_ms=ends, extended=True)
            await store.update_case(conn, case_id, expires_ms=ends)
            await self._log.append(
                conn,
                sink,
                [
                    LogEntry(
                        "preservation_set",
                        {
                            **case_ref(case_id, "legal", case.region),
                            "process": "preservation",
                            "accounts": len(holds),
                            "until": iso(ends),
                            "extended": True,
                        },
                    )
                ],
            )

        await self._writer.run(run)
        return await self.get(staff, case_id)

    async def release(self, staff: StaffMember, case_id: int) -> dict[str, Any]:
        self._require_legal(staff)

        async def run(conn: AsyncConnection, sink: EventSink) -> None:
            case = await self._case(conn, staff, case_id)
            holds = [h for h in await store.holds_of_case(conn, case_id) if h.released_ms is None]
            if not holds:
                raise conflict(f"case {case_id} has no active preservation hold")
            now = now_ms()
            await store.update_holds(conn, case_id, released_ms=now)
            await store.update_case(conn, case_id, status="closed")
            await self._purge_after_holds(conn, sink, [h.user_id for h in holds], now)
            await self._log.append(
                conn,
                sink,
                [
                    LogEntry(
                        "preservation_released",
                        {
                            **case_ref(case_id, "legal", case.region),
                            "accounts": len(holds),
                            "reason": "released",
                        },
                    )
                ],
            )

        await self._writer.run(run)
        return await self.get(staff, case_id)

    async def _purge_after_holds(
        self, conn: AsyncConnection, sink: EventSink, user_ids: list[int], now: int
    ) -> None:
        """Destroy what holds kept hidden, in conversations that no hold covers any more."""
        conversations = await store.conversations_of(conn, user_ids)
        still = await store.held_conversations(conn, conversations, now)
        await self._erasure.purge_hidden(conn, sink, [c for c in conversations if c not in still], now)

    async def expire_holds(self) -> int:
        """Holds that ran out without a release: end them and destroy what they kept."""

        async def run(conn: AsyncConnection, sink: EventSink) -> int:
            now = now_ms()
            expired = await store.expired_holds(conn, now)
            if not expired:
                return 0
            await store.release_holds(conn, [h.id for h in expired], now)
            await self._purge_after_holds(conn, sink, sorted({h.user_id for h in expired}), now)
            for case_id in sorted({h.case_id for h in expired}):
                case = await store.by_id(conn, case_id)
                assert case is not None
                await store.update_case(conn, case_id, status="closed")
                details = {
                    **case_ref(case_id, "legal", case.region),
                    "accounts": sum(1 for h in expired if h.case_id == case_id),
                    "reason": "expired",
                }
                await self._log.append(conn, sink, [LogEntry("preservation_released", details)])
            return len(expired)

        return await self._writer.run(run)

    async def disclose(self, staff: StaffMember, case_id: int) -> dict[str, Any]:
        """Build, sign and log the disclosure package of an approved case."""
        self._require_legal(staff)
        async with self._engine.connect() as conn:
            case = await self._case(conn, staff, case_id)
            details = case.details
            if case.status != "approved" or details["process"] == "preservation":
                raise conflict("only an approved (non-preservation) case is fulfilled with a package")
            if case.expires_ms is not None and case.expires_ms <= now_ms():
                raise forbidden(
                    f"case {case_id} expired at {iso(case.expires_ms)}; nothing more is disclosed"
                )
            targets = await store.target_ids(conn, case_id)
            data = await disclosure_store.collect(
                conn, targets, details["categories"], details["start_ms"], details["end_ms"]
            )
            content_ids = data.pop("_message_ids", [])
        if "message_content" in details["categories"]:
            messages: list[dict[str, Any]] = []
            for chunk in range(0, len(content_ids), 200):
                messages += await self._access.read_messages(
                    staff, case_id, content_ids[chunk : chunk + 200], f"disclosure for legal case {case_id}"
                )
            data["message_content"] = messages
        manifest = {
            "case": case_id,
            "region": case.region,
            "agency": details["agency"],
            "process": details["process"],
            "country": details["country"],
            "document_sha256": details["document_sha256"],
            "date_from": details["date_from"],
            "date_to": details["date_to"],
            "categories": details["categories"],
            "generated_at": iso(now_ms()),
            "generated_by": staff.id,
            "sections": {k: hashlib.sha256(canonical(v)).hexdigest() for k, v in sorted(data.items())},
            "counts": {k: _count(v) for k, v in sorted(data.items())},
        }
        body = {"manifest": manifest, "data": data}
        package_sha256 = hashlib.sha256(canonical(body)).hexdigest()
        signed = {
            **body,
            "signature": {
                "algorithm": "Ed25519",
                "public_key": self._signer.public_key_bytes.hex(),
                "over": "sha256 of canonical JSON (sorted keys) of {manifest, data}",
                "sha256": package_sha256,
                "value": self._signer.sign(bytes.fromhex(package_sha256)).hex(),
            },
        }

        async def log(conn: AsyncConnection, sink: EventSink) -> None:
            visible = int(details.get("nondisclosure_until_ms") or 0)
            await self._log.append(
                conn,
                sink,
                [
                    LogEntry(
                        "disclosure_produced",
                        {
                            **case_ref(case_id, "legal", case.region),
                            "package_sha256": package_sha256,
                            "categories": details["categories"],
                            "accounts": len(targets),
                        },
                        [Subject(uid, [], visible) for uid in targets],
                    )
                ],
            )

        await self._writer.run(log)
        return signed
