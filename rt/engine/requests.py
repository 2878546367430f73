"""What a client may ask the engine to do: one model per command, shared by REST routes and WebSocket commands."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Price = Decimal
MAX_PRICE = Decimal("1e15")  # far above any real price or size; keeps the money math inside Decimal's range


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderRequest(_Request):
    exchange: str = Field("paper", min_length=1, max_length=40)
    symbol: str = Field(min_length=3, max_length=40, examples=["BTC/USDT"])
    side: Literal["buy", "sell"]
    type: Literal["market", "limit", "stop"] = "market"
    quantity: Decimal = Field(gt=0, lt=MAX_PRICE, max_digits=30)
    price: Decimal | None = Field(None, gt=0, lt=MAX_PRICE, description="Limit price (limit orders).")
    stop_price: Decimal | None = Field(None, gt=0, lt=MAX_PRICE, description="Trigger price (stop orders).")
    stop_loss: Decimal | None = Field(None, gt=0, lt=MAX_PRICE)
    take_profit: Decimal | None = Field(None, gt=0, lt=MAX_PRICE)
    client_order_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")
    strategy_id: str | None = None

    @model_validator(mode="after")
    def _prices(self) -> OrderRequest:
        if self.type == "limit" and self.price is None:
            raise ValueError("a limit order needs a price")
        if self.type == "stop" and self.stop_price is None:
            if self.price is None:
                raise ValueError("a stop order needs a stop_price")
            self.stop_price, self.price = self.price, None
        return self


class PositionRequest(_Request):
    exchange: str = Field("paper", min_length=1, max_length=40)
    symbol: str = Field(min_length=3, max_length=40, examples=["BTC/USDT"])
    side: Literal["long", "short"]
    quantity: Decimal = Field(gt=0, lt=MAX_PRICE, max_digits=30)
    entry_price: Decimal | None = Field(
        None, gt=0, lt=MAX_PRICE, description="Absent: open at market. Present: a limit entry."
    )
    stop_loss: Decimal | None = Field(None, gt=0, lt=MAX_PRICE)
    take_profit: Decimal | None = Field(None, gt=0, lt=MAX_PRICE)
    strategy_id: str | None = None


class PositionUpdate(_Request):
    stop_loss: Decimal | None = Field(None, gt=0, lt=MAX_PRICE, description="null removes it")
    take_profit: Decimal | None = Field(None, gt=0, lt=MAX_PRICE, description="null removes it")


class EmergencyKill(_Request):
    reason: str = Field("", max_length=500)
    confirm: Literal[True] = Field(description="Must be true.")


class RiskKill(_Request):
    account_id: str | None = Field(None, description="The caller's account or one of its sub-accounts.")
    action: Literal["CLOSE_ALL", "FLATTEN", "LOCK", "UNLOCK"]
    reason: str = Field("", max_length=500)


class EnvelopeIn(_Request):
    max_position_size: Decimal = Field(gt=0)
    max_exposure: Decimal = Field(gt=0)
    max_daily_loss: Decimal = Field(gt=0)
    max_concurrent_positions: int = Field(gt=0, le=100_000)
    trading_state: Literal["active", "reducing"] | None = Field(
        None, description="Set `reducing` to accept only orders that shrink exposure; `active` to lift it."
    )
