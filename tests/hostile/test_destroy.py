"""Finding 10: destroying content must follow its transaction.

Four paths destroy content (a sender's delete for everyone, account deletion, a moderator's
removal, the end of a preservation hold). If the transaction that destroys the rows fails at
its very end — a lost connection, a full disk — nothing happened: the rows are intact, so their
blobs must be too. These tests make the transaction fail just before its commit (the writer's
event write raises) and then read the attachment through the real paths.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from conftest import unique
from hostile_helpers import member_in_process, service_in_process, staff_in_process
from keyhold.app import Keyhold
from keyhold.core.accounts import Member
from keyhold.core.errors import Problem
from keyhold.core.messages import SendRequest
from keyhold.governance.legal import LegalRequest

DATA = b"attachment bytes that must outlive a failed transaction"


class StorageFailure(Exception):
    """What a lost connection or a full disk raises at the end of a transaction."""


def _fail(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise StorageFailure("the transaction failed before its commit")


async def fails_before_commit(svc: Keyhold, monkeypatch: pytest.MonkeyPatch, operation: Awaitable[Any]) -> None:
    """Run `operation` with its transaction failing just before its commit."""
    monkeypatch.setattr(svc.writer, "_write_events", _fail)
    with pytest.raises(StorageFailure):
        await operation
    monkeypatch.undo()


async def attachment_sent(svc: Keyhold, sender: Member, to: Member) -> tuple[int, int, str]:
    """(conversation id, message id, attachment id) of a file `sender` sent `to`."""
    view, _ = await svc.conversations.start(sender, [to.username], "standard", "", None)
    att = await svc.messages.upload(sender.id, view["id"], "file.bin", "application/octet-stream", DATA)
    message = await svc.messages.send(SendRequest(sender.id, sender.username, view["id"], "", unique("k"), att["id"]))
    return view["id"], message["id"], att["id"]


async def downloaded(svc: Keyhold, reader: Member, attachment_id: str) -> bytes:
    _meta, data = await svc.messages.download(reader.id, attachment_id)
    return data


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_failed_delete_for_everyone_keeps_the_attachment(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with service_in_process(tmp_path / "kh", backend) as svc:
        alice, bob = await member_in_process(svc, unique("a")), await member_in_process(svc, unique("b"))
        _cid, message_id, attachment_id = await attachment_sent(svc, alice, bob)

        await fails_before_commit(svc, monkeypatch, svc.messages.delete_for_everyone(alice.id, message_id))

        assert await downloaded(svc, bob, attachment_id) == DATA


async def test_a_failed_account_deletion_keeps_the_attachments(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with service_in_process(tmp_path / "kh", backend) as svc:
        alice, bob = await member_in_process(svc, unique("a")), await member_in_process(svc, unique("b"))
        _cid, _message_id, attachment_id = await attachment_sent(svc, alice, bob)

        await fails_before_commit(svc, monkeypatch, svc.conversations.delete_account(alice))

        assert await downloaded(svc, bob, attachment_id) == DATA


async def test_a_failed_moderator_removal_keeps_the_attachment(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with service_in_process(tmp_path / "kh", backend) as svc:
        gov = svc.governance
        alice, bob = await member_in_process(svc, unique("a")), await member_in_process(svc, unique("b"))
        cid, message_id, attachment_id = await attachment_sent(svc, alice, bob)
        moderator = await staff_in_process(gov, "mod_destroy", "moderator")
        case = await gov.reports.report(bob, cid, [message_id], "spam", "")
        await gov.reports.claim(moderator, case["id"])

        await fails_before_commit(svc, monkeypatch, gov.reports.decide(moderator, case["id"], "remove_message", "", None, None))

        assert await downloaded(svc, bob, attachment_id) == DATA


async def test_a_failed_hold_release_keeps_what_the_hold_preserved(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with service_in_process(tmp_path / "kh", backend) as svc:
        gov = svc.governance
        alice, bob = await member_in_process(svc, unique("a")), await member_in_process(svc, unique("b"))
        _cid, message_id, attachment_id = await attachment_sent(svc, alice, bob)
        legal = [await staff_in_process(gov, name, "legal") for name in ("legal_one", "legal_two")]
        today = time.strftime("%Y-%m-%d", time.gmtime())
        request = LegalRequest(
            agency="Agency", officer="Officer", contact="o@agency.example", country="US",
            process="preservation", targets=[alice.username], date_from=today, date_to=today, categories=[],
        )  # fmt: skip
        case = await gov.legal.create(legal[0], request, b"%PDF-1.4 preservation")
        await gov.legal.approve(legal[1], case["id"])
        await svc.messages.delete_for_everyone(alice.id, message_id)  # kept, hidden, by the hold

        await fails_before_commit(svc, monkeypatch, gov.legal.release(legal[0], case["id"]))

        # The hold still stands, so what it preserves is still there, sealed.
        assert svc.blobs.read(attachment_id)
        with pytest.raises(Problem) as gone:
            await downloaded(svc, bob, attachment_id)
        assert gone.value.status == 410
