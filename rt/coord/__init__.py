"""Coordination of instances: leases on one-at-a-time roles with fencing tokens, and the market's tick channel.

Twins side by side: `memory` (one process holds every role; ticks go straight to the local feed) and `redis`
(leases are keys with a TTL, ticks go out on a pub/sub channel every instance reads), picked by the URL's scheme.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from rt.exchanges import Ticker


class Leases(Protocol):
    """A lease per role: at most one instance holds it, each new holder with a larger fencing token."""

    instance: str
    # Whether a lease not renewed in time runs out (another instance may then gain it). False where this process is
    # the only one that could ever hold it: a renewal the loop ran late loses nothing there.
    expires: bool

    async def acquire(self, role: str, ttl_ms: int) -> int | None:
        """The new fencing token when this instance now holds the role, None when another does."""

    async def renew(self, role: str, token: int, ttl_ms: int) -> bool:
        """Extend the lease by ttl_ms from now; False when it is no longer this holder's."""

    async def release(self, role: str, token: int) -> None:
        """Give the role up now, if this holder still has it."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Ticks:
    """One step of the market, stamped with the fencing token of the instance that made it."""

    token: int
    tickers: tuple[Ticker, ...]


class TickChannel(Protocol):
    """Where the market's holder sends its ticks and every instance (the holder too) hears them."""

    async def publish(self, role: str, ticks: Ticks) -> bool:
        """Send, unless this token no longer holds `role` (a paused old holder cannot move the market)."""

    def subscribe(self) -> AsyncIterator[Ticks]:
        """Every step sent from now on, in the order sent."""

    async def close(self) -> None: ...


def raise_if_cancelled() -> None:
    """A cancellation redis-py swallowed (it times socket writes with asyncio.wait_for, which on Python 3.11 can lose
    one) still stops the task."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def instance_id(configured: str = "") -> str:
    """RT_INSTANCE_ID, or `{hostname}-{pid}-{4 random hex}`."""
    return configured or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def open_coord(url: str, prefix: str, instance: str) -> tuple[Leases, TickChannel]:
    """The memory twins when url is empty, else the Redis twins (imported only then)."""
    if not url:
        from rt.coord.memory import MemoryLeases, MemoryTicks

        return MemoryLeases(instance), MemoryTicks()
    from rt.coord.redis import RedisLeases, RedisTicks

    leases = RedisLeases(url, prefix, instance)
    return leases, RedisTicks(leases, url, prefix)


__all__ = ["Leases", "TickChannel", "Ticks", "instance_id", "open_coord", "raise_if_cancelled"]
