"""Events: every state change, named for what happened, and where each is sequenced (its channel)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rt.records.ids import new_id

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
    "alert.executed": "an inbound alert became an order (or closed positions)",
    "alert.rejected": "an inbound alert was refused: its hook's limits, Cerberus or the trading state",
    "webhook.endpoint_disabled": "a webhook endpoint was disabled: it answered 410, or failed past the retry window",
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
