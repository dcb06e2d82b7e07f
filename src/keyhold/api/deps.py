"""Request dependencies: the services, and who the request acts for."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Protocol

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from keyhold.config import Settings
from keyhold.core.accounts import AccountService, Member
from keyhold.core.contact_actions import ContactService
from keyhold.core.conversations import ConversationService
from keyhold.core.delivery import Delivery
from keyhold.core.devices import DeviceService
from keyhold.core.errors import unauthorized
from keyhold.core.groups import GroupService
from keyhold.core.messages import MessageService
from keyhold.core.revocation import RevocationWatch
from keyhold.e2ee.keys import KeyDirectory
from keyhold.e2ee.to_device import ToDevice
from keyhold.governance.service import Governance
from keyhold.governance.staff import STAFF_TOKEN_PREFIX, StaffMember
from keyhold.safety.guardians import Guardians
from keyhold.safety.limiter import RateLimiter


class Services(Protocol):
    """What the API is given to call (built by `keyhold.app`): domain services only — no
    engine, no store, no bus."""

    settings: Settings
    accounts: AccountService
    devices: DeviceService
    conversations: ConversationService
    groups: GroupService
    messages: MessageService
    delivery: Delivery
    revocations: RevocationWatch
    governance: Governance
    e2ee: KeyDirectory
    to_device: ToDevice
    contacts: ContactService
    guardians: Guardians
    limits: RateLimiter

    async def check_storage(self) -> None: ...

    async def stop(self) -> None: ...


def service(request: Request) -> Services:
    svc: Services = request.app.state.keyhold
    return svc


def client_address(request: HTTPConnection) -> str:
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
    """A member who may act: every route that sends, starts, changes or uploads anything."""
    member = await service(request).accounts.authenticate(bearer_token(request))
    return dataclasses.replace(member, address=client_address(request))


async def reading_member(request: Request) -> Member:
    """A member who may read, suspended or not (never banned): history, attachments, lists."""
    return await service(request).accounts.authenticate(bearer_token(request), "read")


async def restricted_member(request: Request) -> Member:
    """A member who may be suspended or banned: only for appeals and their own standing."""
    return await service(request).accounts.authenticate(bearer_token(request), "appeal")


def governance(request: Request) -> Governance:
    return service(request).governance


async def current_staff(request: Request) -> StaffMember:
    return await governance(request).staff.authenticate(bearer_token(request))


async def optional_staff(request: Request) -> StaffMember | None:
    """The staff member, on a route that answers the public too (and staff more); any other
    bearer (none, a member's token) is the public."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip().startswith(STAFF_TOKEN_PREFIX):
        return None
    return await governance(request).staff.authenticate(token.strip())


Service = Annotated[Services, Depends(service)]
Gov = Annotated[Governance, Depends(governance)]
CurrentStaff = Annotated[StaffMember, Depends(current_staff)]
OptionalStaff = Annotated[StaffMember | None, Depends(optional_staff)]
CurrentMember = Annotated[Member, Depends(current_member)]
ReadingMember = Annotated[Member, Depends(reading_member)]
RestrictedMember = Annotated[Member, Depends(restricted_member)]
Token = Annotated[str, Depends(bearer_token)]
