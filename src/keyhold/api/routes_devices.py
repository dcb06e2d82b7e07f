"""A member's devices (the sign-ins that hold tokens): list, rename, remove."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from keyhold.api.deps import CurrentMember, ReadingMember, Service
from keyhold.api.schemas import DEVICE_ID_PATTERN, DeviceRemoveBody, DeviceRenameBody, Text

router = APIRouter()
DevicePath = Annotated[Text, Path(pattern=DEVICE_ID_PATTERN)]


@router.get("/devices", summary="My devices: name, first and last sign-in, which one is this")
async def list_devices(member: ReadingMember, svc: Service) -> dict[str, Any]:
    return {"devices": await svc.devices.list(member)}


@router.patch("/devices/{device_id}", summary="Rename one of my devices")
async def rename_device(
    device_id: DevicePath, body: DeviceRenameBody, member: CurrentMember, svc: Service
) -> dict[str, Any]:
    return await svc.devices.rename(member, device_id, body.display_name)


@router.delete(
    "/devices/{device_id}",
    status_code=204,
    summary="Remove one of my devices (password required): its tokens end, its open streams close",
)
async def remove_device(
    device_id: DevicePath, body: DeviceRemoveBody, member: CurrentMember, svc: Service
) -> Response:
    await svc.devices.remove(member, device_id, body.password)
    return Response(status_code=204)
