"""Grid: buy limits on the levels below the price; each filled buy is sold one level up, each sale re-bought.

Slot i is the pair of levels i and i + 1: idle, a resting buy at level i, or a lot bought there with its sell resting
at level i + 1. The grid arms an idle slot (rests its buy) while the price is inside the range and above the level;
outside the range it places nothing new and waits (see docs/trading.md, "Grid").
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rt.engine.requests import Amount
from rt.errors import BadRequest
from rt.exchanges import Market, Ticker
from rt.strategies import Lot, Strategy, Want

# A refused buy is tried again after this long (a limit may have room again by then), not on every tick.
RETRY_MS = 60_000


class GridConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grid_levels: int = Field(ge=2, le=200)
    price_range: tuple[Amount, Amount] = Field(description="[low, high]")
    quantity_per_level: Amount

    @model_validator(mode="after")
    def _range(self) -> GridConfig:
        low, high = self.price_range
        if not 0 < low < high:
            raise ValueError("price_range must be [low, high] with 0 < low < high")
        return self


class Grid(Strategy):
    kind = "grid"
    config_model = GridConfig

    def __init__(self, config: BaseModel, state: dict[str, Any], market: Market | None = None) -> None:
        super().__init__(config, state, market)
        assert isinstance(config, GridConfig)
        if market is None and "levels" in state:
            # Rounded when it started; a venue still connecting after a restart cannot tell the steps again.
            self.levels = [Decimal(level) for level in state["levels"]]
            self.qty = Decimal(state["quantity"])
            return
        low, high = config.price_range
        step = (high - low) / (config.grid_levels - 1)
        self.levels = [self.price(low + step * i) for i in range(config.grid_levels - 1)] + [self.price(high)]
        if len(set(self.levels)) < len(self.levels):
            raise BadRequest(
                f"{config.grid_levels} levels between {low} and {high} are closer than the price step",
                errors=[{"field": "config.grid_levels", "message": "fewer levels or a wider price_range"}],
            )
        self.qty = self.quantity(config.quantity_per_level, "quantity_per_level")
        if market is not None:
            state["levels"], state["quantity"] = [str(level) for level in self.levels], str(self.qty)

    @property
    def _slots(self) -> dict[str, str]:
        slots: dict[str, str] = self.state.setdefault("slots", {})
        return slots

    @property
    def _refused(self) -> dict[str, int]:
        refused: dict[str, int] = self.state.setdefault("refused", {})
        return refused

    def _buy(self, index: int) -> Want:
        self._slots[str(index)] = "buy"
        return Want("buy", self.qty, "limit", self.levels[index], f"buy:{index}")

    def _sell(self, index: int, lot: str) -> Want:
        self._slots[str(index - 1)] = "sell"
        return Want("sell", self.qty, "limit", self.levels[index], f"sell:{index}", lot or None)

    def _arm(self, ticker: Ticker) -> list[Want]:
        if not self.levels[0] <= ticker.bid <= self.levels[-1]:
            return []
        wants = []
        for index, level in enumerate(self.levels[:-1]):
            key = str(index)
            if key in self._slots or level >= ticker.bid or ticker.ts_ms < self._refused.get(key, 0):
                continue
            self._refused.pop(key, None)
            wants.append(self._buy(index))
        return wants

    def on_start(self, ticker: Ticker, lots: Sequence[Lot] = ()) -> list[Want]:
        self.state["slots"], self.state["refused"] = {}, {}
        return self._adopt(lots) + self._arm(ticker)

    def _adopt(self, lots: Sequence[Lot]) -> list[Want]:
        """Lots still held from before a stop get their sells back: a lot bought at or under level i is sold at
        level i + 1 (the next free slot up when two lots meet in one)."""
        wants = []
        for lot in sorted(lots, key=lambda held: held.entry_price):
            if lot.side != "long" or lot.quantity != self.qty:
                continue
            free = [
                i for i, level in enumerate(self.levels[:-1]) if level >= lot.entry_price and str(i) not in self._slots
            ]
            if free:
                wants.append(self._sell(free[0] + 1, lot.id))
        return wants

    def on_tick(self, ticker: Ticker) -> list[Want]:
        return self._arm(ticker)

    def on_fill(self, tag: str, side: str, price: Decimal, quantity: Decimal, position_id: str = "") -> list[Want]:
        kind, index = _parse(tag)
        if kind == "buy" and 0 <= index < len(self.levels) - 1:
            return [self._sell(index + 1, position_id)]
        if kind == "sell" and 1 <= index < len(self.levels):
            return [self._buy(index - 1)]
        return []

    def on_refused(self, want: Want, now_ms: int) -> None:
        kind, index = _parse(want.tag)
        slot = index if kind == "buy" else index - 1
        if kind == "buy":
            self._refused[str(slot)] = now_ms + RETRY_MS
        self._slots.pop(str(slot), None)

    def on_lot_closed(self, tag: str) -> None:
        kind, index = _parse(tag)
        if kind == "sell":
            self._slots.pop(str(index - 1), None)


def _parse(tag: str) -> tuple[str, int]:
    kind, _, raw = tag.partition(":")
    return kind, int(raw) if raw.isdigit() else -1
