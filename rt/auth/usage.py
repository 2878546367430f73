"""Per-key request counters for GET /v1/account/usage, kept in memory and added to the store every second."""

from __future__ import annotations

import asyncio
import logging
import time

from rt.records.accounts import Usage, UsageDelta
from rt.store import UsageCounts

log = logging.getLogger("rt.usage")

WINDOW_HOURS = 24


class UsageMeter:
    def __init__(self, store: UsageCounts, flush_every: float = 1.0) -> None:
        self._store = store
        self._pending: dict[tuple[str, int], UsageDelta] = {}
        self._flush_lock = asyncio.Lock()
        self._flush_every = flush_every

    def _delta(self, key_id: str) -> UsageDelta:
        now = time.time()
        hour = int(now // 3600)
        delta = self._pending.get((key_id, hour))
        if delta is None:
            delta = self._pending[(key_id, hour)] = UsageDelta(key_id, hour)
        delta.last_used_ms = int(now * 1000)
        return delta

    def request(self, key_id: str) -> None:
        self._delta(key_id).requests += 1

    def auth_failure(self, key_id: str) -> None:
        self._delta(key_id).auth_failures += 1

    def rate_limited(self, key_id: str) -> None:
        self._delta(key_id).rate_limited += 1

    async def totals(self, key_id: str) -> Usage:
        since = int(time.time() // 3600) - (WINDOW_HOURS - 1)
        # Under the flush lock, counts are either still pending here or committed in the store, never both.
        async with self._flush_lock:
            stored = await self._store.usage(key_id, since)
            pending = [d for d in self._pending.values() if d.key_id == key_id and d.hour >= since]
        return Usage(
            requests=stored.requests + sum(d.requests for d in pending),
            auth_failures=stored.auth_failures + sum(d.auth_failures for d in pending),
            rate_limited=stored.rate_limited + sum(d.rate_limited for d in pending),
        )

    async def flush(self) -> None:
        async with self._flush_lock:
            batch, self._pending = list(self._pending.values()), {}
            if batch:
                try:
                    await self._store.add_usage(batch)
                except BaseException:
                    for delta in batch:  # keep the counts for the next flush
                        self._merge(delta)
                    raise

    def _merge(self, delta: UsageDelta) -> None:
        mine = self._pending.setdefault((delta.key_id, delta.hour), UsageDelta(delta.key_id, delta.hour))
        mine.requests += delta.requests
        mine.auth_failures += delta.auth_failures
        mine.rate_limited += delta.rate_limited
        mine.last_used_ms = max(mine.last_used_ms, delta.last_used_ms)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_every)
            try:
                await self.flush()
            except Exception:
                log.exception("usage flush failed")
