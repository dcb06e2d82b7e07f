"""Async client for staff workflows (moderators, legal staff, auditors) over the public API.

    staff = await StaffClient.login("http://127.0.0.1:8000", "mia", "password", "123456")
    for case in await staff.reports(status="open"):
        items = await staff.report_content(case["id"], reason="review of the report")
        await staff.decide(case["id"], "warn", note="be kind")
    await staff.close()

Staff sessions are short (1 h by default) and separate from member tokens. Every content read
is written to the access log before the server returns it. A refusal raises `KeyholdError`
with the server's problem+json (`.status`, `.problem["detail"]`).
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from keyhold.sdk.client import ApiSession

__all__ = ["LegalRequest", "StaffClient"]


@dataclass(frozen=True)
class LegalRequest:
    """A law-enforcement request as recorded (`POST /api/v1/staff/legal`), with its document."""

    agency: str
    officer: str
    contact: str
    country: str  # ISO 3166 two-letter code of the agency
    process: str  # subpoena | court_order | search_warrant | emergency | preservation | mlat
    targets: list[str]  # usernames
    date_from: str  # YYYY-MM-DD
    date_to: str  # YYYY-MM-DD
    categories: list[str]  # subscriber_info, connection_logs, conversation_metadata, message_content
    document: bytes  # the legal process document, stored sealed
    justification: str = ""  # required for emergencies
    nondisclosure_until: str | None = None  # members are not told before this day
    document_name: str = "request.pdf"

    def to_json(self) -> dict[str, Any]:
        body = {k: v for k, v in asdict(self).items() if k != "document" and v is not None}
        return {**body, "document_base64": base64.b64encode(self.document).decode()}


class StaffClient(ApiSession):
    """A signed-in staff member. Create with `await StaffClient.login(...)`."""

    def __init__(
        self,
        base_url: str,
        token: str,
        username: str,
        role: str,
        region: str,
        staff_id: int = 0,
        expires_at: str = "",
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, verify, timeout=60.0, transport=transport)
        self.username = username
        self.role = role
        self.region = region
        self.id = staff_id
        self.expires_at = expires_at

    @classmethod
    async def login(
        cls,
        base_url: str,
        username: str,
        password: str,
        totp_code: str,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> StaffClient:
        """Sign in with password and the current TOTP code (each code is accepted once)."""
        body = {"username": username, "password": password, "totp": totp_code}
        async with ApiSession(base_url, verify=verify, timeout=60.0, transport=transport) as anonymous:
            data = await anonymous._request("POST", "/staff/sessions", json=body)
        client = cls(
            base_url,
            data["token"],
            data["username"],
            data["role"],
            data["region"],
            expires_at=data.get("expires_at", ""),
            verify=verify,
            transport=transport,
        )
        try:
            client.id = int((await client.me())["id"])
        except BaseException:
            await client.close()
            raise
        return client

    async def _pages(self, path: str, status: str | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        after = 0
        while True:
            params: dict[str, Any] = {"after": after, "limit": 200}
            if status:
                params["status"] = status
            page = await self._request("GET", path, params=params)
            items.extend(page["items"])
            if page.get("next_after") is None:
                return items
            after = int(page["next_after"])

    # -- session -----------------------------------------------------------------------------

    async def me(self) -> dict[str, Any]:
        return dict(await self._request("GET", "/staff/me"))

    async def logout(self) -> None:
        await self._request("DELETE", "/staff/sessions/current")

    # -- report cases (moderators) -----------------------------------------------------------

    async def reports(self, status: str | None = None) -> list[dict[str, Any]]:
        """Report cases of my region (all pages), optionally of one status."""
        return await self._pages("/staff/reports", status)

    async def report(self, case_id: int) -> dict[str, Any]:
        return dict(await self._request("GET", f"/staff/reports/{case_id}"))

    async def claim(self, case_id: int) -> dict[str, Any]:
        return dict(await self._request("POST", f"/staff/reports/{case_id}/claim"))

    async def report_content(self, case_id: int, reason: str) -> list[dict[str, Any]]:
        """The reported messages and K before/after each (one access-log entry)."""
        data = await self._request("GET", f"/staff/reports/{case_id}/content", params={"reason": reason})
        return list(data["items"])

    async def read(self, case_id: int, message_ids: list[int], reason: str) -> list[dict[str, Any]]:
        """Named messages under a report or legal case (one access-log entry)."""
        body = {"message_ids": list(message_ids), "reason": reason}
        return list((await self._request("POST", f"/staff/cases/{case_id}/read", json=body))["items"])

    async def decide(
        self,
        case_id: int,
        action: str,
        note: str = "",
        suspend_hours: int | None = None,
        hotline_reference: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"action": action, "note": note}
        if suspend_hours is not None:
            body["suspend_hours"] = suspend_hours
        if hotline_reference is not None:
            body["hotline_reference"] = hotline_reference
        return dict(await self._request("POST", f"/staff/reports/{case_id}/decision", json=body))

    async def decide_appeal(self, case_id: int, uphold: bool, note: str = "") -> dict[str, Any]:
        body = {"uphold": uphold, "note": note}
        return dict(await self._request("POST", f"/staff/reports/{case_id}/appeal-decision", json=body))

    # -- legal cases (legal staff) -----------------------------------------------------------

    async def create_legal_case(self, request: LegalRequest) -> dict[str, Any]:
        """Record a law-enforcement request; the rules rule on it at once (`status` is
        `pending` for a second legal staff member, or `refused` with `details.ruling`)."""
        return dict(await self._request("POST", "/staff/legal", json=request.to_json()))

    async def legal_cases(self, status: str | None = None) -> list[dict[str, Any]]:
        return await self._pages("/staff/legal", status)

    async def legal_case(self, case_id: int) -> dict[str, Any]:
        return dict(await self._request("GET", f"/staff/legal/{case_id}"))

    async def approve(self, case_id: int) -> dict[str, Any]:
        return dict(await self._request("POST", f"/staff/legal/{case_id}/approve"))

    async def refuse(self, case_id: int, reason: str) -> dict[str, Any]:
        return dict(await self._request("POST", f"/staff/legal/{case_id}/refuse", json={"reason": reason}))

    async def extend(self, case_id: int) -> dict[str, Any]:
        return dict(await self._request("POST", f"/staff/legal/{case_id}/extend"))

    async def release(self, case_id: int) -> dict[str, Any]:
        return dict(await self._request("POST", f"/staff/legal/{case_id}/release"))

    async def disclosure(self, case_id: int) -> dict[str, Any]:
        """The signed disclosure package (`manifest`, `data`, `signature`)."""
        return dict(await self._request("POST", f"/staff/legal/{case_id}/disclosure"))

    # -- access log (auditors) ---------------------------------------------------------------

    async def log_entries(self, start: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Whole access-log entries `start` .. `start + limit - 1` (as far as the newest signed
        head reaches): `{"index": i, "entry": "<canonical JSON>"}`."""
        data = await self._request("GET", "/transparency/entries", params={"start": start, "limit": limit})
        return list(data["items"])

    async def all_log_entries(self) -> list[dict[str, Any]]:
        """Every entry up to the newest signed tree head."""
        items: list[dict[str, Any]] = []
        while True:
            page = await self.log_entries(len(items), 1000)
            if not page:
                return items
            items.extend(page)
