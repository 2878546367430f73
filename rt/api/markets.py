"""/v1/markets: the venues' symbols, tickers and candles."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from rt.api import _errors
from rt.api.models import Strict
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.errors import NotFound
from rt.exchanges import Exchange, Market
from rt.exchanges.candles import MAX_LIMIT
from rt.records.candles import Timeframe


class MarketQuery(Strict):
    exchange: str = "paper"


class CandleQuery(MarketQuery):
    timeframe: Timeframe = "1m"
    limit: int = Field(100, ge=1, le=MAX_LIMIT, description=f"How many bars (max {MAX_LIMIT}).")
    since: int | None = Field(
        None, ge=0, le=10**14, description="Epoch milliseconds: the first bars opening at or after it, not the last."
    )


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


class CandleOut(BaseModel):
    time: datetime = Field(description="When the bar opens (UTC).")
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


class CandleList(BaseModel):
    symbol: str
    timeframe: Timeframe
    candles: list[CandleOut]


def _venue(call: Call) -> Exchange:
    q: MarketQuery = call.query
    return call.runtime.engine.venues.get(call.caller.account_id, q.exchange, test_key=call.caller.test)


def symbol_of(raw: str) -> str:
    """`BTC/USDT` (URL-encoded or not), `BTC-USDT` and `btc_usdt` all name BTC/USDT."""
    return raw.replace("-", "/").replace("_", "/").upper()


def _market(m: Market, venue: Exchange) -> dict[str, Any]:
    return {
        "symbol": m.symbol,
        "base": m.base,
        "quote": m.quote,
        "exchange": venue.id,
        "price_step": m.price_step,
        "amount_step": m.amount_step,
        "min_amount": m.min_amount,
    }


async def list_markets(call: Call) -> dict[str, Any]:
    venue = _venue(call)
    found = await venue.markets()
    return {"markets": [_market(m, venue) for m in found], "total": len(found)}


async def get_market(call: Call) -> dict[str, Any]:
    venue = _venue(call)
    symbol = symbol_of(call.param("symbol"))
    found = await venue.market(symbol)
    if found is None:
        raise NotFound(f"no market {symbol} on {venue.id}")
    return _market(found, venue)


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


async def candles(call: Call) -> dict[str, Any]:
    q: CandleQuery = call.query
    symbol = symbol_of(call.param("symbol"))
    found = await call.runtime.candles.candles(
        q.exchange,
        symbol,
        q.timeframe,
        q.limit,
        since=q.since,
        account_id=call.caller.account_id,
        test_key=call.caller.test,
    )
    return {"symbol": symbol, "timeframe": q.timeframe, "candles": [c.as_json() for c in found]}


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
    Operation(
        "GET",
        "/v1/markets/{symbol:path}/candles",
        candles,
        "A symbol's candles (OHLCV)",
        "markets",
        scopes.MARKET_READ,
        query=CandleQuery,
        response=CandleList,
        errors=(*_errors.AUTH, "BAD_REQUEST", "NOT_FOUND", "EXCHANGE_UNAVAILABLE"),
        description=(
            "Bars oldest first: the last `limit` of them, or with `since` the first `limit` opening at or after it. "
            "The current bar is open (its close is the latest price). On the simulated market bars are built from its "
            "ticks, volume is the quantity of its fills, and a stretch without ticks gives flat bars."
        ),
    ),  # After the ticker and candles: `{symbol:path}` alone would take `BTC/USDT/ticker` as a symbol.
    Operation(
        "GET",
        "/v1/markets/{symbol:path}",
        get_market,
        "One market, as GET /v1/markets lists it",
        "markets",
        scopes.MARKET_READ,
        query=MarketQuery,
        response=MarketOut,
        errors=(*_errors.AUTH, "BAD_REQUEST", "NOT_FOUND", "EXCHANGE_UNAVAILABLE"),
        description="The symbol with its slash URL-encoded (`BTC%2FUSDT`), or written `BTC-USDT`; 404 for a symbol "
        "the venue does not list.",
    ),
]
