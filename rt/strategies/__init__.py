"""Strategies: a small base class, the grid and DCA types, and the runner that feeds them ticks and fills.

A strategy never trades by itself: it returns the orders it wants, and the runner places them through the same
engine functions (and Cerberus checks, with the strategy's own limits on top) as every client.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from rt.exchanges import Ticker


@dataclass(frozen=True)
class Want:
    """An order a strategy wants placed."""

    side: Literal["buy", "sell"]
    quantity: Decimal
    type: Literal["market", "limit"] = "market"
    price: Decimal | None = None
    tag: str = ""


class RiskLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_position_size: Decimal | None = Field(None, gt=0, description="Notional of one order of this strategy.")
    max_daily_loss: Decimal | None = Field(None, gt=0, description="This strategy's realized loss today.")
    stop_loss_pct: Decimal | None = Field(None, gt=0, lt=1, description="Stop loss of each position it opens.")


class Strategy:
    """Base: override on_start, on_tick, on_fill and on_clock. `state` is stored and survives restarts."""

    kind: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel, state: dict[str, Any]) -> None:
        self.config = config
        self.state = state

    def on_start(self, ticker: Ticker) -> list[Want]:
        return []

    def on_tick(self, ticker: Ticker) -> list[Want]:
        return []

    def on_fill(self, tag: str, side: str, price: Decimal, quantity: Decimal) -> list[Want]:
        return []

    def on_clock(self, now: float, ticker: Ticker) -> list[Want]:
        return []


def types() -> dict[str, type[Strategy]]:
    from rt.strategies.dca import DCA
    from rt.strategies.grid import Grid

    return {Grid.kind: Grid, DCA.kind: DCA}
