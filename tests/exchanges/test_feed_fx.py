"""rt/exchanges/feed: FX pairs on the paper market. They trade in whole units on a fractional pip, move little and
come back to their start price, so levels a fixed distance away (the Tradyn quick start's stop loss 1.0800 and take
profit 1.0950 on EUR/USD at 1.0870) stay on their side of the price however long the market runs. Crypto symbols walk
exactly as they did."""

from __future__ import annotations

import math
import random
import statistics
from decimal import Decimal

from rt.exchanges.feed import DEFAULT_PRICES, MarketFeed
from rt.records.trading import is_fiat_pair

D = Decimal
FX = ("EUR/USD", "GBP/USD", "USD/JPY")


def test_the_default_market_has_the_fx_pairs_next_to_crypto() -> None:
    feed = MarketFeed(interval=0)
    assert set(feed.markets) == {"BTC/USDT", "ETH/USDT", "SOL/USDT", *FX}
    starts = {s: t.last for s in FX if (t := feed.ticker(s)) is not None}
    assert starts == {"EUR/USD": D("1.0870"), "GBP/USD": D("1.2700"), "USD/JPY": D("150.00")}
    eur, jpy, btc = feed.markets["EUR/USD"], feed.markets["USD/JPY"], feed.markets["BTC/USDT"]
    assert (eur.base, eur.quote, eur.price_step, eur.amount_step, eur.min_amount) == ("EUR", "USD", D("0.00001"), 1, 1)
    assert (jpy.price_step, jpy.amount_step, jpy.min_amount) == (D("0.001"), 1, 1)
    assert (btc.price_step, btc.amount_step, btc.min_amount) == (D(1), D("0.0001"), D("0.0001"))
    ticker = feed.ticker("EUR/USD")
    assert ticker is not None and (ticker.bid, ticker.ask) == (D("1.08695"), D("1.08705"))  # one pip wide


def test_a_pair_of_two_fiat_currencies_is_fx() -> None:
    assert all(is_fiat_pair(s) for s in (*FX, "EUR/GBP", "aud/nzd", "USD/CHF", "USD/MXN", "EUR/PLN"))
    assert not any(is_fiat_pair(s) for s in ("BTC/USDT", "EUR/USDT", "USDT/USD", "BTC/USD", "EURUSD", "XAU/USD"))


def test_every_fiat_pair_trades_as_fx_on_the_paper_market() -> None:
    feed = MarketFeed({"USD/MXN": D("17.1234"), "USD/ZAR": D("18.5"), "EUR/USDT": D("1.08")}, interval=0)
    for symbol in ("USD/MXN", "USD/ZAR"):
        market = feed.markets[symbol]
        assert (market.price_step, market.amount_step, market.min_amount) == (D("0.00001"), 1, 1)
    assert feed.markets["EUR/USDT"].amount_step == D("0.0001")  # a stablecoin is not fiat


def test_fx_stays_near_its_start_for_200000_seeded_ticks() -> None:
    feed = MarketFeed({s: DEFAULT_PRICES[s] for s in FX}, interval=0, seed=20240601)
    prices = {s: DEFAULT_PRICES[s] for s in FX}
    low = {s: prices[s] for s in FX}
    high = dict(low)
    samples: dict[str, list[float]] = {s: [] for s in FX}
    lowest_bid, highest_ask = D("1.0870"), D("1.0870")
    for n in range(200_000):
        for ticker in feed.walk(prices):
            prices[ticker.symbol] = ticker.last
            low[ticker.symbol] = min(low[ticker.symbol], ticker.last)
            high[ticker.symbol] = max(high[ticker.symbol], ticker.last)
            if n % 100 == 0:
                samples[ticker.symbol].append(float(ticker.last / DEFAULT_PRICES[ticker.symbol]) - 1)
            if ticker.symbol == "EUR/USD":
                lowest_bid, highest_ask = min(lowest_bid, ticker.bid), max(highest_ask, ticker.ask)
    for symbol in FX:
        start = DEFAULT_PRICES[symbol]
        assert start * D("0.995") <= low[symbol] and high[symbol] <= start * D("1.005"), symbol
        assert high[symbol] - low[symbol] > start * D("0.002"), symbol  # it moves
        spread = statistics.pstdev(samples[symbol])
        assert 0.0005 < spread < 0.002, (symbol, spread)  # about 0.1%
    assert D("1.0800") < lowest_bid and highest_ask < D("1.0950")


def test_fx_reverts_to_its_start_from_a_price_set_far_away() -> None:
    feed = MarketFeed({"EUR/USD": D("1.0870")}, interval=0, seed=5)
    feed.set_price("EUR/USD", D("1.1000"))  # 1.2% over its start
    band = D("1.0870") * D("1.0045") + D("0.00001")
    previous, back = D("1.1000"), None
    for n in range(3000):
        feed.step()
        ticker = feed.ticker("EUR/USD")
        assert ticker is not None
        if back is None:
            assert ticker.last <= previous  # outside its band it only comes back
            back = n if ticker.last <= band else None
        else:
            assert ticker.last <= band  # and once inside, it stays
        previous = ticker.last
    assert back is not None and back > 100  # pulled back, not snapped


def test_an_fx_pair_listed_in_the_settings_behaves_as_fx() -> None:
    feed = MarketFeed({"EUR/GBP": D("0.8500"), "EUR/JPY": D("163.000")}, interval=0, seed=9)
    assert feed.markets["EUR/GBP"].price_step == D("0.00001")
    assert feed.markets["EUR/JPY"].price_step == D("0.001")
    prices = {"EUR/GBP": D("0.8500"), "EUR/JPY": D("163.000")}
    for _ in range(20_000):
        prices = {t.symbol: t.last for t in feed.walk(prices)}
        assert D("0.8500") * D("0.995") <= prices["EUR/GBP"] <= D("0.8500") * D("1.005")


def test_crypto_walks_as_before_with_fx_pairs_in_the_market() -> None:
    """The walk of a crypto symbol is today's seeded random walk, draw for draw, whatever FX pairs tick beside it."""
    volatility = 0.0005
    feed = MarketFeed(dict(DEFAULT_PRICES), interval=0, seed=42, volatility=volatility)
    rng = random.Random(42)
    expected = {s: p for s, p in DEFAULT_PRICES.items() if not is_fiat_pair(s)}
    for _ in range(200):
        feed.step()
        for symbol in expected:
            moved = expected[symbol] * D(repr(math.exp(rng.gauss(0.0, volatility))))
            expected[symbol] = moved.quantize(feed.markets[symbol].price_step)
            ticker = feed.ticker(symbol)
            assert ticker is not None and ticker.last == expected[symbol]
