"""A deployed strategy as rt keeps it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

StrategyStatus = Literal["active", "stopped", "halted"]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class StrategyRecord:
    id: str
    account_id: str
    name: str
    type: str
    exchange: str
    symbol: str
    config: dict[str, Any]
    risk_limits: dict[str, Any]
    status: StrategyStatus
    state: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)

    def as_json(self, performance: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "status": self.status,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "config": self.config,
            "risk_limits": self.risk_limits,
            "performance": performance
            or {"realized_pnl": 0, "unrealized_pnl": 0, "total_pnl": 0, "win_rate": 0, "trades": 0},
            "stop_reason": self.stop_reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
