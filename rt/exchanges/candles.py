"""Candles (OHLCV): built here from the simulated market, or asked of a real venue.

The simulated market (paper and every venue that is simulated) has one series of bars per symbol and timeframe, kept
in memory: each tick every instance applies moves the bar it falls in, and each simulated fill on the symbol (heard
on the bus, so every instance counts the same fills) adds its quantity to the volume. Bars are contiguous: a stretch
without ticks gives flat bars at the last close with no volume, up to the current open bar. Each series keeps its
last `keep` bars (1,440 by default: a day of 1m bars, 240 days of 1d bars, from when the process started).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Protocol, runtime_checkable

from rt.bus import Bus, BusLagged
from rt.errors import BadRequest, NotFound, RtError
from rt.exchanges import Exchange, Ticker
from rt.exchanges.feed import MarketFeed
from rt.exchanges.registry import Venues
from rt.records.candles import TIMEFRAMES, Candle, opened_at
from rt.records.events import Delivery

log = logging.getLogger("rt.candles")

KEEP = 1440
MAX_LIMIT = 1000
ZERO = Decimal(0)

Clock = Callable[[], int]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@runtime_checkable
class CandleVenue(Protocol):
    """A real venue that serves its own candles (ccxt's fetch_ohlcv)."""

    async def candles(self, symbol: str, timeframe: str, *, limit: int, since: int | None = None) -> list[Candle]: ...


class _Bar:
    __slots__ = ("close", "high", "low", "open", "start", "volume")

    def __init__(self, start: int, price: Decimal) -> None:
        self.start = start
        self.open = self.high = self.low = self.close = price
        self.volume = ZERO

    def take(self, price: Decimal) -> None:
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price

    def candle(self) -> Candle:
        return Candle(opened_at(self.start), self.open, self.high, self.low, self.close, self.volume)


class Series:
    """One symbol's bars of one timeframe, oldest first, contiguous, at most `keep` of them."""

    def __init__(self, span_ms: int, keep: int = KEEP) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.span = span_ms
        self._keep = keep
        self._bars: deque[_Bar] = deque(maxlen=keep)

    def __len__(self) -> int:
        return len(self._bars)

    def _start(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.span

    def price(self, ts_ms: int, price: Decimal) -> None:
        """A trade or tick at this price and time. One older than the open bar is dropped: the bars before it have
        closed."""
        start = self._start(ts_ms)
        bars = self._bars
        if not bars:
            bars.append(_Bar(start, price))
            return
        last = bars[-1]
        if start == last.start:
            last.take(price)
        elif start > last.start:
            self._flat_until(start)
            bars.append(_Bar(start, price))

    def volume(self, ts_ms: int, quantity: Decimal) -> None:
        """Traded quantity at this time, in the bar it falls in while that bar is kept."""
        if not self._bars:
            return
        self.extend(ts_ms)
        bar = self._at(self._start(ts_ms))
        if bar is not None:
            bar.volume += quantity

    def extend(self, ts_ms: int) -> None:
        """Flat bars at the last close up to the one holding `ts_ms` (the current open bar, for now)."""
        start = self._start(ts_ms)
        if self._bars and start > self._bars[-1].start:
            self._bars.append(_Bar(start, self._flat_until(start)))

    def read(self, limit: int, since: int | None = None) -> list[Candle]:
        """The last `limit` bars; with `since` (epoch ms), the first `limit` that open at or after it."""
        bars = self._bars
        if since is None:
            chosen = list(bars)[-limit:] if limit < len(bars) else list(bars)
        else:
            chosen = [bar for bar in bars if bar.start >= since][:limit]
        return [bar.candle() for bar in chosen]

    def _at(self, start: int) -> _Bar | None:
        back = (self._bars[-1].start - start) // self.span
        return self._bars[-1 - back] if 0 <= back < len(self._bars) else None

    def _flat_until(self, start: int) -> Decimal:
        """Flat bars after the last one up to (not including) the bar opening at `start`; returns their close."""
        last = self._bars[-1]
        close = last.close
        first = last.start + self.span
        # No more than the ring holds: a longer gap leaves only flat bars anyway.
        skip_to = start - (self._keep - 1) * self.span
        if skip_to > first:
            self._bars.clear()
            first = skip_to
        for bar_start in range(first, start, self.span):
            self._bars.append(_Bar(bar_start, close))
        return close


class PaperCandles:
    """The simulated market's bars: one Series per symbol and timeframe."""

    def __init__(self, feed: MarketFeed, *, keep: int = KEEP, clock: Clock = now_ms) -> None:
        self._feed = feed
        self._keep = keep
        self._clock = clock
        self._series: dict[str, dict[str, Series]] = {}

    def _of(self, symbol: str, ts_ms: int) -> dict[str, Series]:
        """The symbol's series, opened at the feed's price when this is the first the process hears of it."""
        series = self._series.get(symbol)
        if series is None:
            series = self._series[symbol] = {tf: Series(span, self._keep) for tf, span in TIMEFRAMES.items()}
            ticker = self._feed.ticker(symbol)
            if ticker is not None:
                for one in series.values():
                    one.price(ts_ms, ticker.last)
        return series

    def tick(self, ticker: Ticker) -> None:
        if ticker.symbol not in self._feed.markets:
            return
        for one in self._of(ticker.symbol, ticker.ts_ms).values():
            one.price(ticker.ts_ms, ticker.last)

    def fill(self, symbol: str, quantity: Decimal, ts_ms: int) -> None:
        if symbol not in self._feed.markets or not quantity.is_finite() or quantity <= 0:
            return
        for one in self._of(symbol, ts_ms).values():
            one.volume(ts_ms, quantity)

    def candles(self, symbol: str, timeframe: str, limit: int, since: int | None = None) -> list[Candle]:
        now = self._clock()
        series = self._of(symbol, now)[timeframe]
        series.extend(now)
        return series.read(limit, since)

    def size(self, symbol: str) -> int:
        """How many bars are kept for the symbol, over every timeframe."""
        return sum(len(one) for one in self._series.get(symbol, {}).values())


class Candles:
    """The candle source of the runtime: `candles()` answers for any venue; `run()` follows the bus for the simulated
    market's fills."""

    def __init__(self, venues: Venues, feed: MarketFeed, bus: Bus, *, keep: int = KEEP, clock: Clock = now_ms) -> None:
        self._venues = venues
        self._bus = bus
        self.paper = PaperCandles(feed, keep=keep, clock=clock)
        feed.listen(self.paper.tick)

    async def candles(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        limit: int = 100,
        *,
        since: int | None = None,
        account_id: str = "",
        test_key: bool = False,
    ) -> list[Candle]:
        """A symbol's last `limit` bars of `timeframe` (or the first `limit` from `since`, epoch ms), oldest first.

        Raises BadRequest for a timeframe or limit rt does not take or an exchange the account lacks, NotFound for a
        symbol the venue does not list, ExchangeUnavailable when a real venue cannot be reached.
        """
        if timeframe not in TIMEFRAMES:
            raise BadRequest(
                f"unknown timeframe {timeframe!r}",
                errors=[{"field": "timeframe", "message": f"one of {', '.join(TIMEFRAMES)}"}],
            )
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(
                f"limit must be between 1 and {MAX_LIMIT}",
                errors=[{"field": "limit", "message": f"1 to {MAX_LIMIT}"}],
            )
        venue = self._venues.get(account_id, exchange, test_key=test_key)
        if await venue.market(symbol) is None:
            raise NotFound(f"no market {symbol} on {exchange}")
        if isinstance(venue, CandleVenue):
            return await venue.candles(symbol, timeframe, limit=limit, since=since)
        if self.simulated(venue):
            return self.paper.candles(symbol, timeframe, limit, since)
        raise BadRequest(f"exchange {exchange} serves no candles")

    def simulated(self, venue: Exchange) -> bool:
        """Whether the venue is the simulated market: paper, or a simulated venue with no candles of its own (a
        ccxt venue in sandbox mode is simulated too, but its test network has its own market and bars)."""
        if venue is self._venues.paper:
            return True
        return getattr(venue, "simulated", False) is True and not isinstance(venue, CandleVenue)

    async def run(self) -> None:
        """Count the simulated market's fills into its bars' volume, for as long as the bus runs."""
        while True:
            try:
                async for delivery in self._bus.subscribe():
                    self.heard(delivery)
                return
            except BusLagged:
                log.warning("candle volume fell behind the bus; some fills are not counted")
            except Exception:
                log.exception("bus subscription failed, subscribing again")
                await asyncio.sleep(1)

    def heard(self, delivery: Delivery) -> None:
        event = delivery.event
        # Each event comes on its own channel and again on `events`: the first is counted.
        if delivery.channel != "orders" or event.event != "order.filled":
            return
        data = event.data
        try:
            venue = self._venues.get(event.account_id, str(data.get("exchange")))
            quantity = Decimal(str(data.get("filled_quantity")))
        except (RtError, InvalidOperation):
            return
        if self.simulated(venue):
            self.paper.fill(str(data.get("symbol")), quantity, event.ts_us // 1000)
