"""Strategies: a small base class, the grid and DCA types, and the runner that feeds them ticks and fills.

A strategy never trades by itself: it returns the orders it wants, and the runner places them through the same
engine functions (and Cerberus checks, with the strategy's own limits on top) as every client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from rt.engine.requests import Amount
from rt.errors import BadRequest
from rt.exchanges import Market, Ticker


@dataclass(frozen=True)
class Want:
    """An order a strategy wants placed."""

    side: Literal["buy", "sell"]
    quantity: Decimal
    type: Literal["market", "limit"] = "market"
    price: Decimal | None = None
    tag: str = ""
    # The position this order is for (a grid's sell is for the lot its buy opened): it goes when that lot goes.
    lot: str | None = None


@dataclass(frozen=True)
class Lot:
    """An open position of the strategy, as it is handed back when the strategy starts again."""

    id: str
    side: Literal["long", "short"]
    entry_price: Decimal
    quantity: Decimal


class RiskLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_position_size: Amount | None = Field(None, description="Notional of one order of this strategy.")
    max_daily_loss: Amount | None = Field(None, description="This strategy's realized loss today.")
    stop_loss_pct: Amount | None = Field(None, lt=1, description="Stop loss of each position it opens.")


class Strategy:
    """Base: override on_start, on_tick, on_fill, on_clock and the lot hooks. `state` is stored and survives restarts.

    `market` (when the venue could tell) gives the steps every price and quantity must sit on.
    """

    kind: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel, state: dict[str, Any], market: Market | None = None) -> None:
        self.config = config
        self.state = state
        self.market = market

    def price(self, value: Decimal) -> Decimal:
        return self.market.round_price(value) if self.market else value

    def quantity(self, value: Decimal, field: str = "quantity") -> Decimal:
        """Rounded down to the amount step; under the market's minimum is a bad config."""
        if self.market is None:
            return value
        rounded = self.market.round_amount(value)
        if rounded < self.market.min_amount:
            raise BadRequest(
                f"{field} {value} is under the minimum {self.market.min_amount} for {self.market.symbol}",
                errors=[{"field": f"config.{field}", "message": f"must be at least {self.market.min_amount}"}],
            )
        return rounded

    def on_start(self, ticker: Ticker, lots: Sequence[Lot] = ()) -> list[Want]:
        """Started (again): `lots` are its positions still open from before (a stop leaves them open)."""
        return []

    def on_tick(self, ticker: Ticker) -> list[Want]:
        return []

    def on_fill(self, tag: str, side: str, price: Decimal, quantity: Decimal, position_id: str = "") -> list[Want]:
        return []

    def on_clock(self, now: float, ticker: Ticker) -> list[Want]:
        return []

    @property
    def finished(self) -> bool:
        """It has done all it was deployed for: the runner stops it (stop_reason `completed`)."""
        return False

    def on_refused(self, want: Want, now_ms: int) -> None:
        """An order it wanted was refused (Cerberus, the venue)."""

    def on_lot_closed(self, tag: str) -> None:
        """The lot the order tagged `tag` was for closed other than by that order; the order is canceled."""


def types() -> dict[str, type[Strategy]]:
    from rt.strategies.dca import DCA
    from rt.strategies.grid import Grid

    return {Grid.kind: Grid, DCA.kind: DCA}
