"""POST /v1/api/trade: a market buy or sell in lots, opened as an rt position (Cerberus sees its true notional)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rt.api import _errors
from rt.api.compat.tradyn import symbols
from rt.api.compat.tradyn._dialect import TAG, TRADYN, ok, rt_symbol
from rt.api.compat.tradyn.orders import BUY, SELL, OrderType
from rt.api.compat.tradyn.positions import Protection, position_json
from rt.api.routing import Call, Operation, parse_body
from rt.auth import scopes
from rt.engine import trading
from rt.engine.requests import Amount, PositionRequest


class TradeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=40, examples=["EURUSD"])
    action: Literal["buy", "sell"] | None = None
    type: OrderType | None = Field(None, description="0 buy, 1 sell (or buy, ORDER_TYPE_SELL); 2-5 are pending orders.")
    volume: Amount = Field(description="Lots, on the 0.01 step.")
    sl: Protection = Field(None, description="Stop loss price; 0 or absent: none.")
    tp: Protection = Field(None, description="Take profit price; 0 or absent: none.")
    comment: str | None = Field(None, max_length=255, description="Echoed in the answer, not kept.")
    magic: int | None = Field(None, ge=0, lt=2**63, description="Accepted, not kept.")
    deviation: int | None = Field(None, ge=0, lt=2**31, description="Slippage in points; a market fill ignores it.")

    @field_validator("type")
    @classmethod
    def _market(cls, value: int | None) -> int | None:
        if value is not None and value not in (BUY, SELL):
            raise ValueError("types 2-5 are pending orders: send them to POST /v1/api/orders")
        return value

    @property
    def side(self) -> Literal["buy", "sell"]:
        asked: Literal["buy", "sell"] | None = None if self.type is None else "buy" if self.type == BUY else "sell"
        if self.action is None and asked is None:
            raise ValueError("send action (buy or sell) or type (0 or 1)")
        if self.action is not None and asked is not None and self.action != asked:
            raise ValueError(f"action {self.action} and type {self.type} disagree")
        return self.action or asked  # type: ignore[return-value]

    @model_validator(mode="after")
    def _one_side(self) -> TradeRequest:
        _ = self.side
        return self


async def tradyn_trade(call: Call) -> dict[str, Any]:
    body: TradeRequest = call.body
    symbol = await rt_symbol(call, body.symbol)
    asked = {
        "exchange": call.runtime.settings.tradyn_exchange,
        "symbol": symbol,
        "side": "long" if body.side == "buy" else "short",
        "quantity": symbols.to_units(body.volume, symbol),
        "stop_loss": body.sl,
        "take_profit": body.tp,
    }
    req = parse_body(PositionRequest, asked)
    assert isinstance(req, PositionRequest)
    position, _ = await trading.open_position(
        call.runtime.engine, call.caller.account_id, req, test_key=call.caller.test
    )
    shown = position_json(position)
    return ok(
        {
            "ticket": position.id,
            "order": position.entry_order_id,
            "symbol": shown["symbol"],
            "type": shown["type"],
            "volume": shown["volume"],
            "price": position.entry_price,
            "sl": shown["sl"],
            "tp": shown["tp"],
            "time": position.created_at,
            "status": position.status,
            "comment": body.comment or "",
        }
    )


OPERATIONS = [
    Operation(
        "POST",
        "/v1/api/trade",
        tradyn_trade,
        "Tradyn: market buy or sell (opens a position)",
        TAG,
        scopes.POSITIONS_WRITE,
        body=TradeRequest,
        errors=(*_errors.TRADE, "NOT_FOUND"),
        idempotent=True,
        description="`volume` is in lots (100,000 units for a forex pair, 1 unit otherwise, 0.01 lot step); "
        "Cerberus judges the position's notional in units times the price. The answer's `ticket` is the position id.",
        dialect=TRADYN,
    ),
]
