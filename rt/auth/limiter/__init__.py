"""The rate limiter and lockout seam: GCRA per key, failure counters per IP. `memory` | `redis` twins."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    locked_for: float = 0.0  # seconds of lockout left for the IP `hit` was given: nothing was taken from the bucket


def gcra(now: float, tat: float | None, per_minute: int, burst: int) -> tuple[Decision, float | None]:
    """One GCRA step (times in seconds). Returns the decision and the new TAT to store (None: store nothing).

    The bucket holds `burst` requests and refills at `per_minute`; `reset_after` is when it is full again.
    """
    interval = 60.0 / per_minute
    capacity = interval * burst
    start = max(tat or now, now)
    new_tat = start + interval
    ahead = new_tat - now
    if ahead > capacity + 1e-9:
        return Decision(False, per_minute, 0, start - now, ahead - capacity), None
    remaining = math.floor((capacity - ahead) / interval + 1e-9)
    return Decision(True, per_minute, remaining, ahead, 0.0), new_tat


class Limiter(Protocol):
    async def hit(self, key: str, per_minute: int, burst: int, ip: str | None = None) -> Decision:
        """Take one request from `key`'s bucket. With `ip`, first the lockout check (in the same round trip): when
        `ip` is locked out, the Decision is refused with `locked_for` > 0 and the bucket is left as it was."""

    async def fail(self, ip: str, threshold: int, window_s: int, lock_s: int) -> float:
        """Count an auth failure from `ip`; returns seconds of lockout left (0 when not locked out)."""

    async def locked(self, ip: str) -> float:
        """Seconds of lockout left for `ip` (0 when it may try)."""

    async def ping(self) -> None: ...
    async def close(self) -> None: ...


def open_limiter(redis_url: str = "", prefix: str = "rt") -> Limiter:
    if redis_url:
        from rt.auth.limiter.redis import RedisLimiter

        return RedisLimiter(redis_url, prefix)
    from rt.auth.limiter.memory import MemoryLimiter

    return MemoryLimiter()


__all__ = ["Decision", "Limiter", "gcra", "open_limiter"]
