"""End-to-end encryption's key directory, under /e2ee/: the Matrix client-server
specification's endpoints of the same names, with its request and response bodies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keyhold.api.deps import CurrentMember, Service
from keyhold.api.schemas_e2ee import (
    DeviceSigningUploadBody,
    KeysClaimBody,
    KeysQueryBody,
    KeysUploadBody,
    SignaturesUploadBody,
)

router = APIRouter(prefix="/e2ee")


@router.post("/keys/upload", summary="Publish this device's keys, one-time keys and fallback key")
async def upload_keys(body: KeysUploadBody, member: CurrentMember, svc: Service) -> dict[str, Any]:
    return await svc.e2ee.upload(member, body.device_keys, body.one_time_keys, body.fallback_keys)


@router.post("/keys/query", summary="The published keys of members I share a conversation with or am friends with")
async def query_keys(body: KeysQueryBody, member: CurrentMember, svc: Service) -> dict[str, Any]:
    return await svc.e2ee.query(member, body.device_keys)


@router.post("/keys/claim", summary="Take one one-time key per device (its fallback key once none are left)")
async def claim_keys(body: KeysClaimBody, member: CurrentMember, svc: Service) -> dict[str, Any]:
    return (await svc.e2ee.claim(member, body.one_time_keys)).answer


@router.post(
    "/keys/device_signing/upload",
    summary="Publish my cross-signing keys (replacing them needs my password in auth.password)",
)
async def upload_cross_signing_keys(body: DeviceSigningUploadBody, member: CurrentMember, svc: Service) -> dict[str, Any]:
    keys = {"master_key": body.master_key, "self_signing_key": body.self_signing_key, "user_signing_key": body.user_signing_key}
    await svc.e2ee.upload_cross_signing(member, keys, body.auth.password if body.auth else None)
    return {}


@router.post("/keys/signatures/upload", summary="Add signatures to my devices, my master key or a contact's master key")
async def upload_signatures(body: SignaturesUploadBody, member: CurrentMember, svc: Service) -> dict[str, Any]:
    return await svc.e2ee.upload_signatures(member, body.root)
