"""In-process twin of the bus: sequence counters and bounded history per (account, channel)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from rt.bus import EventLog
from rt.bus.fanout import SUBSCRIBER_BOUND, RecentIds, Subscriber
from rt.records.events import EVENTS_CHANNEL, Delivery, Event, channel_of


class MemoryBus:
    def __init__(
        self, history: int = 1000, *, bound: int = SUBSCRIBER_BOUND, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._history_len = history
        self._bound = bound
        self._seq: dict[tuple[str, str], int] = {}
        self._history: dict[tuple[str, str], deque[Delivery]] = {}
        self._subscribers: set[Subscriber] = set()
        self._published = RecentIds(clock=clock)
        self._closed = False

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

    async def restore(self, store: EventLog) -> None:
        """Continue the sequences (and history) of a previous run from the stored events, so a client resuming with
        `since` across a restart neither misses events nor drops new ones as already seen."""
        counts = await store.event_counts()
        recent = await store.recent_events(self._history_len)
        totals: dict[tuple[str, str], int] = {}
        for (account_id, name), count in counts.items():
            for channel in {channel_of(name), EVENTS_CHANNEL}:
                totals[(account_id, channel)] = totals.get((account_id, channel), 0) + count
        remaining = dict(totals)
        placed: list[Delivery] = []
        for event in recent:
            # In the history now, as if published: the outbox's relay must not deliver them again.
            self._published.add(event.id)
        for event in reversed(recent):
            for channel in {event.channel, EVENTS_CHANNEL}:
                key = (event.account_id, channel)
                placed.append(Delivery(channel, remaining[key], event))
                remaining[key] -= 1
        for delivery in reversed(placed):
            key = (delivery.event.account_id, delivery.channel)
            ring = self._history.setdefault(key, deque(maxlen=self._history_len))
            ring.append(delivery)
        self._seq.update(totals)

    async def publish(self, events: list[Event]) -> list[Delivery]:
        out: list[Delivery] = []
        for event in events:
            if not self._published.add(event.id):
                continue
            out.append(self._sequence(event.account_id, event.channel, event))
            if event.channel != EVENTS_CHANNEL:
                out.append(self._sequence(event.account_id, EVENTS_CHANNEL, event))
        for subscriber in self._subscribers:
            for delivery in out:
                subscriber.offer(delivery)
        return out

    async def subscribe(self) -> AsyncIterator[Delivery]:
        subscriber = Subscriber(self._bound)
        if self._closed:
            subscriber.close()
        self._subscribers.add(subscriber)
        try:
            async for delivery in subscriber.deliveries():
                yield delivery
        finally:
            self._subscribers.discard(subscriber)

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
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.close()
