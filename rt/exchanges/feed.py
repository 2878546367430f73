"""The simulated market, one step every tick interval, made by the instance holding the market role and applied by
every instance: a seeded random walk per crypto symbol; an FX pair (two fiat currencies) reverts to its start price."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

from rt.exchanges import Market, Ticker
from rt.records.trading import is_fiat_pair

log = logging.getLogger("rt.paper.feed")

DEFAULT_PRICES: dict[str, Decimal] = {
    "BTC/USDT": Decimal("65000"),
    "ETH/USDT": Decimal("3500"),
    "SOL/USDT": Decimal("150"),
    "EUR/USD": Decimal("1.0870"),
    "GBP/USD": Decimal("1.2700"),
    "USD/JPY": Decimal("150.00"),
}

# An FX pair moves a tenth as much per step as a crypto symbol and is pulled back toward its start price: an
# Ornstein-Uhlenbeck step in log price. At the default volatility its stationary spread is 0.1% (sd), and it never
# leaves a band of 0.45% either side of the start, so levels such as a stop 0.6% away hold however long it runs.
FX_VOLATILITY_SHARE = 0.1
FX_REVERSION = 0.00125
FX_BAND = 0.0045
_FX_LOG_BAND = math.log1p(FX_BAND)


def _step(symbol: str, price: Decimal) -> Decimal:
    """Price tick: an FX pair's fractional pip (0.00001, 0.001 quoted in yen); else five significant digits, at least
    0.0001."""
    if is_fiat_pair(symbol):
        return Decimal("0.001") if symbol.upper().endswith("/JPY") else Decimal("0.00001")
    exponent = max(price.adjusted() - 4, -4)
    return Decimal(1).scaleb(exponent)


def _market(symbol: str, price: Decimal) -> Market:
    base, quote = symbol.split("/", 1)
    amount = Decimal(1) if is_fiat_pair(symbol) else Decimal("0.0001")
    return Market(symbol, base, quote, price_step=_step(symbol, price), amount_step=amount, min_amount=amount)


class MarketFeed:
    def __init__(
        self,
        prices: dict[str, Decimal] | None = None,
        *,
        seed: int | None = None,
        interval: float = 0.5,
        volatility: float = 0.0005,
        spread_bps: Decimal = Decimal("1"),
    ) -> None:
        start = prices or DEFAULT_PRICES
        self._rng = random.Random(seed)
        # FX pairs draw from their own generator, so a crypto symbol walks the same with or without them.
        self._fx_rng = random.Random(None if seed is None else f"fx:{seed}")
        self._interval = interval
        self._volatility = volatility
        self._half_spread = spread_bps / Decimal(20000)
        self._markets = {symbol: _market(symbol, price) for symbol, price in start.items()}
        self._anchors = {symbol: price for symbol, price in start.items() if is_fiat_pair(symbol) and price > 0}
        self._tickers: dict[str, Ticker] = {}
        self._listeners: list[Callable[[Ticker], None]] = []
        for symbol, price in start.items():
            self.set_price(symbol, price)

    @property
    def markets(self) -> dict[str, Market]:
        return self._markets

    def ticker(self, symbol: str) -> Ticker | None:
        return self._tickers.get(symbol)

    def listen(self, listener: Callable[[Ticker], None]) -> None:
        self._listeners.append(listener)

    @property
    def interval(self) -> float:
        return self._interval

    def set_price(self, symbol: str, price: Decimal) -> Ticker:
        """Move a symbol to a price now (tests, demos)."""
        return self.apply(self._ticker(symbol, price))

    def apply(self, ticker: Ticker) -> Ticker:
        """Take a tick made elsewhere (the market's holder) as this symbol's price now and tell the listeners."""
        self._tickers[ticker.symbol] = ticker
        for listener in self._listeners:
            try:
                listener(ticker)
            except Exception:
                log.exception("tick listener failed")
        return ticker

    def walk(self, prices: dict[str, Decimal] | None = None) -> list[Ticker]:
        """The next step of every symbol from `prices` (default: the current ones), without applying it."""
        start = prices if prices is not None else {s: t.last for s, t in self._tickers.items()}
        return [
            self._ticker(symbol, self._next(symbol, last)) for symbol, last in start.items() if symbol in self._markets
        ]

    def _next(self, symbol: str, last: Decimal) -> Decimal:
        anchor = self._anchors.get(symbol)
        if anchor is None or last <= 0:
            return last * Decimal(repr(math.exp(self._rng.gauss(0.0, self._volatility))))
        x = math.log(last / anchor)
        reverted = (1 - FX_REVERSION) * x
        moved = reverted + self._fx_rng.gauss(0.0, self._volatility * FX_VOLATILITY_SHARE)
        # Inside the band the noise never carries it out; a price set outside (by hand) only comes back.
        bound = max(_FX_LOG_BAND, abs(reverted))
        return anchor * Decimal(repr(math.exp(min(max(moved, -bound), bound))))

    def step(self) -> None:
        for ticker in self.walk():
            self.apply(ticker)

    def _ticker(self, symbol: str, price: Decimal) -> Ticker:
        step = self._markets[symbol].price_step
        last = price.quantize(step)
        half = max((last * self._half_spread).quantize(step), step)
        return Ticker(symbol, last - half, last + half, last, int(time.time() * 1000))

    async def run(self, emit: Callable[[list[Ticker]], Awaitable[object]] | None = None) -> None:
        """Step every interval, each step walking on from the last: applied here, or handed to `emit` (the market's
        holder sends it to every instance). No steps when the interval is 0."""
        if self._interval <= 0:
            return
        # Deadlines on a fixed grid, so the work of a step does not stretch the interval (the rate holds).
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        prices = {s: t.last for s, t in self._tickers.items()}
        while True:
            deadline += self._interval
            delay = deadline - loop.time()
            if delay < -self._interval:
                deadline = loop.time()  # far behind (an overloaded process): skip, do not burst to catch up
            await asyncio.sleep(max(delay, 0))
            if emit is None:
                self.step()
                continue
            tickers = self.walk(prices)
            prices = {t.symbol: t.last for t in tickers} or prices
            try:
                await emit(tickers)
            except Exception:
                log.exception("sending a market step failed")
