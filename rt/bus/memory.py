"""In-process twin of the bus: sequence counters and bounded history per (account, channel)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from rt.bus import EVENTS_CHANNEL, Delivery, Event

_SUBSCRIBER_QUEUE = 10_000


class MemoryBus:
    def __init__(self, history: int = 1000) -> None:
        self._history_len = history
        self._seq: dict[tuple[str, str], int] = {}
        self._history: dict[tuple[str, str], deque[Delivery]] = {}
        self._subscribers: set[asyncio.Queue[Delivery | None]] = set()

    def _sequence(self, account_id: str, channel: str, event: Event) -> Delivery:
        key = (account_id, channel)
        seq = self._seq.get(key, 0) + 1
        self._seq[key] = seq
        delivery = Delivery(channel, seq, event)
        ring = self._history.get(key)
        if ring is None:
            ring = self._history[key] = deque(maxlen=self._history_len)
        ring.append(delivery)
        return delivery

    async def publish(self, events: list[Event]) -> list[Delivery]:
        out: list[Delivery] = []
        for event in events:
            out.append(self._sequence(event.account_id, event.channel, event))
            if event.channel != EVENTS_CHANNEL:
                out.append(self._sequence(event.account_id, EVENTS_CHANNEL, event))
        for queue in self._subscribers:
            for delivery in out:
                if queue.full():
                    break  # a subscriber this far behind is told by its own bounded queue policy
                queue.put_nowait(delivery)
        return out

    async def subscribe(self) -> AsyncIterator[Delivery]:
        queue: asyncio.Queue[Delivery | None] = asyncio.Queue(_SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            self._subscribers.discard(queue)

    async def history(self, account_id: str, channel: str, since: int) -> list[Delivery] | None:
        ring = self._history.get((account_id, channel))
        last = self._seq.get((account_id, channel), 0)
        if since >= last:
            return []
        if ring is None or not ring or ring[0].seq > since + 1:
            return None
        return [d for d in ring if d.seq > since]

    async def last_seq(self, account_id: str, channel: str) -> int:
        return self._seq.get((account_id, channel), 0)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
