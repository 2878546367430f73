"""Tradyn names and sizes: EURUSD <-> EUR/USD, lots <-> units (100,000 for a forex pair, 1 otherwise), price digits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rt.api.compat.tradyn import symbols
from rt.errors import BadRequest, NotFound
from rt.exchanges import Market
from rt.exchanges.feed import MarketFeed
from rt.records.trading import is_fiat_pair

KNOWN = ["BTC/USDT", "EUR/USD", "USD/JPY"]


@pytest.mark.parametrize(
    ("name", "symbol"),
    [
        ("EURUSD", "EUR/USD"),
        ("eurusd", "EUR/USD"),
        ("EUR/USD", "EUR/USD"),
        ("BTCUSDT", "BTC/USDT"),
        (" USDJPY ", "USD/JPY"),
    ],
)
def test_a_tradyn_name_maps_to_the_venue_symbol(name: str, symbol: str) -> None:
    assert symbols.to_rt(name, KNOWN) == symbol
    assert symbols.to_tradyn(symbol) == name.strip().upper().replace("/", "")


def test_an_unknown_symbol_is_refused_naming_it() -> None:
    with pytest.raises(BadRequest, match="XAUUSD"):
        symbols.to_rt("XAUUSD", KNOWN)
    with pytest.raises(NotFound, match="GBPUSD"):
        symbols.to_rt("GBPUSD", KNOWN, missing=NotFound)
    with pytest.raises(BadRequest):
        symbols.to_rt("", KNOWN)


def test_a_forex_lot_is_100000_units_and_any_other_lot_one() -> None:
    assert symbols.lot_size("EUR/USD") == 100_000
    assert symbols.lot_size("USD/JPY") == 100_000
    assert symbols.lot_size("BTC/USDT") == 1
    assert symbols.lot_size("ETH/BTC") == 1
    assert symbols.to_units(0.10, "EUR/USD") == Decimal(10_000)
    assert str(symbols.to_units("1", "EUR/USD")) == "100000"  # never 1E+5: the books keep it as written
    assert symbols.to_units(Decimal("0.25"), "BTC/USDT") == Decimal("0.25")
    assert symbols.to_lots(Decimal("12345"), "EUR/USD") == Decimal("0.12345")
    assert symbols.to_lots(Decimal("0.5"), "BTC/USDT") == Decimal("0.5")


@pytest.mark.parametrize("volume", [0, -0.1, 0.001, 0.015, "1e9", "nan", "x", True, None, [1]])
def test_a_volume_off_the_lot_step_or_not_a_positive_number_is_a_bad_request(volume: object) -> None:
    with pytest.raises(BadRequest):
        symbols.to_units(volume, "EUR/USD")


def test_digits_are_the_price_steps_places() -> None:
    def market(step: str) -> Market:
        return Market("X/Y", "X", "Y", Decimal(step), Decimal("0.01"), Decimal("0.01"))

    assert symbols.digits(market("0.00001")) == 5
    assert symbols.digits(market("0.010")) == 2
    assert symbols.digits(market("1")) == 0
    assert symbols.digits(market("10")) == 0
    assert symbols.digits(market("0")) == 8


@pytest.mark.parametrize("symbol", ["EUR/USD", "USD/MXN", "EUR/PLN", "USD/ZAR", "BTC/USDT", "ETH/BTC", "EUR/USDT"])
def test_a_tradyn_lot_is_forex_exactly_when_the_paper_market_trades_it_as_fx(symbol: str) -> None:
    market = MarketFeed({symbol: Decimal("2")}, interval=0).markets[symbol]
    forex = symbols.lot_size(symbol) == symbols.FOREX_LOT
    assert forex == (market.amount_step == 1) == is_fiat_pair(symbol)
