"""The strategies table of the PostgreSQL twin, and each strategy's performance from its positions and orders."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rt.records.strategies import StrategyRecord
from rt.store import Strategies
from rt.store._pg_base import Connections
from rt.store._rows import strategy_of, strategy_row

_NAMES = (
    "id",
    "account_id",
    "name",
    "type",
    "exchange",
    "symbol",
    "config",
    "risk_limits",
    "status",
    "state",
    "stop_reason",
    "created_at",
    "updated_at",
)
_COLS = ", ".join(_NAMES)
_SAVE = (
    f"INSERT INTO strategies ({_COLS}) VALUES ({', '.join(f'${i}' for i in range(1, len(_NAMES) + 1))}) "
    f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _NAMES[1:])}"
)


class StrategyTables(Connections, Strategies):
    async def save_strategy(self, record: StrategyRecord) -> None:
        await self._execute(_SAVE, *strategy_row(record))

    async def get_strategy(self, account_id: str, strategy_id: str) -> StrategyRecord | None:
        row = await self._one(
            f"SELECT {_COLS} FROM strategies WHERE id = $1 AND account_id = $2", strategy_id, account_id
        )
        return strategy_of(row) if row else None

    async def list_strategies(self, account_id: str, limit: int, offset: int) -> tuple[list[StrategyRecord], int]:
        total = await self._count("SELECT COUNT(*) FROM strategies WHERE account_id = $1", account_id)
        rows = await self._all(
            f"SELECT {_COLS} FROM strategies WHERE account_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
            account_id,
            limit,
            offset,
        )
        return [strategy_of(r) for r in rows], total

    async def load_strategies(self) -> list[StrategyRecord]:
        rows = await self._all(f"SELECT {_COLS} FROM strategies WHERE status = 'active'")
        return [strategy_of(r) for r in rows]

    async def strategy_performance(self, strategy_id: str) -> dict[str, Any]:
        """As the SQLite twin's: realized, unrealized (at the last stored price) and total P&L, win rate, trades."""
        rows = await self._all(
            "SELECT status, realized_pnl, quantity, entry_price, current_price, side FROM positions "
            "WHERE strategy_id = $1 AND status IN ('open', 'closed')",
            strategy_id,
        )
        trades = await self._count(
            "SELECT COUNT(*) FROM orders WHERE strategy_id = $1 AND status = 'filled'", strategy_id
        )
        realized, unrealized, closed, wins = Decimal(0), Decimal(0), 0, 0
        for status, pnl, qty, entry, current, side in rows:
            realized += Decimal(pnl)
            if status == "closed":
                closed += 1
                wins += Decimal(pnl) > 0
            else:
                sign = 1 if side == "long" else -1
                unrealized += (Decimal(current) - Decimal(entry)) * Decimal(qty) * sign
        return {
            "realized_pnl": realized,
            "unrealized_pnl": unrealized,
            "total_pnl": realized + unrealized,
            "win_rate": round(wins / closed, 4) if closed else 0,
            "trades": trades,
        }
