"""Grid: buy limits on the levels below the price; each filled buy is sold one level up, each sale re-bought."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rt.exchanges import Ticker
from rt.strategies import Strategy, Want


class GridConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grid_levels: int = Field(ge=2, le=200)
    price_range: tuple[Decimal, Decimal] = Field(description="[low, high]")
    quantity_per_level: Decimal = Field(gt=0)

    @model_validator(mode="after")
    def _range(self) -> GridConfig:
        low, high = self.price_range
        if not 0 < low < high:
            raise ValueError("price_range must be [low, high] with 0 < low < high")
        return self


class Grid(Strategy):
    kind = "grid"
    config_model = GridConfig

    def __init__(self, config: BaseModel, state: dict[str, Any]) -> None:
        super().__init__(config, state)
        assert isinstance(config, GridConfig)
        low, high = config.price_range
        step = (high - low) / (config.grid_levels - 1)
        self.levels = [low + step * i for i in range(config.grid_levels)]
        self.qty = config.quantity_per_level

    def _buy(self, index: int) -> Want:
        return Want("buy", self.qty, "limit", self.levels[index], f"buy:{index}")

    def _sell(self, index: int) -> Want:
        return Want("sell", self.qty, "limit", self.levels[index], f"sell:{index}")

    def on_start(self, ticker: Ticker) -> list[Want]:
        return [self._buy(i) for i, level in enumerate(self.levels) if level < ticker.bid]

    def on_fill(self, tag: str, side: str, price: Decimal, quantity: Decimal) -> list[Want]:
        kind, _, raw = tag.partition(":")
        if not raw.isdigit():
            return []
        index = int(raw)
        if kind == "buy" and index + 1 < len(self.levels):
            return [self._sell(index + 1)]
        if kind == "sell" and index >= 1:
            return [self._buy(index - 1)]
        return []
