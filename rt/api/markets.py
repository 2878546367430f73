"""/v1/markets: the venues' symbols and tickers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from rt.api import _errors
from rt.api.models import Strict
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.exchanges import Exchange


class MarketQuery(Strict):
    exchange: str = "paper"


class MarketOut(BaseModel):
    symbol: str
    base: str
    quote: str
    exchange: str
    price_step: Decimal = Field(description="Every price of an order must be a multiple of it (0: no step).")
    amount_step: Decimal = Field(description="Every quantity must be a multiple of it (0: no step).")
    min_amount: Decimal = Field(description="The smallest quantity the market takes.")


class MarketList(BaseModel):
    markets: list[MarketOut]
    total: int


class TickerOut(BaseModel):
    exchange: str
    symbol: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    timestamp: int = Field(description="Epoch milliseconds of the quote.")


def _venue(call: Call) -> Exchange:
    q: MarketQuery = call.query
    return call.runtime.engine.venues.get(call.caller.account_id, q.exchange, test_key=call.caller.test)


def symbol_of(raw: str) -> str:
    """`BTC/USDT` (URL-encoded or not), `BTC-USDT` and `btc_usdt` all name BTC/USDT."""
    return raw.replace("-", "/").replace("_", "/").upper()


async def list_markets(call: Call) -> dict[str, Any]:
    venue = _venue(call)
    found = await venue.markets()
    return {
        "markets": [
            {
                "symbol": m.symbol,
                "base": m.base,
                "quote": m.quote,
                "exchange": venue.id,
                "price_step": m.price_step,
                "amount_step": m.amount_step,
                "min_amount": m.min_amount,
            }
            for m in found
        ],
        "total": len(found),
    }


async def ticker(call: Call) -> dict[str, Any]:
    venue = _venue(call)
    quote = await venue.ticker(symbol_of(call.param("symbol")))
    return {
        "exchange": venue.id,
        "symbol": quote.symbol,
        "bid": quote.bid,
        "ask": quote.ask,
        "last": quote.last,
        "timestamp": quote.ts_ms,
    }


OPERATIONS = [
    Operation(
        "GET",
        "/v1/markets",
        list_markets,
        "List a venue's markets",
        "markets",
        scopes.MARKET_READ,
        query=MarketQuery,
        response=MarketList,
        errors=(*_errors.AUTH, "BAD_REQUEST", "EXCHANGE_UNAVAILABLE"),
    ),
    Operation(
        "GET",
        "/v1/markets/{symbol:path}/ticker",
        ticker,
        "A symbol's ticker",
        "markets",
        scopes.MARKET_READ,
        query=MarketQuery,
        response=TickerOut,
        errors=(*_errors.AUTH, "BAD_REQUEST", "EXCHANGE_UNAVAILABLE"),
        description="The symbol with its slash URL-encoded (`BTC%2FUSDT`), or written `BTC-USDT`.",
    ),
]
