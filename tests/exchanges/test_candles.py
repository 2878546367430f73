"""rt/exchanges/candles: bars of the simulated market from its ticks and fills, bounded; a real venue's own bars."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from starlette.requests import Request
from starlette.routing import Route

from rt.bus.memory import MemoryBus
from rt.errors import BadRequest, NotFound
from rt.exchanges import Market, Ticker
from rt.exchanges.candles import Candles, PaperCandles, Series
from rt.exchanges.ccxt_exchange import CcxtExchange
from rt.exchanges.feed import MarketFeed
from rt.exchanges.paper import PaperExchange
from rt.exchanges.registry import Venues
from rt.records.candles import TIMEFRAMES, Candle
from rt.records.events import Delivery, Event
from tests.exchanges.fake_binance import FakeBinance

ETH = "ETH/USDT"
MIN = 60_000
# 2026-01-01 00:00 UTC: a day, hour and minute boundary.
T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)


def d(value: str | int) -> Decimal:
    return Decimal(str(value))


def ohlcv(candle: Candle) -> tuple[Decimal, ...]:
    return candle.open, candle.high, candle.low, candle.close, candle.volume


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def tick(price: str | int, ms: int, symbol: str = ETH) -> Ticker:
    return Ticker(symbol, d(price), d(price), d(price), ms)


def test_ticks_make_one_bar_per_minute_with_open_high_low_close_right_across_boundaries() -> None:
    series = Series(TIMEFRAMES["1m"])
    for price, ms in [(100, T0 + 1_000), (105, T0 + 20_000), (98, T0 + 40_000), (101, T0 + 59_999)]:
        series.price(ms, d(price))
    for price, ms in [(102, T0 + MIN), (99, T0 + MIN + 30_000)]:
        series.price(ms, d(price))

    first, second = series.read(10)
    assert first.time == at(T0) and second.time == at(T0 + MIN)
    assert ohlcv(first) == (100, 105, 98, 101, 0)
    assert ohlcv(second) == (102, 102, 99, 99, 0)


def test_larger_timeframes_open_on_utc_boundaries_and_cover_their_whole_span() -> None:
    feed = MarketFeed({ETH: d(100)}, interval=0)
    candles = PaperCandles(feed, clock=Clock(T0 + 9 * MIN))
    # Ten minutes from 23:55 the day before: the 5m bars open at 23:55, 00:00 and 00:05.
    prices = [100, 103, 97, 101, 102, 110, 90, 95, 96, 94]
    for minute, price in enumerate(prices):
        candles.tick(tick(price, T0 - 5 * MIN + minute * MIN + 10_000))

    five = candles.candles(ETH, "5m", 10)
    assert [c.time for c in five] == [at(T0 - 5 * MIN), at(T0), at(T0 + 5 * MIN)]
    assert ohlcv(five[0]) == (100, 103, 97, 102, 0)
    assert ohlcv(five[1]) == (110, 110, 90, 94, 0)
    assert ohlcv(five[2]) == (94, 94, 94, 94, 0)  # the current bar: no tick yet, open at the last close
    daily = candles.candles(ETH, "1d", 10)
    assert [c.time for c in daily] == [at(T0 - 86_400_000), at(T0)]
    assert ohlcv(daily[0]) == (100, 103, 97, 102, 0)
    assert ohlcv(daily[1]) == (110, 110, 90, 94, 0)
    hourly = candles.candles(ETH, "4h", 10)
    assert hourly[-1].time == at(T0) and ohlcv(hourly[-1]) == (110, 110, 90, 94, 0)


def test_minutes_without_ticks_are_flat_bars_at_the_last_close_up_to_the_open_bar() -> None:
    feed = MarketFeed({ETH: d(100)}, interval=0)
    clock = Clock(T0 + 5_000)
    candles = PaperCandles(feed, clock=clock)
    candles.tick(tick(101, T0 + 1_000))
    candles.tick(tick(104, T0 + 3 * MIN + 1_000))
    clock.ms = T0 + 5 * MIN + 1

    bars = candles.candles(ETH, "1m", 100)
    assert [c.time for c in bars] == [at(T0 + n * MIN) for n in range(6)]
    assert [ohlcv(c) for c in bars] == [
        (100, 101, 100, 101, 0),  # opened at the feed's price when the symbol was first heard of
        (101, 101, 101, 101, 0),
        (101, 101, 101, 101, 0),
        (104, 104, 104, 104, 0),
        (104, 104, 104, 104, 0),
        (104, 104, 104, 104, 0),
    ]


def test_a_fresh_market_has_the_current_open_bar_at_the_feeds_price() -> None:
    feed = MarketFeed({ETH: d(3500)}, interval=0)
    candles = PaperCandles(feed, clock=Clock(T0 + 90_000))
    for timeframe, span in TIMEFRAMES.items():
        (bar,) = candles.candles(ETH, timeframe, 100)
        assert bar.time == at(T0 + 90_000 - (T0 + 90_000) % span)
        assert ohlcv(bar) == (3500, 3500, 3500, 3500, 0)


def test_a_tick_older_than_the_open_bar_is_dropped() -> None:
    series = Series(TIMEFRAMES["1m"])
    series.price(T0 + 1_000, d(100))
    series.price(T0 + MIN + 1_000, d(101))
    series.price(T0 + 30_000, d(500))  # late, from a minute that has closed
    assert [ohlcv(c) for c in series.read(10)] == [(100, 100, 100, 100, 0), (101, 101, 101, 101, 0)]


def test_limit_takes_the_last_bars_and_since_the_first_from_a_time() -> None:
    series = Series(TIMEFRAMES["1m"])
    for n in range(10):
        series.price(T0 + n * MIN, d(100 + n))
    assert [c.close for c in series.read(3)] == [107, 108, 109]
    assert [c.close for c in series.read(3, since=T0 + 2 * MIN)] == [102, 103, 104]
    assert [c.close for c in series.read(3, since=T0 + 2 * MIN + 1)] == [103, 104, 105]
    assert series.read(3, since=T0 + 10 * MIN) == []


def test_memory_stays_bounded_over_a_long_run_and_a_long_gap() -> None:
    feed = MarketFeed({ETH: d(100)}, interval=0)
    clock = Clock(T0)
    candles = PaperCandles(feed, keep=50, clock=clock)
    for n in range(3_000):  # 50 hours of ticks, every 59 s
        candles.tick(tick(100 + n % 7, T0 + n * 59_000))
    assert candles.size(ETH) <= 50 * len(TIMEFRAMES)
    minutes = candles.candles(ETH, "1m", 1000)
    assert len(minutes) == 50
    assert minutes[-1].time == at((T0 + 2_999 * 59_000) // MIN * MIN)

    # A year without ticks (a stopped feed): still at most `keep` bars, the last one the current minute.
    clock.ms = T0 + 365 * 86_400_000
    after = candles.candles(ETH, "1m", 1000)
    assert len(after) == 50 and after[-1].time == at(clock.ms)
    assert {ohlcv(c) for c in after} == {(minutes[-1].close,) * 4 + (0,)}
    assert candles.size(ETH) <= 50 * len(TIMEFRAMES)


def test_ring_of_one_bar_keeps_the_last() -> None:
    series = Series(TIMEFRAMES["1m"], keep=1)
    series.price(T0, d(1))
    series.extend(T0 + 10 * MIN)
    series.price(T0 + 11 * MIN, d(2))
    assert [(c.time, c.close) for c in series.read(5)] == [(at(T0 + 11 * MIN), 2)]


def order_filled(exchange: str, symbol: str, quantity: str, ms: int, account: str = "acct_a") -> Event:
    data = {"id": "ord_1", "exchange": exchange, "symbol": symbol, "filled_quantity": Decimal(quantity)}
    return Event(account, "order.filled", data, ts_us=ms * 1000)


class SimulatedName:
    """A simulated venue under another name, with no candles of its own (what RT_PAPER_VENUES gives)."""

    simulated = True

    def __init__(self, exchange_id: str, paper: PaperExchange) -> None:
        self.id = exchange_id
        self._paper = paper

    @property
    def connected(self) -> bool:
        return True

    async def market(self, symbol: str) -> Market | None:
        return await self._paper.market(symbol)


class OwnBars:
    """A venue that serves its own candles; simulated, as a ccxt sandbox venue is."""

    simulated = True
    id = "testnet"
    connected = True

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, int, int | None]] = []

    async def market(self, symbol: str) -> Market | None:
        return Market(symbol, "BTC", "USDT", d("0.01"), d("0.0001"), d("0.0001")) if symbol == "BTC/USDT" else None

    async def candles(self, symbol: str, timeframe: str, *, limit: int, since: int | None = None) -> list[Candle]:
        self.asked.append((symbol, timeframe, limit, since))
        return [Candle(at(T0), d(1), d(2), d(0), d(1), d(5))]


@pytest.fixture
def market() -> tuple[MarketFeed, Venues, Clock]:
    feed = MarketFeed({ETH: d(100)}, interval=0)
    return feed, Venues(PaperExchange(feed)), Clock(T0 + 1_000)


async def test_fills_on_the_simulated_market_are_its_volume_counted_once(
    market: tuple[MarketFeed, Venues, Clock],
) -> None:
    feed, venues, clock = market
    venues.add("acct_a", SimulatedName("binance", venues.paper))  # type: ignore[arg-type]
    source = Candles(venues, feed, MemoryBus(), clock=clock)
    feed.apply(tick(100, T0 + 500))
    for event in (order_filled("paper", ETH, "0.5", T0 + 2_000), order_filled("binance", ETH, "0.25", T0 + 3_000)):
        # Each event comes on its own channel and again on `events`.
        source.heard(Delivery("orders", 1, event))
        source.heard(Delivery("events", 1, event))
    source.heard(Delivery("orders", 2, order_filled("paper", ETH, "7", T0 + MIN + 1)))  # the next minute
    source.heard(Delivery("orders", 3, order_filled("kraken", ETH, "9", T0 + 4_000)))  # a venue it does not know
    source.heard(Delivery("orders", 4, Event("acct_a", "order.created", {"exchange": "paper", "symbol": ETH})))

    clock.ms = T0 + MIN + 2
    first, second = await source.candles("paper", ETH, "1m", 10)
    assert first.volume == Decimal("0.75") and second.volume == 7
    assert (await source.candles("binance", ETH, "1h", 10, account_id="acct_a"))[-1].volume == Decimal("7.75")


async def test_volume_follows_the_bus(market: tuple[MarketFeed, Venues, Clock]) -> None:
    feed, venues, clock = market
    bus = MemoryBus()
    source = Candles(venues, feed, bus, clock=clock)
    running = asyncio.create_task(source.run())
    try:
        await asyncio.sleep(0)
        await bus.publish([order_filled("paper", ETH, "1.5", T0 + 1_000)])
        for _ in range(100):
            (bar,) = await source.candles("paper", ETH, "1m", 1)
            if bar.volume:
                break
            await asyncio.sleep(0.01)
        assert bar.volume == Decimal("1.5")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_simulated_venue_shares_the_paper_bars_and_a_venue_with_bars_of_its_own_answers_itself(
    market: tuple[MarketFeed, Venues, Clock],
) -> None:
    feed, venues, clock = market
    own = OwnBars()
    venues.add("acct_a", SimulatedName("binance", venues.paper))  # type: ignore[arg-type]
    venues.add("acct_a", own)  # type: ignore[arg-type]
    source = Candles(venues, feed, MemoryBus(), clock=clock)
    feed.apply(tick(123, T0 + 500))

    paper = await source.candles("paper", ETH, "1m", 5)
    assert await source.candles("binance", ETH, "1m", 5, account_id="acct_a") == paper
    assert paper[-1].close == 123
    assert await source.candles("testnet", "BTC/USDT", "4h", 7, since=T0, account_id="acct_a") == [
        Candle(at(T0), d(1), d(2), d(0), d(1), d(5))
    ]
    assert own.asked == [("BTC/USDT", "4h", 7, T0)]


async def test_refusals(market: tuple[MarketFeed, Venues, Clock]) -> None:
    feed, venues, clock = market
    source = Candles(venues, feed, MemoryBus(), clock=clock)
    with pytest.raises(BadRequest) as bad:
        await source.candles("paper", ETH, "2m", 5)
    assert bad.value.extra["errors"][0]["field"] == "timeframe"
    with pytest.raises(BadRequest):
        await source.candles("paper", ETH, "1m", 0)
    with pytest.raises(BadRequest):
        await source.candles("paper", ETH, "1m", 1001)
    with pytest.raises(NotFound):
        await source.candles("paper", "DOGE/USDT", "1m", 5)
    with pytest.raises(BadRequest):
        await source.candles("kraken", ETH, "1m", 5, account_id="acct_a")


# the ccxt path, against the fake Binance with a klines route


class KlineBinance(FakeBinance):
    """The fake venue with Binance's klines: bar n of a timeframe opens at n spans, its prices near 100 + n % 50."""

    def _routes(self) -> list[Route]:
        return [*super()._routes(), Route("/api/v3/klines", self._endpoint(self._klines, False), methods=["GET"])]

    def _klines(self, request: Request, params: dict[str, str]) -> list[list[Any]]:
        span = {"1m": MIN, "4h": 4 * 60 * MIN, "1d": 24 * 60 * MIN}[params["interval"]]
        limit = int(params.get("limit", "500"))
        first = int(params["startTime"]) // span if "startTime" in params else T0 // span - limit + 1
        return [
            [
                n * span,
                str(100 + n % 50),
                str(102 + n % 50),
                str(99 + n % 50),
                str(101 + n % 50),
                "3.5",
                n * span + span - 1,
            ]
            for n in range(first, first + limit)
        ]


@pytest.fixture
async def klines() -> AsyncIterator[tuple[KlineBinance, CcxtExchange]]:
    key, secret = "fake-api-key-" + secrets.token_hex(8), "fake-secret-" + secrets.token_hex(16)
    with KlineBinance(key, secret) as fake:
        venue = CcxtExchange("binance", {"api_key": key, "secret": secret}, url=fake.url, backoff=(0.02, 0.1))
        await venue.start()
        try:
            for _ in range(500):
                if venue.connected:
                    break
                await asyncio.sleep(0.01)
            assert venue.connected
            yield fake, venue
        finally:
            await venue.close()


async def test_a_ccxt_venue_answers_with_its_own_bars(klines: tuple[KlineBinance, CcxtExchange]) -> None:
    fake, venue = klines
    feed = MarketFeed({ETH: d(100)}, interval=0)
    venues = Venues(PaperExchange(feed))
    venues.add("acct_a", venue)
    source = Candles(venues, feed, MemoryBus())

    last = await source.candles("binance", "BTC/USDT", "1d", 3, account_id="acct_a")
    day = 86_400_000
    assert [c.time for c in last] == [at(T0 - 2 * day), at(T0 - day), at(T0)]
    n = T0 // day
    assert ohlcv(last[-1]) == (100 + n % 50, 102 + n % 50, 99 + n % 50, 101 + n % 50, Decimal("3.5"))
    asked = [s.params for s in fake.seen if s.path == "/api/v3/klines"]
    assert asked[-1]["symbol"] == "BTCUSDT" and asked[-1]["interval"] == "1d" and asked[-1]["limit"] == "3"

    since = await source.candles("binance", "BTC/USDT", "1m", 2, since=T0, account_id="acct_a")
    assert [c.time for c in since] == [at(T0), at(T0 + MIN)]
    assert [s.params for s in fake.seen if s.path == "/api/v3/klines"][-1]["startTime"] == str(T0)

    with pytest.raises(NotFound):
        await source.candles("binance", "DOGE/USDT", "1m", 2, account_id="acct_a")
    with pytest.raises(BadRequest):
        await venue.candles("BTC/USDT", "7m", limit=2)
