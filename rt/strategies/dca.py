"""DCA: buy a fixed quantity at market every interval, up to a number of buys, optionally only below a price."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rt.engine.requests import Amount
from rt.exchanges import Market, Ticker
from rt.strategies import Strategy, Want


class DCAConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: Amount
    interval_s: int = Field(ge=1, le=86_400 * 30)
    max_orders: int = Field(10, ge=1, le=10_000)
    max_price: Amount | None = Field(None, description="Skip a buy while the ask is above this.")


class DCA(Strategy):
    kind = "dca"
    config_model = DCAConfig

    def __init__(self, config: BaseModel, state: dict[str, Any], market: Market | None = None) -> None:
        super().__init__(config, state, market)
        assert isinstance(config, DCAConfig)
        self.qty = self.quantity(config.quantity)

    def on_clock(self, now: float, ticker: Ticker) -> list[Want]:
        config = self.config
        assert isinstance(config, DCAConfig)
        done = int(self.state.get("buys", 0))
        if done >= config.max_orders or now < float(self.state.get("next_at", 0)):
            return []
        if config.max_price is not None and ticker.ask > config.max_price:
            return []
        self.state["buys"] = done + 1
        self.state["next_at"] = now + config.interval_s
        return [Want("buy", self.qty, tag=f"dca:{done + 1}")]

    @property
    def finished(self) -> bool:
        config = self.config
        assert isinstance(config, DCAConfig)
        return int(self.state.get("buys", 0)) >= config.max_orders
