"""Grid and DCA as pure decision makers: what they want placed, given prices, fills and time."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from pydantic import ValidationError

from rt.errors import BadRequest
from rt.exchanges import Market, Ticker
from rt.strategies import Lot, Want
from rt.strategies.dca import DCA, DCAConfig
from rt.strategies.grid import RETRY_MS, Grid, GridConfig


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


def on(price: str, ts_ms: int = 0) -> Ticker:
    p = D(price)
    return Ticker("BTC/USDT", p - D("0.01"), p + D("0.01"), p, ts_ms)


def buys(wants: list[Want]) -> list[D | None]:
    return [w.price for w in wants if w.side == "buy"]


def test_grid_levels_and_quantity_sit_on_the_markets_steps() -> None:
    market = Market("BTC/USDT", "BTC", "USDT", price_step=D("0.01"), amount_step=D("0.001"), min_amount=D("0.001"))
    config = GridConfig(grid_levels=4, price_range=(D(90), D(100)), quantity_per_level=D("0.12345"))
    g = Grid(config, {}, market)
    assert g.levels == [D("90.00"), D("93.33"), D("96.67"), D("100.00")]
    wants = g.on_start(on("99"))
    assert [(w.price, w.quantity) for w in wants] == [
        (D("90.00"), D("0.123")),
        (D("93.33"), D("0.123")),
        (D("96.67"), D("0.123")),
    ]
    (sell,) = g.on_fill("buy:1", "buy", D("93.33"), D("0.123"), "pos_a")
    assert (sell.price, sell.quantity, sell.lot) == (D("96.67"), D("0.123"), "pos_a")

    coarse = Market("BTC/USDT", "BTC", "USDT", price_step=D(1), amount_step=D("0.0001"), min_amount=D("0.0001"))
    big = Grid(GridConfig(grid_levels=10, price_range=(D(40000), D(55000)), quantity_per_level=D("0.01")), {}, coarse)
    assert all(level == level.to_integral_value() for level in big.levels)  # 41666.666... comes out as 41667
    assert big.levels[1] == D(41667)


def test_grid_refuses_levels_or_a_quantity_the_market_cannot_hold() -> None:
    market = Market("BTC/USDT", "BTC", "USDT", price_step=D(1), amount_step=D("0.001"), min_amount=D("0.001"))
    with pytest.raises(BadRequest):  # 11 levels in a range of 5 steps: some would be the same price
        Grid(GridConfig(grid_levels=11, price_range=(D(100), D(105)), quantity_per_level=D(1)), {}, market)
    with pytest.raises(BadRequest):  # rounds down to 0, under the minimum
        Grid(GridConfig(grid_levels=3, price_range=(D(100), D(200)), quantity_per_level=D("0.0004")), {}, market)
    with pytest.raises(BadRequest):
        DCA(DCAConfig(quantity=D("0.0004"), interval_s=60), {}, market)


def test_grid_started_below_its_range_waits_and_places_when_the_price_enters() -> None:
    g = grid()
    assert g.on_start(on("80")) == []
    assert g.on_tick(on("89")) == []
    assert buys(g.on_tick(on("97"))) == [D(90), D(95)]  # entered: buys at every level below the price
    assert g.on_tick(on("97")) == []  # placed once
    assert buys(g.on_tick(on("103"))) == [D(100)]  # higher in the range: the level it passed gets its buy


def test_grid_started_above_its_range_waits_until_the_price_comes_down_into_it() -> None:
    g = grid()
    assert g.on_start(on("120")) == []
    assert g.on_tick(on("110.02")) == []  # bid 110.01: still above the range
    assert buys(g.on_tick(on("108"))) == [D(90), D(95), D(100), D(105)]  # the top level only ever sells
    assert g.on_tick(on("130")) == []


def test_grid_forgets_a_lot_closed_elsewhere_and_rearms_its_buy_when_the_price_is_back_above() -> None:
    g = grid()
    g.on_start(on("100"))
    (sell,) = g.on_fill("buy:1", "buy", D(95), D("0.5"), "pos_a")
    assert g.on_tick(on("99")) == []  # slot 1 holds a lot: no new buy there
    g.on_lot_closed(sell.tag)  # stopped out at 92
    assert g.on_tick(on("92")) == []  # under the level: a buy there would fill at once
    assert buys(g.on_tick(on("96"))) == [D(95)]


def test_grid_retries_a_refused_buy_after_a_while_not_on_every_tick() -> None:
    g = grid()
    first, _ = g.on_start(on("100", ts_ms=1_000))
    g.on_refused(first, 1_000)
    assert g.on_tick(on("100", ts_ms=2_000)) == []
    assert buys(g.on_tick(on("100", ts_ms=1_000 + RETRY_MS))) == [D(90)]


def test_grid_keeps_its_rounded_levels_for_a_restart_that_cannot_ask_the_market() -> None:
    market = Market("BTC/USDT", "BTC", "USDT", price_step=D("0.01"), amount_step=D("0.001"), min_amount=D("0.001"))
    config = GridConfig(grid_levels=4, price_range=(D(90), D(100)), quantity_per_level=D("0.12345"))
    state: dict[str, object] = {}
    first = Grid(config, state, market)
    again = Grid(config, state)  # the venue is still connecting
    assert (again.levels, again.qty) == (first.levels, D("0.123"))


def test_grid_started_again_sells_the_lots_it_still_holds() -> None:
    g = grid()
    lots = [Lot("pos_b", "long", D("89.5"), D("0.5")), Lot("pos_a", "long", D(95), D("0.5"))]
    wants = g.on_start(on("97"), lots)
    assert [(w.side, w.price, w.lot) for w in wants] == [("sell", D(95), "pos_b"), ("sell", D(100), "pos_a")]
    assert g.on_tick(on("97")) == []  # both slots below the price hold a lot: no buy there
    assert buys(g.on_start(on("97"), [Lot("pos_c", "long", D(95), D(7))])) == [D(90), D(95)]  # not one of its lots


UNBOUNDED = ["1e-999999", "1e999999", "NaN", "Infinity", "-1"]


@pytest.mark.parametrize("value", UNBOUNDED)
@pytest.mark.parametrize(
    "model, config, field",
    [
        (GridConfig, {"grid_levels": 5, "price_range": [90, 110], "quantity_per_level": 1}, "quantity_per_level"),
        (GridConfig, {"grid_levels": 5, "price_range": [90, 110], "quantity_per_level": 1}, "price_range"),
        (DCAConfig, {"quantity": 1, "interval_s": 60}, "quantity"),
        (DCAConfig, {"quantity": 1, "interval_s": 60}, "max_price"),
    ],
)
def test_strategy_money_is_bounded_like_every_other_amount(
    model: type[GridConfig | DCAConfig], config: dict[str, object], field: str, value: str
) -> None:
    bad = {**config, field: [value, 110] if field == "price_range" else value}
    with pytest.raises(ValidationError):
        model.model_validate(bad)


@pytest.mark.parametrize("field", ["max_position_size", "max_daily_loss"])
@pytest.mark.parametrize("value", UNBOUNDED)
def test_a_strategys_own_limits_are_bounded(field: str, value: str) -> None:
    from rt.strategies import RiskLimits

    with pytest.raises(ValidationError):
        RiskLimits.model_validate({field: value})
