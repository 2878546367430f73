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


class Bus(Protocol):
    async def publish(self, events: list[Event]) -> list[Delivery]:
        """Publish in order; each event goes to its own channel and to `events`. Returns what was sequenced."""

    def subscribe(self) -> AsyncIterator[Delivery]:
        """Every delivery published from now on (all accounts)."""

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


__all__ = ["Bus", "Delivery", "Event", "EventLog", "open_bus"]
