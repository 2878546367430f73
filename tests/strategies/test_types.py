"""Grid and DCA as pure decision makers: what they want placed, given prices, fills and time."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from pydantic import ValidationError

from rt.exchanges import Ticker
from rt.strategies.dca import DCA, DCAConfig
from rt.strategies.grid import Grid, GridConfig


def tick(price: str) -> Ticker:
    p = D(price)
    return Ticker("BTC/USDT", p - D("0.01"), p + D("0.01"), p, 0)


def grid(levels: int = 5, low: str = "90", high: str = "110") -> Grid:
    config = GridConfig(grid_levels=levels, price_range=(D(low), D(high)), quantity_per_level=D("0.5"))
    return Grid(config, {})


def test_grid_starts_with_buys_on_the_levels_below_the_price() -> None:
    wants = grid().on_start(tick("100"))
    assert [(w.side, w.type, w.price, w.tag) for w in wants] == [
        ("buy", "limit", D(90), "buy:0"),
        ("buy", "limit", D(95), "buy:1"),
    ]
    assert all(w.quantity == D("0.5") for w in wants)


def test_grid_sells_a_filled_buy_one_level_up_and_buys_back_a_sold_level_one_down() -> None:
    g = grid()
    (sell,) = g.on_fill("buy:1", "buy", D("94.9"), D("0.5"))
    assert (sell.side, sell.price, sell.tag) == ("sell", D(100), "sell:2")
    (buy,) = g.on_fill("sell:2", "sell", D("100.1"), D("0.5"))
    assert (buy.side, buy.price, buy.tag) == ("buy", D(95), "buy:1")
    assert g.on_fill("buy:4", "buy", D(110), D("0.5")) == []  # no level above the top
    assert g.on_fill("sell:0", "sell", D(90), D("0.5")) == []  # none below the bottom
    assert g.on_fill("dca:1", "buy", D(90), D("0.5")) == []  # not one of its tags


@pytest.mark.parametrize(
    "config",
    [
        {"grid_levels": 1, "price_range": [90, 110], "quantity_per_level": 1},
        {"grid_levels": 5, "price_range": [110, 90], "quantity_per_level": 1},
        {"grid_levels": 5, "price_range": [0, 90], "quantity_per_level": 1},
        {"grid_levels": 5, "price_range": [90, 110], "quantity_per_level": 0},
        {"grid_levels": 5, "price_range": [90, 110], "quantity_per_level": 1, "spacing": "log"},
    ],
)
def test_grid_refuses_a_config_that_makes_no_grid(config: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GridConfig.model_validate(config)


def test_dca_buys_every_interval_up_to_its_count_and_only_below_its_price() -> None:
    config = DCAConfig(quantity=D("0.1"), interval_s=60, max_orders=2, max_price=D("105"))
    state: dict[str, object] = {}
    dca = DCA(config, state)
    (first,) = dca.on_clock(1000.0, tick("100"))
    assert (first.side, first.type, first.quantity) == ("buy", "market", D("0.1"))
    assert dca.on_clock(1059.0, tick("100")) == []  # not yet
    assert dca.on_clock(1060.0, tick("106")) == []  # due, but the ask is above max_price
    (second,) = dca.on_clock(1061.0, tick("100"))
    assert second.tag == "dca:2"
    assert dca.on_clock(5000.0, tick("100")) == []  # max_orders reached
    assert state == {"buys": 2, "next_at": 1121.0}
