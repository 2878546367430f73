"""Tradyn market data under /v1/api: symbols with their contract and current quote, one quote, and candles.

Names are MetaTrader's (`EURUSD`), volumes lots, timeframes M1 ... D1; the prices, steps and bars are the Tradyn
venue's own (RT_TRADYN_EXCHANGE), read through the same venue and candle source as /v1/markets.
"""

from __future__ import annotations

import asyncio
from decimal import ROUND_CEILING, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rt.api import _errors
from rt.api.compat.tradyn import symbols
from rt.api.compat.tradyn._dialect import TAG, TRADYN, ok, rt_symbol, venue
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.errors import BadRequest, NotFound
from rt.exchanges import Exchange, Market, Ticker
from rt.records.candles import opened_at

# MetaTrader's timeframes onto rt's.
TIMEFRAMES = {"M1": "1m", "M5": "5m", "M15": "15m", "M30": "30m", "H1": "1h", "H4": "4h", "D1": "1d"}
MAX_COUNT = 1000
# A listing fetches the quotes the engine has heard no tick of, at most this many at once (a REST call each on ccxt).
FETCHES = 8


class CandleQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeframe: str = Field(
        "H1", validate_default=True, description="M1, M5, M15, M30, H1, H4 or D1 (also PERIOD_H1, or rt's 1h)."
    )
    count: int = Field(100, ge=1, le=MAX_COUNT, description=f"Bars, the latest last (1 to {MAX_COUNT}).")

    @field_validator("timeframe")
    @classmethod
    def _known(cls, value: str) -> str:
        name = value.strip().upper().removeprefix("PERIOD_")
        if name in TIMEFRAMES:
            return TIMEFRAMES[name]
        if value.strip().lower() in TIMEFRAMES.values():
            return value.strip().lower()
        raise ValueError(f"one of {', '.join(TIMEFRAMES)}")


def _point(market: Market) -> Decimal:
    return market.price_step if market.price_step > 0 else Decimal(1).scaleb(-symbols.digits(market))


def _in_lots(units: Decimal, symbol: str) -> Decimal:
    """A venue amount in lots, on the lot step and never under it (rounded up: less than this would be refused)."""
    lots = (units / symbols.lot_size(symbol)).quantize(symbols.VOLUME_STEP, ROUND_CEILING)
    return max(lots, symbols.VOLUME_STEP)


def spread(market: Market, ticker: Ticker) -> int:
    """Ask minus bid in points (the price step), as MetaTrader counts a spread."""
    return int((ticker.ask - ticker.bid) / _point(market))


def symbol_view(market: Market, ticker: Ticker | None) -> dict[str, Any]:
    return {
        "symbol": symbols.to_tradyn(market.symbol),
        "description": f"{market.base} vs {market.quote}",
        "currency_base": market.base,
        "currency_profit": market.quote,
        "digits": symbols.digits(market),
        "point": _point(market),
        "lot_size": symbols.lot_size(market.symbol),
        "volume_min": _in_lots(market.min_amount, market.symbol),
        "volume_max": symbols.MAX_VOLUME,
        "volume_step": _in_lots(market.amount_step, market.symbol),
        "bid": ticker.bid if ticker is not None else None,
        "ask": ticker.ask if ticker is not None else None,
        "spread": spread(market, ticker) if ticker is not None else None,
    }


async def _quote(exchange: Exchange, symbol: str) -> Ticker | None:
    """The symbol's ticker; None for a listed market the venue gives no quote for."""
    try:
        return await exchange.ticker(symbol)
    except BadRequest:
        return None


async def _quotes(call: Call, exchange: Exchange, markets: list[Market]) -> list[Ticker | None]:
    """Every market's quote: the last tick the engine heard from this venue, else the venue's ticker, FETCHES at a
    time. A ccxt venue lists thousands of markets and answers each ticker with a REST call."""
    ticks = call.runtime.engine.ticks
    fetching = asyncio.Semaphore(FETCHES)

    async def quote(market: Market) -> Ticker | None:
        heard = ticks.last_tick(exchange, market.symbol)
        if heard is not None:
            return heard
        async with fetching:
            return await _quote(exchange, market.symbol)

    return await asyncio.gather(*(quote(m) for m in markets))


async def tradyn_list_symbols(call: Call) -> dict[str, Any]:
    exchange = venue(call)
    markets = await exchange.markets()
    tickers = await _quotes(call, exchange, markets)
    return ok([symbol_view(m, t) for m, t in zip(markets, tickers, strict=True)])


async def _market(call: Call) -> tuple[Exchange, Market]:
    exchange = venue(call)
    symbol = await rt_symbol(call, call.param("symbol"), missing=NotFound)
    market = await exchange.market(symbol)
    if market is None:
        raise NotFound(f"unknown symbol {call.param('symbol')!r}")
    return exchange, market


async def tradyn_get_symbol(call: Call) -> dict[str, Any]:
    exchange, market = await _market(call)
    return ok(symbol_view(market, await _quote(exchange, market.symbol)))


async def tradyn_quote(call: Call) -> dict[str, Any]:
    exchange, market = await _market(call)
    ticker = await exchange.ticker(market.symbol)
    return ok(
        {
            "symbol": symbols.to_tradyn(market.symbol),
            "bid": ticker.bid,
            "ask": ticker.ask,
            "last": ticker.last,
            "spread": spread(market, ticker),
            "time": opened_at(ticker.ts_ms),
            "time_msc": ticker.ts_ms,
        }
    )


async def tradyn_candles(call: Call) -> dict[str, Any]:
    q: CandleQuery = call.query
    _, market = await _market(call)
    bars = await call.runtime.candles.candles(
        call.runtime.settings.tradyn_exchange,
        market.symbol,
        q.timeframe,
        q.count,
        account_id=call.caller.account_id,
        test_key=call.caller.test,
    )
    return ok(
        [
            {
                "time": bar.time,
                "open": bar.open,
                "high": bar.high,
                "low": bar.low,
                "close": bar.close,
                "volume": symbols.to_lots(bar.volume, market.symbol),
            }
            for bar in bars
        ]
    )


_ERRORS = (*_errors.AUTH, "NOT_FOUND", "EXCHANGE_UNAVAILABLE")

OPERATIONS = [
    Operation(
        "GET",
        "/v1/api/symbols",
        tradyn_list_symbols,
        "Tradyn: every symbol with its contract and quote",
        TAG,
        scopes.MARKET_READ,
        errors=_ERRORS,
        description="Each market of the Tradyn venue: lot size (units of the base in one lot), volume limits in "
        "lots, digits and point (the price step), bid, ask and the spread in points.",
        dialect=TRADYN,
    ),
    Operation(
        "GET",
        "/v1/api/symbols/{symbol:path}",
        tradyn_get_symbol,
        "Tradyn: one symbol",
        TAG,
        scopes.MARKET_READ,
        errors=_ERRORS,
        description="`EURUSD` (or `EUR/USD` URL-encoded); an unknown symbol is a 404.",
        dialect=TRADYN,
    ),
    Operation(
        "GET",
        "/v1/api/quote/{symbol:path}",
        tradyn_quote,
        "Tradyn: a symbol's current quote",
        TAG,
        scopes.MARKET_READ,
        errors=_ERRORS,
        description="bid, ask, last, the spread in points, and the quote's time (RFC 3339 and epoch ms).",
        dialect=TRADYN,
    ),
    Operation(
        "GET",
        "/v1/api/candles/{symbol:path}",
        tradyn_candles,
        "Tradyn: a symbol's candles",
        TAG,
        scopes.MARKET_READ,
        query=CandleQuery,
        errors=(*_ERRORS, "BAD_REQUEST"),
        description="The last `count` bars of `timeframe`, oldest first; `time` is when a bar opens (UTC) and "
        "`volume` is in lots.",
        dialect=TRADYN,
    ),
]
