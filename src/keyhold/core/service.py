"""The running service: every domain service wired to one engine, writer, bus and key provider."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.bus.base import Bus
from keyhold.bus.local import LocalBus
from keyhold.config import Settings
from keyhold.core.accounts import AccountService
from keyhold.core.conversations import ConversationService
from keyhold.core.delivery import Replayer
from keyhold.core.erasure import Erasure
from keyhold.core.keys import ConversationKeys
from keyhold.core.messages import MessageService
from keyhold.core.revocation import RevocationWatch
from keyhold.core.signin import SignInGuard
from keyhold.core.writer import Writer
from keyhold.crypto.keyprovider import KeyFileProvider, KeyProvider
from keyhold.crypto.passwords import PasswordHashing
from keyhold.store.blobs import BlobStore
from keyhold.store.db import create_engine, migrate

if TYPE_CHECKING:
    from keyhold.governance.service import Governance


@dataclass
class Keyhold:
    settings: Settings
    engine: AsyncEngine
    bus: Bus
    writer: Writer
    keys: ConversationKeys
    accounts: AccountService
    conversations: ConversationService
    messages: MessageService
    replayer: Replayer
    passwords: PasswordHashing
    signin: SignInGuard
    revocations: RevocationWatch
    provider: KeyProvider
    blobs: BlobStore
    erasure: Erasure
    governance: Governance | None = None

    async def stop(self) -> None:
        if self.governance is not None:
            await self.governance.stop()
        await self.revocations.stop()
        await self.writer.stop()
        self.passwords.close()
        await self.engine.dispose()


class MissingKeyMaterial(Exception):
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


async def start_keyhold(
    settings: Settings, provider: KeyProvider | None = None, bus: Bus | None = None
) -> Keyhold:
    """Migrate storage, then start the writer; the caller must `await stop()`."""
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.effective_database_url)
    await migrate(engine)
    bus = bus or LocalBus()
    writer = Writer(engine, bus, settings.write_batch_max)
    provider = provider or open_key_provider(settings)
    keys = ConversationKeys(provider)
    blobs = BlobStore(settings.blob_dir)
    passwords = PasswordHashing(
        settings.argon2_time_cost,
        settings.argon2_memory_kib,
        settings.argon2_parallelism,
        settings.password_hash_concurrency,
        settings.password_hash_queue,
    )
    signin = SignInGuard(engine)
    erasure = Erasure(blobs)
    messages = MessageService(engine, writer, keys, blobs, erasure, settings)
    await messages.start()
    writer.start()
    svc = Keyhold(
        settings=settings,
        engine=engine,
        bus=bus,
        writer=writer,
        keys=keys,
        accounts=AccountService(engine, passwords, signin, settings),
        conversations=ConversationService(engine, writer, messages, keys, erasure, settings),
        messages=messages,
        replayer=Replayer(engine, messages, settings.replay_page_size),
        passwords=passwords,
        signin=signin,
        revocations=RevocationWatch(engine),
        provider=provider,
        blobs=blobs,
        erasure=erasure,
    )
    # Governance sits beside core (it uses core's writer and keys); imported here, not at the
    # top, so that core's modules never import governance.
    from keyhold.governance.service import start_governance

    svc.governance = await start_governance(svc)
    return svc
