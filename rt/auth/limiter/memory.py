"""In-process twin of the limiter: exact for one instance, nothing shared."""

from __future__ import annotations

import time
from collections.abc import Callable

from rt.auth.limiter import Decision, gcra

_SWEEP_EVERY = 10_000


class MemoryLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._now = clock
        self._tat: dict[str, float] = {}
        self._failures: dict[str, tuple[int, float]] = {}
        self._locks: dict[str, float] = {}
        self._ops = 0

    async def hit(self, key: str, per_minute: int, burst: int, ip: str | None = None) -> Decision:
        if ip is not None:
            locked_for = await self.locked(ip)
            if locked_for > 0:
                return Decision(False, per_minute, 0, 0.0, 0.0, locked_for)
        now = self._now()
        decision, new_tat = gcra(now, self._tat.get(key), per_minute, burst)
        if new_tat is not None:
            self._tat[key] = new_tat
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            self._sweep(now)
        return decision

    async def fail(self, ip: str, threshold: int, window_s: int, lock_s: int) -> float:
        now = self._now()
        count, expires = self._failures.get(ip, (0, now + window_s))
        if expires <= now:
            count, expires = 0, now + window_s
        count += 1
        if count >= threshold:
            self._failures.pop(ip, None)
            self._locks[ip] = now + lock_s
            return float(lock_s)
        self._failures[ip] = (count, expires)
        return await self.locked(ip)

    async def locked(self, ip: str) -> float:
        until = self._locks.get(ip)
        if until is None:
            return 0.0
        left = until - self._now()
        if left <= 0:
            del self._locks[ip]
            return 0.0
        return left

    def _sweep(self, now: float) -> None:
        """Forget buckets that are full again and counters that expired, so memory stays bounded."""
        self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._failures = {k: v for k, v in self._failures.items() if v[1] > now}
        self._locks = {k: v for k, v in self._locks.items() if v > now}

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
