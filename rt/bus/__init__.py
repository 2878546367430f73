"""The event bus seam: every state change is an Event published here; sessions and webhooks only subscribe.

The bus gives each event a `seq` per (account, channel) and keeps recent history so a client can resume.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from rt.records.events import Delivery, Event


class EventLog(Protocol):
    """Where the stored events are (the store): the bus continues its sequences from them at start."""

    async def event_counts(self) -> dict[tuple[str, str], int]: ...
    async def recent_events(self, limit: int) -> list[Event]: ...


class BusLagged(Exception):
    """A subscriber fell too far behind: the deliveries it had queued were yielded, the ones after are gone for it.
    Subscribe again (and treat the gap as "anything may have changed")."""


class Bus(Protocol):
    """Publish once per event id: an event whose id was published in the last 10 minutes is delivered zero times
    (publish returns no Delivery for it), so a relay may publish a stored event again when it cannot know whether its
    first publish got through. (Redis: a `{prefix}:pub:{id}` key with a 10-minute expiry, set in the same script that
    sequences the event, shared by every instance; memory: the last 200,000 ids of this process.)

    One reader per bus object: every subscriber of one bus is fed from one read of the stream (Redis: one XREAD
    loop on one connection, started by the first subscriber and stopped when the last leaves or at close). Each
    subscriber has its own queue of at most 10,000 deliveries; one that falls further behind never slows the others
    nor grows without bound: its iterator yields what it had queued, then raises BusLagged.
    """

    async def publish(self, events: list[Event]) -> list[Delivery]:
        """Publish in order; each event goes to its own channel and to `events`. Returns what was sequenced (nothing
        for an event whose id was already published within the last 10 minutes)."""

    def subscribe(self) -> AsyncIterator[Delivery]:
        """Every delivery published from now on (all accounts). Ends at close; raises BusLagged when this subscriber
        fell more than its bound behind."""

    async def history(self, account_id: str, channel: str, since: int) -> list[Delivery] | None:
        """Deliveries with seq > since, or None when history no longer reaches back that far."""

    async def last_seq(self, account_id: str, channel: str) -> int: ...
    async def restore(self, store: EventLog) -> None:
        """At start: continue the sequences from the stored events, where the twin keeps none itself."""

    async def ping(self) -> None: ...
    async def close(self) -> None: ...


def open_bus(redis_url: str = "", prefix: str = "rt", history: int = 1000) -> Bus:
    if redis_url:
        from rt.bus.redis import RedisBus

        return RedisBus(redis_url, prefix, history)
    from rt.bus.memory import MemoryBus

    return MemoryBus(history)


__all__ = ["Bus", "BusLagged", "EventLog", "open_bus"]
