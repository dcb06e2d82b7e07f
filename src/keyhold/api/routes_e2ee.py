"""End-to-end encryption's key directory, under /e2ee/: the Matrix client-server
specification's endpoints of the same names, with its request and response bodies; and the
key-transparency log's head and consistency proofs, public as the access log's are (they
reveal hashes and the log's size only: how many key publications and removals there were)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from keyhold.api.deps import CurrentMember, Service
from keyhold.api.limits import DeviceMessenger
from keyhold.api.schemas import MAX_ID, Text
from keyhold.api.schemas_e2ee import (
    EVENT_TYPE_PATTERN,
    TXN_ID_PATTERN,
    DeviceSigningUploadBody,
    KeysClaimBody,
    KeysQueryBody,
    KeysUploadBody,
    SendToDeviceBody,
    SignaturesUploadBody,
)
from keyhold.core.errors import invalid

router = APIRouter(prefix="/e2ee")


@router.post("/keys/upload", summary="Publish this device's keys, one-time keys and fallback key")
async def upload_keys(body: KeysUploadBody, member: CurrentMember, svc: Service) -> dict[str, Any]:
    return await svc.e2ee.upload(member, body.device_keys, body.one_time_keys, body.fallback_keys)


@router.post("/keys/query", summary="The published keys of members I share a conversation with or am friends with")
async def query_keys(body: KeysQueryBody, member: CurrentMember, svc: Service) -> dict[str, Any]:
    return await svc.e2ee.query(member, body.device_keys)


@router.post("/keys/claim", summary="Take one one-time key per device (its fallback key once none are left)")
async def claim_keys(body: KeysClaimBody, member: CurrentMember, svc: Service) -> dict[str, Any]:
    return await svc.e2ee.claim(member, body.one_time_keys)


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


@router.put(
    "/sendToDevice/{event_type}/{txn_id}",
    summary="Send messages to devices (delivered over their streams as e2ee.to_device); a retry with the same txn_id sends nothing twice",
)
async def send_to_device(
    event_type: Annotated[Text, Path(pattern=EVENT_TYPE_PATTERN)],
    txn_id: Annotated[Text, Path(pattern=TXN_ID_PATTERN)],
    body: SendToDeviceBody,
    member: DeviceMessenger,
    svc: Service,
) -> dict[str, Any]:
    await svc.to_device.send(member, event_type, txn_id, body.messages)
    return {}


@router.get("/transparency/sth", summary="The newest signed tree head of the key-transparency log")
async def key_log_head(svc: Service) -> dict[str, Any]:
    log = svc.e2ee.key_log
    if log.head is None:
        return {"size": 0, "root": None, "public_key": log.public_key.hex()}
    return log.head.to_json(log.public_key)


@router.get("/transparency/consistency", summary="Consistency proof of the key-transparency log between two sizes")
async def key_log_consistency(
    svc: Service,
    first: Annotated[int, Query(alias="from", ge=0, le=MAX_ID, description="the older tree size")],
    second: Annotated[int, Query(alias="to", ge=0, le=MAX_ID, description="the newer tree size")],
) -> dict[str, Any]:
    log = svc.e2ee.key_log
    committed = log.head.size if log.head else 0
    if not 0 <= first <= second <= committed:
        raise invalid(f"need 0 <= from <= to <= {committed} (the newest signed head's size)")
    return {"from": first, "to": second, "proof": [h.hex() for h in log.consistency_proof(first, second)]}
