"""Accounts, sessions and follows."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from keyhold.api.deps import CurrentMember, ReadingMember, Service, client_address
from keyhold.api.limits import Follower
from keyhold.api.schemas import (
    DeleteAccountBody,
    LoginBody,
    PasswordChangeBody,
    ProfileBody,
    RegisterBody,
    Text,
)

router = APIRouter()
UsernamePath = Annotated[Text, Path(min_length=1, max_length=64)]


@router.post("/accounts", status_code=201, summary="Register a member account")
async def register(body: RegisterBody, svc: Service) -> dict[str, Any]:
    return await svc.accounts.register(body.username, body.password, body.birthdate, body.region)


@router.post(
    "/sessions",
    status_code=201,
    summary="Log in: returns an opaque bearer token (throttled per client address and per account)",
)
async def login(body: LoginBody, request: Request, svc: Service) -> dict[str, Any]:
    return await svc.accounts.login(
        body.username, body.password, client_address(request), body.device_id, body.device_name
    )


@router.delete("/sessions/current", status_code=204, summary="Log out this token (its open streams close)")
async def logout(member: ReadingMember, svc: Service) -> Response:
    await svc.accounts.logout(member)
    return Response(status_code=204)


@router.delete("/sessions", summary="Log out everywhere: revoke every token of this account")
async def logout_everywhere(member: ReadingMember, svc: Service) -> dict[str, int]:
    return {"revoked": await svc.accounts.logout_everywhere(member)}


@router.get("/account", summary="My profile")
async def me(member: ReadingMember, svc: Service) -> dict[str, Any]:
    return await svc.accounts.profile(member)


@router.patch("/account", summary="Change my display name")
async def update_me(body: ProfileBody, member: CurrentMember, svc: Service) -> dict[str, Any]:
    return await svc.accounts.set_display_name(member, body.display_name)


@router.put(
    "/account/password", status_code=204, summary="Change my password (every other session of mine ends)"
)
async def change_password(body: PasswordChangeBody, member: CurrentMember, svc: Service) -> Response:
    await svc.accounts.change_password(member, body.current_password, body.new_password)
    return Response(status_code=204)


@router.post("/account/delete", status_code=204, summary="Delete my account and destroy what I sent")
async def delete_account(body: DeleteAccountBody, member: CurrentMember, svc: Service) -> Response:
    await svc.accounts.verify_for_deletion(member, body.password)
    await svc.conversations.delete_account(member)
    return Response(status_code=204)


@router.get("/users/{username}", summary="A member's public profile")
async def profile(username: UsernamePath, member: ReadingMember, svc: Service) -> dict[str, Any]:
    return await svc.accounts.public_profile_of(member, username)


@router.put("/following/{username}", status_code=204, summary="Follow a member")
async def follow(username: UsernamePath, member: Follower, svc: Service) -> Response:
    await svc.accounts.follow(member, username)
    return Response(status_code=204)


@router.delete("/following/{username}", status_code=204, summary="Unfollow a member")
async def unfollow(username: UsernamePath, member: CurrentMember, svc: Service) -> Response:
    await svc.accounts.unfollow(member, username)
    return Response(status_code=204)


@router.get("/relations", summary="Who I follow, who follows me, and my friends (mutual follows)")
async def relations(member: ReadingMember, svc: Service) -> dict[str, list[str]]:
    return await svc.accounts.relations(member)
