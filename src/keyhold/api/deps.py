"""Request dependencies: the running service and the signed-in member."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from keyhold.core.accounts import Member
from keyhold.core.errors import unauthorized
from keyhold.core.service import Keyhold
from keyhold.governance.service import Governance
from keyhold.governance.staff import StaffMember


def service(request: Request) -> Keyhold:
    svc: Keyhold = request.app.state.keyhold
    return svc


def client_address(request: Request) -> str:
    """The address a request came from: the peer, or (only behind a proxy named in
    `trusted_proxies`) the client the proxy forwarded, as uvicorn resolves it."""
    return request.client.host if request.client else "unknown"


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized()
    return token.strip()


async def current_member(request: Request) -> Member:
    return await service(request).accounts.authenticate(bearer_token(request))


async def restricted_member(request: Request) -> Member:
    """A member who may be suspended or banned: only for routes such as appeals."""
    return await service(request).accounts.authenticate(bearer_token(request), allow_suspended=True)


def governance(request: Request) -> Governance:
    gov = service(request).governance
    assert gov is not None
    return gov


async def current_staff(request: Request) -> StaffMember:
    return await governance(request).staff.authenticate(bearer_token(request))


Service = Annotated[Keyhold, Depends(service)]
Gov = Annotated[Governance, Depends(governance)]
CurrentStaff = Annotated[StaffMember, Depends(current_staff)]
CurrentMember = Annotated[Member, Depends(current_member)]
RestrictedMember = Annotated[Member, Depends(restricted_member)]
Token = Annotated[str, Depends(bearer_token)]
