"""Request dependencies: the running service and the signed-in member."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from keyhold.core.accounts import Member
from keyhold.core.errors import unauthorized
from keyhold.core.service import Keyhold


def service(request: Request) -> Keyhold:
    svc: Keyhold = request.app.state.keyhold
    return svc


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized()
    return token.strip()


async def current_member(request: Request) -> Member:
    return await service(request).accounts.authenticate(bearer_token(request))


Service = Annotated[Keyhold, Depends(service)]
CurrentMember = Annotated[Member, Depends(current_member)]
Token = Annotated[str, Depends(bearer_token)]
