"""What a client may ask the engine to do: one model per command, shared by REST routes and WebSocket commands."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

MAX_PRICE = Decimal("1e15")  # far above any real price or size; keeps the money math inside Decimal's range
# Finer than any venue's step; a venue's own steps are checked when an order meets its market.
MAX_PLACES = 12

# Every price, quantity and money limit a client sends: finite, > 0, < MAX_PRICE, at most MAX_PLACES places.
# Products and quotients of two of these stay far inside Decimal's exponent range, so no tick can overflow.
# A number given as a string is plain ASCII decimal text, as the OpenAPI pattern says: Python would also read "1_0" as
# 10, " 1", or digits of other scripts, which no client means. NaN and infinities go on to the finite check's message.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?i:nan|inf|infinity)")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def _text(pattern: re.Pattern[str], what: str) -> BeforeValidator:
    def plain(value: object) -> object:
        if isinstance(value, str) and not pattern.fullmatch(value):
            raise ValueError(f"must be {what} written with ASCII digits only (no spaces, separators or other digits)")
        return value

    return BeforeValidator(plain)


Amount = Annotated[
    Decimal,
    Field(gt=0, lt=MAX_PRICE, decimal_places=MAX_PLACES, allow_inf_nan=False),
    _text(_DECIMAL_TEXT, "a decimal number"),  # after the bounds, so they stay in the JSON schema
]
Count = Annotated[int, _text(_INTEGER_TEXT, "a whole number")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderRequest(_Request):
    exchange: str = Field("paper", min_length=1, max_length=40)
    symbol: str = Field(min_length=3, max_length=40, examples=["BTC/USDT"])
    side: Literal["buy", "sell"]
    type: Literal["market", "limit", "stop"] = "market"
    quantity: Amount
    price: Amount | None = Field(None, description="Limit price (limit orders).")
    stop_price: Amount | None = Field(None, description="Trigger price (stop orders).")
    stop_loss: Amount | None = None
    take_profit: Amount | None = None
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
    quantity: Amount
    entry_price: Amount | None = Field(
        None, description="Absent: open at market. Present: an entry order resting at this price (see entry_type)."
    )
    entry_type: Literal["limit", "stop"] = Field(
        "limit",
        description="With entry_price: `limit` enters when the market comes back to it (a long below the ask), `stop` "
        "when the market breaks through it (a long above the ask); a stop entry the market is already through is "
        "refused (400).",
    )
    stop_loss: Amount | None = None
    take_profit: Amount | None = None
    strategy_id: str | None = None

    @model_validator(mode="after")
    def _entry(self) -> PositionRequest:
        if self.entry_type == "stop" and self.entry_price is None:
            raise ValueError("a stop entry needs an entry_price")
        return self


class EntryUpdate(_Request):
    """A pending position's resting entry: a new price replaces the entry order (the position keeps its id); a field
    left out keeps its value."""

    entry_price: Amount | None = Field(None, description="The entry order's new price (its limit or stop price).")
    stop_loss: Amount | None = Field(None, description="null removes it")
    take_profit: Amount | None = Field(None, description="null removes it")


class PositionUpdate(_Request):
    stop_loss: Amount | None = Field(None, description="null removes it")
    take_profit: Amount | None = Field(None, description="null removes it")


class EmergencyKill(_Request):
    reason: str = Field("", max_length=500)
    confirm: Literal[True] = Field(description="Must be true.")


class RiskKill(_Request):
    account_id: str | None = Field(None, description="The caller's account or one of its sub-accounts.")
    action: Literal["CLOSE_ALL", "FLATTEN", "LOCK", "UNLOCK"]
    reason: str = Field("", max_length=500)


class EnvelopeIn(_Request):
    max_position_size: Amount = Field(description="Notional of one position.")
    max_exposure: Amount = Field(description="(Open + resting notional) / equity, a fraction.")
    max_daily_loss: Amount = Field(description="A positive amount: the day's loss may not reach it.")
    max_concurrent_positions: Count = Field(gt=0, le=100_000)
    trading_state: Literal["active", "reducing"] | None = Field(
        None, description="Set `reducing` to accept only orders that shrink exposure; `active` to lift it."
    )
