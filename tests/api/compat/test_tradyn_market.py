"""Tradyn market data (/v1/api/symbols, /quote, /candles): MetaTrader names, lots, digits and timeframes over the
Tradyn venue's own markets, quotes and bars."""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal
from pathlib import Path

from rt.api.compat.tradyn.market import FETCHES
from rt.exchanges import FillHandler, Market, Ticker, TickHandler
from tests.api.compat._tradyn_rig import refused, tradyn


class ManyMarkets:
    """A venue of 200 coins, each ticker a REST call as on ccxt: it counts them and the most in flight at once."""

    id = "manycoins"
    connected = True
    simulated = False

    def __init__(self) -> None:
        self.listed = [
            Market(f"C{i:03}/USDT", f"C{i:03}", "USDT", Decimal("0.01"), Decimal("1"), Decimal("1")) for i in range(200)
        ]
        self.fetched: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self.ticks: list[TickHandler] = []

    def price(self, symbol: str, last: str) -> Ticker:
        value = Decimal(last)
        return Ticker(symbol, value - Decimal("0.01"), value + Decimal("0.01"), value, 1_700_000_000_000)

    def tick(self, symbol: str, last: str) -> Ticker:
        ticker = self.price(symbol, last)
        for handler in self.ticks:
            handler(ticker)
        return ticker

    async def markets(self) -> list[Market]:
        return self.listed

    async def market(self, symbol: str) -> Market | None:
        return next((m for m in self.listed if m.symbol == symbol), None)

    async def ticker(self, symbol: str) -> Ticker:
        self.fetched.append(symbol)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # a round trip: the others start meanwhile, as many as the caller lets
            return self.price(symbol, "10")
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass

    def on_fill(self, handler: FillHandler) -> None:
        pass

    def on_tick(self, handler: TickHandler) -> None:
        self.ticks.append(handler)


async def test_symbols_list_every_market_with_its_contract_and_quote(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        listed = {s["symbol"]: s for s in await t.data(await t.http.get("/api/symbols"))}
        assert set(listed) == {"EURUSD", "GBPUSD", "USDJPY", "BTCUSDT"}
        steps = {m["symbol"]: m for m in (await t.http.get("/markets")).json()["markets"]}
        eurusd = listed["EURUSD"]
        step = steps["EUR/USD"]["price_step"]
        assert (eurusd["point"], eurusd["digits"]) == (step, round(-math.log10(step)))
        assert (eurusd["lot_size"], eurusd["volume_min"], eurusd["volume_step"]) == (100000, 0.01, 0.01)
        assert (eurusd["currency_base"], eurusd["currency_profit"]) == ("EUR", "USD")
        ticker = (await t.http.get("/markets/EUR-USD/ticker")).json()
        assert (eurusd["bid"], eurusd["ask"]) == (ticker["bid"], ticker["ask"])
        assert eurusd["spread"] == round((ticker["ask"] - ticker["bid"]) / step)
        assert eurusd["spread"] > 0
        assert (listed["BTCUSDT"]["lot_size"], listed["USDJPY"]["lot_size"]) == (1, 100000)

        one = await t.data(await t.http.get("/api/symbols/eurusd"))
        assert one == eurusd
        assert (await t.data(await t.http.get("/api/symbols/EUR%2FUSD")))["symbol"] == "EURUSD"
        refused(await t.http.get("/api/symbols/XAUUSD"), 404)


async def test_a_quote_follows_the_market(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        moved = t.set_price("GBP/USD", "1.2800")
        quote = await t.data(await t.http.get("/api/quote/GBPUSD"))
        assert (quote["symbol"], quote["bid"], quote["ask"], quote["last"]) == (
            "GBPUSD",
            float(moved.bid),
            float(moved.ask),
            1.28,
        )
        assert quote["time_msc"] == moved.ts_ms
        assert quote["time"].endswith("Z")
        refused(await t.http.get("/api/quote/NOPE"), 404)


async def test_candles_map_mt_timeframes_onto_the_venues_bars(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        for price in ("1.0860", "1.0880", "1.0840", "1.0870"):
            t.set_price("EUR/USD", price)
        native = (await t.http.get("/markets/EUR-USD/candles", params={"timeframe": "1m", "limit": 5})).json()
        bars = await t.data(await t.http.get("/api/candles/EURUSD", params={"timeframe": "M1", "count": 5}))
        assert len(bars) == len(native["candles"]) >= 1
        last = bars[-1]
        assert set(last) == {"time", "open", "high", "low", "close", "volume"}
        assert (last["high"], last["low"], last["close"]) == (1.088, 1.084, 1.087)
        assert [b["time"] for b in bars] == [c["time"] for c in native["candles"]]
        for timeframe in ("M5", "M15", "M30", "H1", "H4", "D1", "PERIOD_H4", "h1"):
            assert await t.data(await t.http.get("/api/candles/EURUSD", params={"timeframe": timeframe}))
        one = await t.data(await t.http.get("/api/candles/EURUSD", params={"timeframe": "D1", "count": 1}))
        assert len(one) == 1 and one[0]["close"] == 1.087

        assert refused(await t.http.get("/api/candles/EURUSD", params={"timeframe": "W1"}), 400)["errors"]
        refused(await t.http.get("/api/candles/EURUSD", params={"count": 0}), 400)
        refused(await t.http.get("/api/candles/EURUSD", params={"count": 1001}), 400)
        refused(await t.http.get("/api/candles/XAUUSD"), 404)


async def test_market_data_needs_market_read(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        for path in ("/api/symbols", "/api/symbols/EURUSD", "/api/quote/EURUSD", "/api/candles/EURUSD"):
            await t.data(await t.reader.get(path))
            await t.data(await t.trader.get(path))
            assert refused(await t.http.get(path, headers={"Authorization": ""}), 401)
        none = await t.runtime.keys.create(t.account_id, ["account:read"], "pro_plus")
        refused(await t.http.get("/api/quote/EURUSD", headers={"Authorization": f"Bearer {none.key}"}), 403)


async def test_symbols_quote_from_the_ticks_heard_and_fetch_the_rest_a_few_at_a_time(tmp_path: Path) -> None:
    async with tradyn(tmp_path, tradyn_exchange=ManyMarkets.id) as t:
        venue = ManyMarkets()
        t.runtime.engine.venues.add(t.account_id, venue)
        t.runtime.engine.ticks.listen(venue)
        heard = {m.symbol: venue.tick(m.symbol, "20") for m in venue.listed[:150]}

        listed = await t.data(await t.http.get("/api/symbols"))
        assert len(listed) == 200
        assert sorted(venue.fetched) == [m.symbol for m in venue.listed[150:]]  # no call for a market that ticked
        assert 1 < venue.most_in_flight <= FETCHES
        quotes = {s["symbol"]: (s["bid"], s["ask"]) for s in listed}
        assert quotes["C000USDT"] == (float(heard["C000/USDT"].bid), float(heard["C000/USDT"].ask)) == (19.99, 20.01)
        assert quotes["C199USDT"] == (9.99, 10.01)
