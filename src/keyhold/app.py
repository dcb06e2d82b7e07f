"""Wiring: builds the services of one data dir from its settings, starts and stops them.

The only module that knows every layer. `core` offers seams (the writer's batch handler, the
key provider, the bus); governance is built from core's pieces here; the API is handed the
result. Nothing below imports this module: the arrows of `docs/architecture.md` point down.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.bus.base import Bus
from keyhold.bus.local import LocalBus
from keyhold.config import CONFIG_FILE, Settings, render_config
from keyhold.core.accounts import AccountService
from keyhold.core.contact_actions import ContactService
from keyhold.core.contacts import ContactGate
from keyhold.core.conversations import ConversationService
from keyhold.core.delivery import Delivery
from keyhold.core.devices import DeviceService
from keyhold.core.disappearing import DisappearingMessages
from keyhold.core.erasure import Erasure
from keyhold.core.groups import GroupService
from keyhold.core.keys import ConversationKeys
from keyhold.core.messages import MessageService
from keyhold.core.passwords import Passwords
from keyhold.core.revocation import RevocationWatch
from keyhold.core.signin import SignInGuard
from keyhold.core.writer import Writer
from keyhold.crypto.franking_keys import FrankingKeys
from keyhold.crypto.keyprovider import KeyFileProvider, KeyProvider
from keyhold.crypto.passwords import PasswordHashing
from keyhold.crypto.signing import ServiceSigner
from keyhold.crypto.tls import write_self_signed
from keyhold.e2ee.key_log import KeyLog
from keyhold.e2ee.keys import KeyDirectory
from keyhold.e2ee.to_device import ToDevice
from keyhold.governance.held import HeldMessages
from keyhold.governance.service import Governance, start_governance
from keyhold.governance.strikes import Ladder
from keyhold.safety.attachments import AttachmentMatcher
from keyhold.safety.contacts import ContactRules
from keyhold.safety.guardians import Guardians
from keyhold.safety.limiter import RateLimiter
from keyhold.safety.pipeline import build_scanner
from keyhold.safety.policy import POLICY_FILE, policy_file
from keyhold.safety.scan_process import ScanProcess
from keyhold.safety.screening import SafetyScreen
from keyhold.store.blobs import BlobStore
from keyhold.store.db import create_engine, migrate, writer_transactions

if TYPE_CHECKING:
    from fastapi import FastAPI


@dataclass
class Keyhold:
    """The running service of one data dir."""

    settings: Settings
    engine: AsyncEngine
    bus: Bus
    writer: Writer
    keys: ConversationKeys
    accounts: AccountService
    devices: DeviceService
    conversations: ConversationService
    groups: GroupService
    messages: MessageService
    delivery: Delivery
    passwords: Passwords
    signin: SignInGuard
    revocations: RevocationWatch
    provider: KeyProvider
    blobs: BlobStore
    erasure: Erasure
    governance: Governance
    disappearing: DisappearingMessages
    e2ee: KeyDirectory
    to_device: ToDevice
    contacts: ContactService
    guardians: Guardians
    limits: RateLimiter
    held: HeldMessages

    async def check_storage(self) -> None:
        """Raise if the database does not answer (the health check)."""
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def stop(self) -> None:
        await self.disappearing.stop()
        await self.governance.stop()
        await self.revocations.stop()
        await self.writer.stop()
        if isinstance(self.messages.screening.screen, SafetyScreen):
            await self.messages.screening.screen.aclose()  # the classifier's connections
        self.passwords.close()
        await self.engine.dispose()


class DataDirError(Exception):
    """A data dir that cannot be used as it is (a key file lost, the database unreachable)."""


class MissingKeyMaterial(DataDirError):
    """An initialized data dir lost a key file: refusing beats silently making new keys."""


def open_key_provider(settings: Settings, create: bool = False) -> KeyFileProvider:
    """The local KEK file. Only `create` (a new data dir) may make it; a missing key file in
    an existing data dir would make every `standard` message unreadable, so it is an error."""
    if not create and not settings.key_file.exists():
        raise MissingKeyMaterial(
            f"{settings.key_file} is missing: restore it from your backup (without it no standard "
            "message can be read); to start over with new keys, use a new data dir"
        )
    provider = KeyFileProvider(settings.key_file)
    provider.ensure_regions(settings.regions)
    return provider


def initialize(
    settings: Settings, self_signed: bool = False, hostnames: list[str] | None = None
) -> tuple[bool, tuple[Path, Path] | None]:
    """Create the data dir on first use (config, keys, signing key, blob store, schema); safe
    to run again. Returns whether it was new and, with `self_signed`, the certificate and key."""
    home = settings.home
    new = not (home / CONFIG_FILE).exists()
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    open_key_provider(settings, create=new)  # a new dir gets keys.json (0600), one KEK per region
    if new:
        if not settings.signing_key_file.exists():
            ServiceSigner.create(settings.signing_key_file)
        (home / CONFIG_FILE).write_text(render_config(settings))
    elif not settings.signing_key_file.exists():
        raise MissingKeyMaterial(
            f"{settings.signing_key_file} is missing: restore it from your backup (signed tree heads and "
            "packages made so far can only be checked against its public key)"
        )
    settings.blob_dir.mkdir(exist_ok=True)

    async def _migrate() -> None:
        engine = create_engine(settings.effective_database_url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(_migrate())
    except (OSError, SQLAlchemyError) as exc:
        raise DataDirError(
            f"cannot open the database: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        ) from exc
    certificate = None
    if self_signed:
        certificate = home / "tls-cert.pem", home / "tls-key.pem"
        write_self_signed(*certificate, hostnames or ["localhost", "127.0.0.1"])
    return new, certificate


async def start_keyhold(
    settings: Settings, provider: KeyProvider | None = None, bus: Bus | None = None
) -> Keyhold:
    """Migrate storage, start the writer and the background tasks; the caller must `await
    stop()`."""
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.effective_database_url)
    await migrate(engine)
    bus = bus or LocalBus()
    writer = Writer(engine, writer_transactions(settings.effective_database_url, engine), bus, settings.write_batch_max)
    provider = provider or open_key_provider(settings)
    keys = ConversationKeys(provider)
    blobs = BlobStore(settings.blob_dir)
    passwords = Passwords(
        PasswordHashing(
            settings.argon2_time_cost,
            settings.argon2_memory_kib,
            settings.argon2_parallelism,
            settings.password_hash_concurrency,
            settings.password_hash_queue,
        )
    )
    signin = SignInGuard(engine)
    erasure = Erasure(blobs)
    franking = FrankingKeys.open(settings.franking_key_file)
    messages = MessageService(engine, writer, keys, blobs, erasure, settings, franking)
    await messages.start()
    writer.start()
    governance = await start_governance(
        settings, engine, writer, provider, passwords, signin, erasure, blobs, franking
    )
    conversations = ConversationService(engine, writer, messages, keys, erasure, settings)
    accounts = AccountService(engine, passwords, signin, settings)
    safety_policy = policy_file(settings.home / POLICY_FILE)
    accounts.min_age = lambda region: safety_policy.current().for_region(region).min_age
    governance.strikes.ladder = lambda: Ladder(**asdict(safety_policy.current().enforcement))
    gate = ContactGate(ContactRules(safety_policy))
    accounts.findable = gate.findable
    conversations.reach = gate.check_reach
    conversations.check_group = gate.check_group
    conversations.check_send = gate.check_send
    conversations.check_rename = gate.check_rename
    messages.send_gate = gate.gate_sends
    messages.check_send = gate.check_send
    # The scanning pipeline on `standard` sends and uploads; what its verdicts open for moderators.
    if settings.scanning == "on":
        scanner = build_scanner(
            settings.home,
            settings.scanning_classifier_url or None,
            fail_open=settings.scanning_classifier_fail_open,
        )
        matcher = AttachmentMatcher.for_home(settings.home)
        scan_now = scanner.scan_local if scanner.http is None else None
        process = ScanProcess(settings.home) if scan_now is not None and settings.uses_scan_process else None
        if process is not None:
            process.start_soon()  # ready before the first sends, which meanwhile scan in-process
        messages.screening.screen = SafetyScreen(engine, scanner, gate.rules.band, matcher, scan_now, process)
    held = HeldMessages(
        engine, writer, governance.log, erasure, messages, governance.reports, governance.strikes
    )
    messages.screening.on_screened = held.on_screened
    key_log = KeyLog(engine, governance.signer, writer, settings.server_name)
    await key_log.start()
    e2ee = KeyDirectory(engine, writer, accounts, key_log, settings.server_name)
    conversations.before_keys_removed = key_log.removing
    devices = DeviceService(engine, writer, accounts)
    devices.before_keys_removed = key_log.removing
    delivery = Delivery(engine, bus, messages, settings.replay_page_size)
    delivery.greetings.append(e2ee.greeting)
    disappearing = DisappearingMessages(writer, erasure, keys)
    disappearing.start()
    to_device = ToDevice(writer, settings.server_name)
    to_device.messaging_off = gate.messaging_off
    limits = RateLimiter(lambda: safety_policy.current().rate_limits, settings.rate_limit_scale)
    # New message requests are counted per account and per client address (the API's).
    gate.charge_requests = lambda member, n: limits.take_many("requests", member, member.address, n)
    return Keyhold(
        settings=settings,
        engine=engine,
        bus=bus,
        writer=writer,
        keys=keys,
        accounts=accounts,
        devices=devices,
        conversations=conversations,
        groups=GroupService(writer, conversations, settings),
        messages=messages,
        delivery=delivery,
        passwords=passwords,
        signin=signin,
        revocations=RevocationWatch(engine),
        provider=provider,
        blobs=blobs,
        erasure=erasure,
        governance=governance,
        disappearing=disappearing,
        e2ee=e2ee,
        to_device=to_device,
        contacts=ContactService(engine, writer, accounts, gate),
        guardians=Guardians(engine, writer, accounts, gate),
        limits=limits,
        held=held,
    )


def asgi_app(settings: Settings) -> FastAPI:
    """The HTTP + WebSocket application of a data dir, starting its services with it."""
    # Loaded here, not at the top: every command on a data dir builds the services without
    # the API: FastAPI, the routes and their schemas are about half a second of its start-up.
    from keyhold.api.app import create_app

    return create_app(settings, start_keyhold)
