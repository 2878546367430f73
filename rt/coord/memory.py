"""Memory twins: this process is the only one, so it holds every role and hears its own ticks directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from rt.coord import Ticks


class MemoryLeases:
    expires = False  # no other instance: the role is this process's for as long as it runs

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self._fence: dict[str, int] = {}

    async def acquire(self, role: str, ttl_ms: int) -> int | None:
        token = self._fence[role] = self._fence.get(role, 0) + 1
        return token

    async def renew(self, role: str, token: int, ttl_ms: int) -> bool:
        return self._fence.get(role) == token

    async def release(self, role: str, token: int) -> None:
        """Nothing to hand over."""

    async def close(self) -> None:
        """Nothing to close."""


class MemoryTicks:
    """Unbounded queues are safe here: the one publisher is the market loop of this process, at the tick rate."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Ticks]] = set()

    async def publish(self, role: str, ticks: Ticks) -> bool:
        for queue in self._queues:
            queue.put_nowait(ticks)
        return True

    async def subscribe(self) -> AsyncIterator[Ticks]:
        queue: asyncio.Queue[Ticks] = asyncio.Queue()
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    async def close(self) -> None:
        """Nothing to close."""
