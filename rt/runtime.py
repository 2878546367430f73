"""The process's parts, built once from Settings and shared by the server and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from rt.auth import tiers
from rt.auth.audit import AuditLog
from rt.auth.guard import Guard
from rt.auth.keys import KeyHasher
from rt.auth.limiter import Limiter, open_limiter
from rt.auth.manage import IssuedKey, KeyManager
from rt.auth.network import Network, parse_networks
from rt.auth.usage import UsageMeter
from rt.auth.vault import Box, load_pepper, load_secret_key
from rt.config import ConfigError, Settings
from rt.store import AccountExists, Store, open_store


@dataclass
class Runtime:
    settings: Settings
    store: Store
    limiter: Limiter
    audit: AuditLog
    usage: UsageMeter
    keys: KeyManager
    guard: Guard
    tiers: dict[str, tiers.Tier]
    trusted_proxies: tuple[Network, ...]
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stop_tasks(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.audit.flush()
        await self.usage.flush()


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings, *, background: bool = False) -> AsyncIterator[Runtime]:
    """Open the store and limiter; with background=True also run the flushers until exit."""
    try:
        tier_table = tiers.load(settings.tier_limits)
        trusted = parse_networks(settings.trusted_proxies, "RT_TRUSTED_PROXIES")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except Exception as exc:
        raise ConfigError(f"RT_TRUSTED_PROXIES: {exc}") from None
    data_dir = settings.data_path
    hasher = KeyHasher(load_pepper(settings.key_pepper, data_dir))
    box = Box(load_secret_key(settings.secret_key, data_dir))
    store = await open_store(settings.store_url)
    limiter = open_limiter(settings.redis_url, settings.redis_prefix)
    audit_log = AuditLog(store)
    usage = UsageMeter(store)
    runtime = Runtime(
        settings=settings,
        store=store,
        limiter=limiter,
        audit=audit_log,
        usage=usage,
        keys=KeyManager(store, hasher, box, audit_log),
        guard=Guard(settings, store, limiter, hasher, box, tier_table, audit_log, usage),
        tiers=tier_table,
        trusted_proxies=trusted,
    )
    try:
        if background:
            runtime.spawn(audit_log.run(), "audit-flush")
            runtime.spawn(usage.run(), "usage-flush")
        yield runtime
    finally:
        try:
            await runtime.stop_tasks()
        finally:
            await limiter.close()
            await store.close()


async def bootstrap(runtime: Runtime) -> IssuedKey | None:
    """On an empty store: account `default` and one full-access pro_plus key. None when there was nothing to do."""
    if await runtime.store.count_accounts() > 0:
        return None
    try:
        account = await runtime.keys.create_account("default", actor="bootstrap")
    except AccountExists:
        return None  # another process bootstrapped this store at the same moment
    return await runtime.keys.create(account.id, "full", "pro_plus", name="bootstrap", actor="bootstrap")
