"""rt/engine/trading: the venue's rules every transport shares: stops that would trigger at once, limit fill prices,
price and amount steps. The rig's BTC/USDT stands at 100 (bid 99.99, ask 100.01, price step 0.01, amount step
0.0001)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from rt.engine import trading
from rt.engine.requests import PositionUpdate
from rt.errors import BadRequest
from tests.engine.conftest import FEE, Rig, RigFactory

D = Decimal


async def _refused(attempt: Any) -> dict[str, Any]:
    """The one field error of a 400."""
    with pytest.raises(BadRequest) as caught:
        await attempt
    (error,) = caught.value.extra["errors"]
    assert isinstance(error, dict)
    return error


async def _nothing_stored(rig: Rig) -> None:
    assert await rig.stored_orders() == []
    assert await rig.stored_positions() == []
    assert await rig.event_names() == []


# A stop that would trigger at once


@pytest.mark.parametrize(
    ("side", "stop_price", "market"),
    [
        pytest.param("buy", "100.01", "ask 100.01", id="buy-at-the-ask"),
        pytest.param("buy", "99", "ask 100.01", id="buy-below-the-ask"),
        pytest.param("sell", "99.99", "bid 99.99", id="sell-at-the-bid"),
        pytest.param("sell", "101", "bid 99.99", id="sell-above-the-bid"),
    ],
)
async def test_a_stop_that_would_trigger_at_once_is_refused(rig: Rig, side: str, stop_price: str, market: str) -> None:
    error = await _refused(rig.order(side, "1", type="stop", stop_price=stop_price))
    assert error["field"] == "stop_price"
    assert market in error["message"] and ("above" if side == "buy" else "below") in error["message"]
    await _nothing_stored(rig)


async def test_a_stop_given_as_price_is_judged_the_same(rig: Rig) -> None:
    error = await _refused(rig.order("buy", "1", type="stop", price="99"))
    assert error["field"] == "stop_price"


async def test_a_stop_just_beyond_the_market_rests(rig: Rig) -> None:
    buy = await rig.order("buy", "1", type="stop", stop_price="100.02")
    sell = await rig.order("sell", "1", type="stop", stop_price="99.98")
    assert (buy.status, sell.status) == ("open", "open")


async def test_the_stop_rule_follows_the_market(rig: Rig) -> None:
    rig.set_price("90")  # ask 90.01: a stop buy at 95 is now above the market
    order = await rig.order("buy", "1", type="stop", stop_price="95")
    assert order.status == "open"
    rig.set_price("96")
    await rig.settle()
    assert (order.status, order.average_price) == ("filled", D("96.01"))


async def test_a_triggered_stop_fills_at_the_market_with_slippage_even_through_a_gap(make_rig: RigFactory) -> None:
    rig = await make_rig(slippage_bps=D(10))
    order = await rig.order("buy", "1", type="stop", stop_price="105")
    rig.set_price("110")  # gaps far through the stop: a market order, at the ask moved by slippage
    await rig.settle()
    assert (order.status, order.average_price) == ("filled", D("110.01") * D("1.001"))


# Limit fill prices


async def test_a_resting_buy_limit_fills_at_its_limit_when_the_market_gaps_through(rig: Rig) -> None:
    order = await rig.order("buy", "1", type="limit", price="95")
    rig.set_price("90")  # ask 90.01, far under the limit
    await rig.settle()
    assert (order.status, order.average_price, order.fee) == ("filled", D(95), D(95) * FEE)
    (position,) = (await rig.book()).open_positions()
    assert position.entry_price == D(95)


async def test_a_resting_sell_limit_fills_at_its_limit_when_the_market_gaps_through(rig: Rig) -> None:
    order = await rig.order("sell", "1", type="limit", price="105")
    rig.set_price("112")  # bid 111.99
    await rig.settle()
    assert (order.status, order.average_price) == ("filled", D(105))


async def test_a_resting_limit_has_no_slippage(make_rig: RigFactory) -> None:
    rig = await make_rig(slippage_bps=D(50))
    order = await rig.order("buy", "1", type="limit", price="95")
    rig.set_price("94")
    await rig.settle()
    assert order.average_price == D(95)


@pytest.mark.parametrize(
    ("side", "limit", "fill"),
    [
        pytest.param("buy", "101", D("100.01"), id="buy-above-the-ask"),
        pytest.param("sell", "99", D("99.99"), id="sell-under-the-bid"),
    ],
)
async def test_a_marketable_limit_at_submission_takes_the_market(
    rig: Rig, side: str, limit: str, fill: Decimal
) -> None:
    order = await rig.order(side, "1", type="limit", price=limit)
    assert (order.status, order.average_price) == ("filled", fill)


async def test_a_marketable_limit_takes_slippage_but_never_fills_past_its_limit(make_rig: RigFactory) -> None:
    rig = await make_rig(slippage_bps=D(10))  # a market buy would pay 100.01 * 1.001 = 100.11001
    roomy = await rig.order("buy", "1", type="limit", price="101")
    tight = await rig.order("buy", "1", type="limit", price="100.05")
    assert roomy.average_price == D("100.01") * D("1.001")
    assert tight.average_price == D("100.05")


async def test_a_resting_limit_entry_opens_the_position_at_its_entry_price(rig: Rig) -> None:
    position = await rig.position("long", "1", entry_price="95")
    rig.set_price("80")
    await rig.settle()
    opened = (await rig.book()).positions[position.id]
    assert (opened.status, opened.entry_price) == ("open", D(95))


async def test_a_marketable_limit_entry_opens_at_the_market(rig: Rig) -> None:
    position = await rig.position("short", "1", entry_price="95")  # under the bid 99.99: sells there at once
    assert (position.status, position.entry_price) == ("open", D("99.99"))


# Price and amount steps


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"type": "limit", "price": "95.005"}, "price", id="price"),
        pytest.param({"type": "stop", "stop_price": "105.001"}, "stop_price", id="stop_price"),
        pytest.param({"stop_loss": "90.0001"}, "stop_loss", id="stop_loss"),
        pytest.param({"take_profit": "110.123456"}, "take_profit", id="take_profit"),
    ],
)
async def test_an_order_price_off_the_price_step_is_refused(rig: Rig, fields: dict[str, str], field: str) -> None:
    error = await _refused(rig.order("buy", "1", **fields))
    assert error["field"] == field
    assert "price step 0.01" in error["message"] and error["step"] == D("0.01")
    await _nothing_stored(rig)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"entry_price": "95.005"}, "entry_price", id="entry_price"),
        pytest.param({"stop_loss": "90.0001"}, "stop_loss", id="stop_loss"),
        pytest.param({"take_profit": "110.123456"}, "take_profit", id="take_profit"),
    ],
)
async def test_a_position_price_off_the_price_step_is_refused(rig: Rig, fields: dict[str, str], field: str) -> None:
    error = await _refused(rig.position("long", "1", **fields))
    assert error["field"] == field and "price step 0.01" in error["message"]
    await _nothing_stored(rig)


async def test_a_quantity_off_the_amount_step_is_refused(rig: Rig) -> None:
    for error in (await _refused(rig.order("buy", "0.00015")), await _refused(rig.position("long", "1.23456"))):
        assert error["field"] == "quantity"
        assert "amount step 0.0001" in error["message"] and error["step"] == D("0.0001")
    await _nothing_stored(rig)


async def test_every_field_off_its_step_is_named(rig: Rig) -> None:
    with pytest.raises(BadRequest) as caught:
        await rig.order("buy", "0.00015", type="limit", price="95.005", take_profit="110.001")
    assert [e["field"] for e in caught.value.extra["errors"]] == ["quantity", "price", "take_profit"]


async def test_changing_protection_off_the_price_step_is_refused(rig: Rig) -> None:
    position = await rig.position("long", "1")
    for change in ({"stop_loss": "90.005"}, {"take_profit": "110.005"}):
        update = PositionUpdate.model_validate(change)
        error = await _refused(trading.update_position(rig.engine, rig.account_id, position.id, update))
        assert error["field"] == next(iter(change)) and "price step 0.01" in error["message"]
    assert ((await rig.book()).positions[position.id].stop_loss, position.take_profit) == (None, None)


async def test_values_on_the_step_pass_however_they_are_written(rig: Rig) -> None:
    order = await rig.order("buy", "0.1000", type="limit", price="95.010", stop_loss="90.00", take_profit="1E+2")
    assert order.status == "open"
    position = await rig.position("short", "2.5", entry_price="105.50")
    assert position.status == "pending"


async def test_each_market_has_its_own_step(rig: Rig) -> None:
    # ETH/USDT at 10 has a price step of 0.001: a price BTC/USDT refuses is fine there.
    order = await rig.order("buy", "1", symbol="ETH/USDT", type="limit", price="9.005")
    assert order.status == "open"
    error = await _refused(rig.order("buy", "1", symbol="ETH/USDT", type="limit", price="9.0005"))
    assert error["field"] == "price" and "price step 0.001" in error["message"]
