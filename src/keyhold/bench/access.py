"""`keyhold bench access`: what one governed staff read costs, next to a participant's read.

Runs in-process on a throwaway data dir (SQLite on disk, local key file): a member's
conversation of N messages, an approved search warrant on that member, then R timed staff
reads through `governance.access` (each: case, region and scope checks, an access-log
append with a signed tree head committed to disk, a region-KEK unwrap, the decryption), and
the same number of participant reads of the same messages through the member path.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

if TYPE_CHECKING:  # the server's modules load only when this bench runs: every other
    # command starts without them (`keyhold --help` and the clients stay quick)
    from keyhold.app import Keyhold
    from keyhold.config import Settings
    from keyhold.core.accounts import Member
    from keyhold.governance.staff import StaffMember

console = Console()
PASSWORD = "bench-password-not-secret"  # noqa: S105 - throwaway accounts in a throwaway dir


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


async def _member(svc: Keyhold, name: str) -> Member:
    await svc.accounts.register(name, PASSWORD, "1990-01-01", "us")
    login = await svc.accounts.login(name, PASSWORD, address="bench")
    return await svc.accounts.authenticate(login["token"])


async def _staff(svc: Keyhold, name: str) -> StaffMember:
    made = await svc.governance.staff.add(name, PASSWORD, "legal", "us")
    from keyhold.governance.staff import StaffMember

    return StaffMember(made["id"], name, "legal", "us")


async def run_access_bench(settings: Settings, messages: int, reads: int, batch: int) -> dict[str, Any]:
    from keyhold.app import start_keyhold
    from keyhold.core.messages import SendRequest
    from keyhold.governance.legal import LegalRequest

    svc = await start_keyhold(settings)
    try:
        gov = svc.governance
        alice, bob = await _member(svc, "alice"), await _member(svc, "bob")
        await svc.accounts.follow(alice, "bob")  # friends: no message request between them
        await svc.accounts.follow(bob, "alice")
        conversation, _ = await svc.conversations.start(alice, ["bob"], "standard", "", "direct")
        ids = [
            int(
                (
                    await svc.messages.send(
                        SendRequest(bob.id, "bob", conversation["id"], f"message {i}", None)
                    )
                )["id"]
            )
            for i in range(messages)
        ]
        creator, approver = await _staff(svc, "legal_a"), await _staff(svc, "legal_b")
        year = time.gmtime().tm_year
        case = await gov.legal.create(
            creator,
            LegalRequest(
                agency="Bench",
                officer="Bench",
                contact="bench@example.invalid",
                country="US",
                process="search_warrant",
                targets=["bob"],
                date_from=f"{year - 1}-01-01",
                date_to=f"{year + 1}-12-31",
                categories=["message_content"],
            ),
            b"bench warrant",
        )
        await gov.legal.approve(approver, case["id"])

        staff_one: list[float] = []
        staff_batch: list[float] = []
        member_one: list[float] = []
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("governed reads", total=reads * 3)
            for i in range(reads):
                wanted = ids[i % len(ids)]
                started = time.perf_counter()
                got = await gov.access.read_messages(creator, case["id"], [wanted], "benchmark")
                staff_one.append(time.perf_counter() - started)
                assert got[0]["id"] == wanted and got[0]["text"]
                progress.advance(task)
            for i in range(reads):
                window = [ids[(i * batch + j) % len(ids)] for j in range(batch)]
                started = time.perf_counter()
                await gov.access.read_messages(creator, case["id"], window, "benchmark")
                staff_batch.append(time.perf_counter() - started)
                progress.advance(task)
            for i in range(reads):
                wanted = ids[i % len(ids)]
                started = time.perf_counter()
                await svc.conversations.history(alice, conversation["id"], wanted + 1, None, 1)
                member_one.append(time.perf_counter() - started)
                progress.advance(task)
        head = gov.log.head
        return {
            "reads": reads,
            "batch": batch,
            "staff_read_p50_ms": _ms(staff_one, 0.5),
            "staff_read_p99_ms": _ms(staff_one, 0.99),
            "staff_reads_per_second": round(len(staff_one) / sum(staff_one), 1),
            "staff_batch_read_p50_ms": _ms(staff_batch, 0.5),
            "staff_batch_ms_per_message": round(statistics.median(staff_batch) * 1000 / batch, 3),
            "member_read_p50_ms": _ms(member_one, 0.5),
            "member_read_p99_ms": _ms(member_one, 0.99),
            "cost_ratio_staff_to_member": round(
                statistics.median(staff_one) / statistics.median(member_one), 1
            ),
            "log_entries": head.size if head else 0,
        }
    finally:
        await svc.stop()


def access(
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures as JSON here.")] = None,
    messages: Annotated[int, typer.Option(min=10, help="Messages in the target's conversation.")] = 200,
    reads: Annotated[int, typer.Option(min=10, help="Timed reads of each kind.")] = 300,
    batch: Annotated[int, typer.Option(min=1, max=200, help="Messages per batched staff read.")] = 20,
) -> None:
    """Cost of one governed staff read (checks + durable log entry + unwrap + decrypt)
    against a participant's read of the same message, on a throwaway data dir."""
    from keyhold.app import initialize
    from keyhold.config import load_settings

    with tempfile.TemporaryDirectory(prefix="keyhold-bench-access-") as tmp:
        # Cheap argon2 for the throwaway accounts: sign-up cost is not what is measured.
        settings = load_settings(
            Path(tmp) / "home", argon2_time_cost=1, argon2_memory_kib=8192, argon2_parallelism=1
        )
        initialize(settings)
        figures = asyncio.run(run_access_bench(settings, messages, reads, batch))
    table = Table("figure", "value", title="Governed access cost")
    for key, value in figures.items():
        table.add_row(key, str(value))
    console.print(table)
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
