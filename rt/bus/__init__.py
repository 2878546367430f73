"""The event bus seam: every state change is an Event published here; sessions and webhooks only subscribe.

The bus gives each event a `seq` per (account, channel) and keeps recent history so a client can resume.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from rt.ids import new_id

if TYPE_CHECKING:
    from rt.store import Store

CHANNEL_OF_PREFIX = {
    "position": "positions",
    "order": "orders",
    "strategy": "strategies",
    "risk": "risk",
    "emergency": "risk",
    "account": "account",
}

EVENTS_CHANNEL = "events"

# Every event the account's channels carry, named for what happened. AsyncAPI and the tests read this table.
EVENTS: dict[str, str] = {
    "order.created": "an order was accepted and sent to the venue",
    "order.filled": "an order filled",
    "order.canceled": "an open order was canceled",
    "order.rejected": "Cerberus or the venue refused an order",
    "position.opened": "a position opened: at market, or when its resting limit entry filled",
    "position.updated": "a fill changed a position, or its stop loss or take profit changed",
    "position.closed": "an open position closed; `reason` says why",
    "position.canceled": "a resting limit entry was canceled before it filled: the position never opened",
    "position.rejected": "Cerberus refused a position",
    "strategy.started": "a strategy started",
    "strategy.stopped": "a strategy stopped",
    "risk.limit_reached": "usage crossed 80% of a limit (`level: warning`) or reached it (`level: breached`)",
    "risk.envelope_updated": "the risk envelope (or the trading state) was changed",
    "emergency.kill_triggered": "the kill switch ran: KILL, CLOSE_ALL, FLATTEN or LOCK",
    "risk.unlocked": "UNLOCK lifted the lock: trading is active again",
    "account.updated": "the account summary after a fill",
}


def channel_of(event: str) -> str:
    return CHANNEL_OF_PREFIX.get(event.split(".", 1)[0], EVENTS_CHANNEL)


@dataclass(frozen=True)
class Event:
    account_id: str
    event: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: new_id("evt"))
    ts_us: int = field(default_factory=lambda: time.time_ns() // 1000)

    @property
    def channel(self) -> str:
        return channel_of(self.event)


@dataclass(frozen=True)
class Delivery:
    """One event on one channel with its sequence number there."""

    channel: str
    seq: int
    event: Event


class Bus(Protocol):
    async def publish(self, events: list[Event]) -> list[Delivery]:
        """Publish in order; each event goes to its own channel and to `events`. Returns what was sequenced."""

    def subscribe(self) -> AsyncIterator[Delivery]:
        """Every delivery published from now on (all accounts)."""

    async def history(self, account_id: str, channel: str, since: int) -> list[Delivery] | None:
        """Deliveries with seq > since, or None when history no longer reaches back that far."""

    async def last_seq(self, account_id: str, channel: str) -> int: ...
    async def restore(self, store: Store) -> None:
        """At start: continue the sequences from the stored events, where the twin keeps none itself."""

    async def ping(self) -> None: ...
    async def close(self) -> None: ...


def open_bus(redis_url: str = "", prefix: str = "rt", history: int = 1000) -> Bus:
    if redis_url:
        from rt.bus.redis import RedisBus

        return RedisBus(redis_url, prefix, history)
    from rt.bus.memory import MemoryBus

    return MemoryBus(history)


__all__ = ["EVENTS", "Bus", "Delivery", "Event", "channel_of", "open_bus"]
