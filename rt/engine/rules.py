"""The market's rules, checked as its venue checks them, before Cerberus or the venue sees an order: a quantity at
least the minimum and on the amount step, every price on the price step, no stop the market is already through.
REST routes, WebSocket commands and strategies all reach them through rt.engine.trading."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from rt.errors import BadRequest
from rt.exchanges import Exchange, Market, Side, Ticker

ORDER_PRICES = ("price", "stop_price", "stop_loss", "take_profit")
POSITION_PRICES = ("entry_price", "stop_loss", "take_profit")
PROTECTION_PRICES = ("stop_loss", "take_profit")


def prices_of(request: BaseModel, fields: tuple[str, ...]) -> dict[str, Decimal | None]:
    return {field: getattr(request, field) for field in fields}


async def check_steps(
    venue: Exchange, symbol: str, quantity: Decimal | None, prices: Mapping[str, Decimal | None]
) -> None:
    """Off-step input is refused, never rounded (that would trade what was not asked for); every field off its step
    is named. An unknown symbol passes here and fails at the ticker."""
    market = await venue.market(symbol)
    if market is None:
        return
    errors = [] if quantity is None else _quantity_errors(market, quantity)
    step = market.price_step
    for field, price in prices.items():
        if price is not None and not market.price_on_step(price):
            message = f"{price} is not a multiple of the price step {step:f} of {symbol}"
            errors.append({"field": field, "message": message, "step": step})
    if errors:
        raise BadRequest("; ".join(f"{e['field']} {e['message']}" for e in errors), errors=errors)


def _quantity_errors(market: Market, quantity: Decimal) -> list[dict[str, Any]]:
    if quantity < market.min_amount:
        minimum = market.min_amount
        return [
            {"field": "quantity", "message": f"must be at least {minimum:f} on {market.symbol}", "minimum": minimum}
        ]
    if not market.amount_on_step(quantity):
        step = market.amount_step
        message = f"{quantity} is not a multiple of the amount step {step:f} of {market.symbol}"
        return [{"field": "quantity", "message": message, "step": step}]
    return []


def check_trigger(side: Side, stop_price: Decimal, ticker: Ticker) -> None:
    """A stop the market is already through would fill at once, as a market order: venues refuse it, and so does rt.
    A stop buy must be above the ask, a stop sell below the bid: the prices that trigger them."""
    if not ticker.triggers(side, stop_price):
        return
    buy = side == "buy"
    market, where = (ticker.ask, "ask") if buy else (ticker.bid, "bid")
    message = f"must be {'above' if buy else 'below'} the market ({where} {market}) for a stop {side}"
    raise BadRequest(
        f"a stop {side} at {stop_price} would trigger at once: the {where} is {market}",
        errors=[{"field": "stop_price", "message": message}],
    )
