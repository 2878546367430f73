"""What both twins share: a subscriber's bounded buffer fed by one producer, and the set of recently published ids."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from rt.bus import BusLagged
from rt.records.events import Delivery

SUBSCRIBER_BOUND = 10_000  # deliveries a subscriber may fall behind by before its iterator raises BusLagged
PUBLISHED_TTL_S = 600.0  # an event id published within this long is not published again
PUBLISHED_BOUND = 200_000  # ids the memory twin remembers at most (the oldest go first)


class Subscriber:
    """One subscription: the producer offers without ever waiting; the consumer iterates what was offered, then
    sees the end (close) or BusLagged (it fell more than `bound` behind: what it missed is gone) or the producer's
    error."""

    def __init__(self, bound: int = SUBSCRIBER_BOUND) -> None:
        self._bound = bound
        self._items: deque[Delivery] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._lagged = False
        self._error: BaseException | None = None

    def offer(self, delivery: Delivery) -> None:
        if self._closed or self._lagged or self._error is not None:
            return
        if len(self._items) >= self._bound:
            self._lagged = True  # what is queued is still delivered, then the iterator raises
        else:
            self._items.append(delivery)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._wake.set()

    async def deliveries(self) -> AsyncIterator[Delivery]:
        items = self._items
        while True:
            while items:
                yield items.popleft()
            if self._lagged:
                raise BusLagged(f"this subscriber fell more than {self._bound} deliveries behind; subscribe again")
            if self._error is not None:
                raise self._error
            if self._closed:
                return
            self._wake.clear()
            await self._wake.wait()


class RecentIds:
    """Event ids published within `ttl` seconds, at most `bound` of them (the memory twin's publish-once check)."""

    def __init__(
        self, ttl: float = PUBLISHED_TTL_S, bound: int = PUBLISHED_BOUND, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._bound = bound
        self._now = clock
        self._until: dict[str, float] = {}  # insertion order is expiry order: every entry lives `ttl`

    def add(self, event_id: str) -> bool:
        """Remember `event_id`; False when it was already published within the window."""
        now = self._now()
        until = self._until
        while until:
            oldest = next(iter(until))
            if until[oldest] > now and len(until) < self._bound:
                break
            del until[oldest]
        if event_id in until:
            return False
        until[event_id] = now + self._ttl
        return True
