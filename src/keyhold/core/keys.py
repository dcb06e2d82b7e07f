"""Conversation data keys: one DEK per epoch, wrapped once per member region, cached unwrapped.

This module opens DEKs for the service's own work on behalf of participants (sealing new
messages, showing history to members). Staff never come through here: content for a
non-participant is opened only by `governance.access`.

`key_for` and `new_epoch` are synchronous (a sync `Connection`): batches of sends use them on
the writer's database thread, async code through `AsyncConnection.run_sync`. The cache is
shared by both threads, hence its lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.clock import now_ms
from keyhold.core.errors import Problem
from keyhold.crypto.envelope import ConversationKey, new_data_key, wrap_context
from keyhold.crypto.keyprovider import KeyProvider, KeyProviderError, ManagedKeyProvider, WrappedKey
from keyhold.store import keys as key_store


class ConversationKeys:
    def __init__(self, provider: KeyProvider, cache_size: int = 8192) -> None:
        self.provider = provider
        self._cache: OrderedDict[tuple[int, int], ConversationKey] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def new_epoch(self, conn: Connection, conversation_id: int, epoch: int, regions: Iterable[str]) -> ConversationKey:
        """Make and store (inside the caller's transaction) the DEK of a new epoch."""
        dek = new_data_key()
        context = wrap_context(conversation_id, epoch)
        created = now_ms()
        rows = []
        for region in sorted(set(regions)):
            wrapped = self.provider.wrap(region, dek, context)
            rows.append(
                {
                    "conversation_id": conversation_id,
                    "epoch": epoch,
                    "region": region,
                    "kek_version": wrapped.kek_version,
                    "wrapped_dek": wrapped.blob,
                    "created_ms": created,
                }
            )
        key_store.insert_wraps(conn, rows)
        key = ConversationKey(conversation_id, epoch, dek)
        self._remember(key)
        return key

    def key_for(self, conn: Connection, conversation_id: int, epoch: int) -> ConversationKey:
        with self._lock:
            cached = self._cache.get((conversation_id, epoch))
            if cached is not None:
                self._cache.move_to_end((conversation_id, epoch))
                return cached
        wraps = key_store.wraps_for(conn, conversation_id, epoch)
        live = [w for w in wraps if w.wrapped_dek is not None]
        if not live:
            raise Problem(
                410, "content-destroyed", "Content destroyed", "the key of this content was shredded"
            )
        region, version, blob = live[0]
        try:
            dek = self.provider.unwrap(
                region, WrappedKey(version, blob), wrap_context(conversation_id, epoch)
            )
        except KeyProviderError as exc:
            raise Problem(
                503, "key-unavailable", "Key unavailable", f"conversation key could not be opened: {exc}"
            ) from exc
        key = ConversationKey(conversation_id, epoch, dek)
        self._remember(key)
        return key

    def forget_conversation(self, conversation_id: int) -> None:
        with self._lock:
            for cached in [k for k in self._cache if k[0] == conversation_id]:
                del self._cache[cached]

    def _remember(self, key: ConversationKey) -> None:
        with self._lock:
            self._cache[(key.conversation_id, key.epoch)] = key
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


async def rewrap_all(
    engine: AsyncEngine,
    provider: ManagedKeyProvider,
    on_progress: Callable[[int], None] = lambda _n: None,
    page: int = 500,
) -> int:
    """Rewrap every live DEK whose KEK is not its region's newest version; returns how many were
    rewrapped. Resumable: each page commits on its own, and a wrap already at the newest
    version is left alone. `on_progress` gets the number of wraps examined per page."""
    done = 0
    cursor: tuple[int, int, str] = (-1, -1, "")
    while True:
        async with engine.begin() as conn:
            rows = await key_store.wraps_page(conn, cursor, page)
            for conversation_id, epoch, region, version, blob in rows:
                newest = provider.current_version(region)
                if version != newest:
                    context = wrap_context(conversation_id, epoch)
                    dek = provider.unwrap(region, WrappedKey(version, blob), context)
                    rewrapped = provider.wrap(region, dek, context)
                    await key_store.replace_wrap(
                        conn, conversation_id, epoch, region, rewrapped.kek_version, rewrapped.blob
                    )
                    done += 1
        if rows:
            last = rows[-1]
            cursor = (last.conversation_id, last.epoch, last.region)
            on_progress(len(rows))
        if len(rows) < page:
            return done


async def wraps_by_kek_version(engine: AsyncEngine) -> dict[tuple[str, int], int]:
    """How many live DEKs each (region, KEK version) wraps: what `keys status` shows."""
    async with engine.connect() as conn:
        return {(region, version): count for region, version, count in await key_store.counts_by_version(conn)}


async def live_wraps(engine: AsyncEngine) -> int:
    """How many live wrapped DEKs there are: the work `rewrap_all` has to look at."""
    async with engine.connect() as conn:
        return await key_store.count_live(conn)
