"""The simulated market: a seeded random walk per symbol, one step every tick interval, made by the instance holding
the market role and applied by every instance."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

from rt.exchanges import Market, Ticker

log = logging.getLogger("rt.paper.feed")

DEFAULT_PRICES: dict[str, Decimal] = {
    "BTC/USDT": Decimal("65000"),
    "ETH/USDT": Decimal("3500"),
    "SOL/USDT": Decimal("150"),
}


def _step(price: Decimal) -> Decimal:
    """Price tick: five significant digits, at least 0.0001."""
    exponent = max(price.adjusted() - 4, -4)
    return Decimal(1).scaleb(exponent)


def _market(symbol: str, price: Decimal) -> Market:
    base, quote = symbol.split("/", 1)
    return Market(
        symbol, base, quote, price_step=_step(price), amount_step=Decimal("0.0001"), min_amount=Decimal("0.0001")
    )


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
        self._interval = interval
        self._volatility = volatility
        self._half_spread = spread_bps / Decimal(20000)
        self._markets = {symbol: _market(symbol, price) for symbol, price in start.items()}
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
            self._ticker(symbol, last * Decimal(repr(math.exp(self._rng.gauss(0.0, self._volatility)))))
            for symbol, last in start.items()
            if symbol in self._markets
        ]

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
