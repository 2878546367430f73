"""rt/alerts/parse: the symbols, actions and numbers a TradingView template renders are read as rt's; anything else is
a 400 naming the field, never a 500."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rt.alerts.parse import Alert, body_hash, parse, symbol_of, without_passphrase
from rt.errors import BadRequest


@pytest.mark.parametrize(
    ("given", "symbol"),
    [
        ("BTC/USDT", "BTC/USDT"),
        ("btc/usdt", "BTC/USDT"),
        ("BTCUSDT", "BTC/USDT"),
        ("btcusdt", "BTC/USDT"),
        ("BINANCE:BTCUSDT", "BTC/USDT"),
        ("binance:ethusdt", "ETH/USDT"),
        ("BYBIT:BTCUSDT.P", "BTC/USDT"),
        ("BTCUSDT.P", "BTC/USDT"),
        (" ETH-USDT ", "ETH/USDT"),
        ("SOL_USDC", "SOL/USDC"),
        ("ETHBTC", "ETH/BTC"),
        ("COINBASE:SOLUSD", "SOL/USD"),
    ],
)
def test_every_common_form_of_a_symbol_is_read_as_rts(given: str, symbol: str) -> None:
    assert symbol_of(given) == symbol


@pytest.mark.parametrize(
    "given", ["", "   ", "USDT", "BTC/", "/USDT", "BTC USDT", "BTC/US DT", "ÄBC/USDT", "XYZ", 5, None]
)
def test_what_is_not_a_symbol_is_a_400_naming_the_field(given: object) -> None:
    with pytest.raises(BadRequest) as caught:
        symbol_of(given, "symbols.2")
    assert caught.value.extra["errors"][0]["field"] == "symbols.2"


def test_a_tradingview_body_with_its_extras_reads_as_the_alert_it_means() -> None:
    body = {
        "passphrase": "secret",
        "symbol": "BINANCE:BTCUSDT",
        "action": "BUY",
        "quantity": "0.015",
        "time": "2026-12-01T21:00:00Z",
        "ticker": "BTCUSDT",
        "exchange": "BINANCE",
    }
    assert parse(body) == Alert(symbol="BTC/USDT", action="buy", quantity=Decimal("0.015"))


def test_numbers_types_prices_and_ids_in_the_forms_a_template_renders() -> None:
    alert = parse(
        {
            "symbol": "ETHUSDT",
            "action": " Sell ",
            "quantity": 2,
            "type": "LIMIT",
            "price": "3600.5",
            "stop_loss": 3700,
            "take_profit": "3000",
            "id": 42,
        }
    )
    assert alert == Alert(
        symbol="ETH/USDT",
        action="sell",
        quantity=Decimal("2"),
        type="limit",
        price=Decimal("3600.5"),
        stop_loss=Decimal("3700"),
        take_profit=Decimal("3000"),
        id="42",
    )
    assert parse({"symbol": "BTCUSDT", "action": "flat", "quantity": ""}).quantity is None
    assert parse({"symbol": "BTCUSDT", "action": "Close"}).action == "close"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"symbol": "BTCUSDT"}, "action"),
        ({"symbol": "BTCUSDT", "action": "hold"}, "action"),
        ({"symbol": "BTCUSDT", "action": 1}, "action"),
        ({"action": "buy"}, "symbol"),
        ({"symbol": "BTCUSDT", "action": "buy", "quantity": "-1"}, "quantity"),
        ({"symbol": "BTCUSDT", "action": "buy", "quantity": "0"}, "quantity"),
        ({"symbol": "BTCUSDT", "action": "buy", "quantity": "one"}, "quantity"),
        ({"symbol": "BTCUSDT", "action": "buy", "quantity": "NaN"}, "quantity"),
        ({"symbol": "BTCUSDT", "action": "buy", "quantity": True}, "quantity"),
        ({"symbol": "BTCUSDT", "action": "buy", "quantity": [1]}, "quantity"),
        ({"symbol": "BTCUSDT", "action": "buy", "quantity": "1e400"}, "quantity"),
        ({"symbol": "BTCUSDT", "action": "buy", "type": "trailing"}, "type"),
        ({"symbol": "BTCUSDT", "action": "buy", "type": "limit"}, "price"),
        ({"symbol": "BTCUSDT", "action": "buy", "type": "stop"}, "price"),
        ({"symbol": "BTCUSDT", "action": "buy", "stop_loss": "x"}, "stop_loss"),
        ({"symbol": "BTCUSDT", "action": "buy", "id": "has space"}, "id"),
        ({"symbol": "BTCUSDT", "action": "buy", "id": "x" * 129}, "id"),
        ({"symbol": "BTCUSDT", "action": "buy", "id": {"a": 1}}, "id"),
        (["not", "an", "object"], "body"),
        ("text", "body"),
    ],
)
def test_a_bad_field_is_a_400_that_names_it(body: object, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse(body)
    assert [e["field"] for e in caught.value.extra["errors"]] == [field]


def test_the_dedupe_hash_ignores_the_passphrase_key_order_and_spacing_but_not_the_rest() -> None:
    one = {"passphrase": "a", "symbol": "BTCUSDT", "action": "buy", "time": "t1"}
    same = {"time": "t1", "action": "buy", "symbol": "BTCUSDT", "passphrase": "b"}
    later = {**one, "time": "t2"}
    assert body_hash(one) == body_hash(same) != body_hash(later)
    assert without_passphrase(one) == {"symbol": "BTCUSDT", "action": "buy", "time": "t1"}
