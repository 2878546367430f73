"""rt/engine/ledger: P&L, fees, FIFO netting, equity and margin, the daily roll; exact Decimals throughout."""

from __future__ import annotations

import asyncio
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rt.engine import kill, ledger
from rt.engine.engine import EngineConfig
from rt.errors import ValidationFailed
from rt.records.trading import Envelope
from tests.engine.conftest import FEE, START, Rig, RigFactory

D = Decimal


def fee(price: Decimal, quantity: Decimal) -> Decimal:
    return price * quantity * FEE


async def test_long_gains_when_the_price_rises(rig: Rig) -> None:
    position = await rig.position("long", "2")
    assert (position.entry_price, position.status) == (D("100.01"), "open")  # bought at the ask

    rig.set_price("110")
    assert position.unrealized_pnl == (D("110") - D("100.01")) * 2

    await rig.close_position(position.id)
    expected = (D("109.99") - D("100.01")) * 2 - fee(D("100.01"), D(2)) - fee(D("109.99"), D(2))  # sold at the bid
    assert expected == D("19.54")
    assert position.status == "closed"
    assert position.realized_pnl == expected
    assert position.unrealized_pnl == 0
    book = await rig.book()
    assert book.balance == START + expected
    assert book.realized_total == expected


async def test_short_gains_when_the_price_falls(rig: Rig) -> None:
    position = await rig.position("short", "3")
    assert position.entry_price == D("99.99")  # sold at the bid

    rig.set_price("90")
    assert position.unrealized_pnl == (D("99.99") - D("90")) * 3

    await rig.close_position(position.id)
    expected = (D("99.99") - D("90.01")) * 3 - fee(D("99.99"), D(3)) - fee(D("90.01"), D(3))  # bought back at the ask
    assert expected == D("29.37")
    assert position.realized_pnl == expected
    assert (await rig.book()).balance == START + expected


async def test_short_loses_when_the_price_rises(rig: Rig) -> None:
    position = await rig.position("short", "1")
    rig.set_price("120")
    await rig.close_position(position.id)
    expected = (D("99.99") - D("120.01")) - fee(D("99.99"), D(1)) - fee(D("120.01"), D(1))
    assert expected < 0
    assert position.realized_pnl == expected
    assert (await rig.book()).balance == START + expected


async def test_partial_close_realizes_its_share_and_keeps_the_rest_open(rig: Rig) -> None:
    position = await rig.position("long", "3")
    rig.set_price("120")
    await rig.order("sell", "1")

    first = (D("119.99") - D("100.01")) * 1 - fee(D("119.99"), D(1))
    assert (position.status, position.quantity) == ("open", D(2))
    assert position.entry_price == D("100.01")
    assert position.realized_pnl == first - fee(D("100.01"), D(3))
    assert "position.updated" in await rig.event_names("positions")

    await rig.close_position(position.id)
    second = (D("119.99") - D("100.01")) * 2 - fee(D("119.99"), D(2))
    assert position.status == "closed"
    assert position.realized_pnl == first + second - fee(D("100.01"), D(3))
    assert (await rig.book()).balance == START + position.realized_pnl


async def test_fees_come_off_the_balance_and_the_position(rig: Rig) -> None:
    position = await rig.position("long", "1")
    opening = fee(D("100.01"), D(1))
    assert opening == D("0.10001")
    book = await rig.book()
    assert position.realized_pnl == -opening
    assert book.balance == START - opening
    assert ledger.summary(book, D(1))["realized_pnl"] == -opening
    (order,) = await rig.stored_orders("filled")
    assert order.fee == opening

    await rig.close_position(position.id)  # closed at the bid without a price move: a loss of spread and fees
    assert position.realized_pnl == D("99.99") - D("100.01") - opening - fee(D("99.99"), D(1))
    assert book.balance == START + position.realized_pnl


async def test_an_opposite_order_nets_fifo_across_positions(rig: Rig) -> None:
    oldest = await rig.position("long", "1")
    rig.set_price("102")
    middle = await rig.position("long", "2")
    rig.set_price("104")
    newest = await rig.position("long", "3")
    other = await rig.position("long", "1", symbol="ETH/USDT")
    rig.set_price("110")

    order = await rig.order("sell", "4")

    bid = D("109.99")
    assert (oldest.status, middle.status, newest.status) == ("closed", "closed", "open")
    assert oldest.realized_pnl == (bid - D("100.01")) * 1 - fee(bid, D(1)) - fee(D("100.01"), D(1))
    assert middle.realized_pnl == (bid - D("102.01")) * 2 - fee(bid, D(2)) - fee(D("102.01"), D(2))
    assert newest.quantity == D(2)
    assert newest.realized_pnl == (bid - D("104.01")) * 1 - fee(bid, D(1)) - fee(D("104.01"), D(3))
    assert other.status == "open" and other.quantity == D(1)  # another symbol is not netted
    assert order.fee == fee(bid, D(4))
    book = await rig.book()
    assert book.balance == START + sum((p.realized_pnl for p in await rig.stored_positions()), D(0))
    names = [d.event.event for d in await rig.history("positions")][-3:]
    assert names == ["position.closed", "position.closed", "position.updated"]


async def test_an_opposite_order_larger_than_the_book_flips_it(rig: Rig) -> None:
    long = await rig.position("long", "1")
    rig.set_price("110")
    order = await rig.order("sell", "3")

    bid = D("109.99")
    assert long.status == "closed"
    assert long.realized_pnl == (bid - D("100.01")) - fee(bid, D(1)) - fee(D("100.01"), D(1))
    (short,) = (await rig.book()).open_positions()
    assert (short.side, short.quantity, short.entry_price) == ("short", D(2), bid)
    assert short.realized_pnl == -fee(bid, D(2))
    assert order.position_id == short.id


async def test_equity_margin_and_free_margin(make_rig: RigFactory) -> None:
    rig = await make_rig(config=EngineConfig(leverage=D(2)))
    await rig.position("long", "2")
    await rig.position("short", "1", symbol="ETH/USDT")  # ETH at 10: bid 9.999, ask 10.001
    await rig.order("buy", "1", type="limit", price="50")
    rig.set_price("110")
    rig.set_price("9", symbol="ETH/USDT")

    book = await rig.book()
    fees = fee(D("100.01"), D(2)) + fee(D("9.999"), D(1))
    unrealized = (D(110) - D("100.01")) * 2 + (D("9.999") - D(9))
    margin = (D("100.01") * 2 + D("9.999")) / 2
    summary = ledger.summary(book, rig.engine.config.leverage)
    assert summary["balance"] == START - fees
    assert summary["unrealized_pnl"] == unrealized
    assert summary["equity"] == START - fees + unrealized
    assert summary["margin_used"] == margin
    assert summary["free_margin"] == START - fees + unrealized - margin
    assert summary["daily_pnl"] == unrealized - fees
    assert (summary["open_positions"], summary["open_orders"]) == (2, 1)


async def test_daily_pnl_rolls_over_at_the_day_change(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    lost = await rig.position("long", "1")
    rig.set_price("90")
    await rig.close_position(lost.id)
    held = await rig.position("long", "1")
    rig.set_price("95")

    book = await rig.book()
    assert ledger.daily_pnl(book) == lost.realized_pnl - fee(D("90.01"), D(1)) + held.unrealized_pnl
    balance = book.balance

    monkeypatch.setattr(ledger, "today", lambda: "2999-01-01")
    assert ledger.daily_pnl(book) == held.unrealized_pnl  # yesterday's realized P&L no longer counts
    assert book.balance == balance
    assert book.realized_total == balance - START

    await rig.close_position(held.id)
    assert ledger.daily_pnl(book) == held.realized_pnl + fee(D("90.01"), D(1))  # only today's part of it
    assert book.day == "2999-01-01"
    reloaded = await rig.restart()
    assert (await reloaded.book()).day_realized == held.realized_pnl + fee(D("90.01"), D(1))


# Properties: random trading at random prices, run on a fresh engine per example.

GENEROUS = Envelope(D("1e9"), D("1000"), D("1e9"), 10_000)
prices = st.decimals(min_value=50, max_value=150, places=2)
quantities = st.decimals(min_value=D("0.0001"), max_value=5, places=4)
steps = st.one_of(
    st.tuples(st.just("price"), prices),
    st.tuples(st.just("open"), st.sampled_from(["long", "short"]), quantities),
    st.tuples(st.just("order"), st.sampled_from(["buy", "sell"]), quantities),
    st.tuples(st.just("close"), st.integers(min_value=0, max_value=50)),
)
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


async def _trade(rig: Rig, plan: list[tuple[object, ...]]) -> None:
    for step in plan:
        match step:
            case ("price", price):
                rig.set_price(price)  # type: ignore[arg-type]
                await rig.settle()
            case ("open", side, quantity):
                await rig.position(side, quantity)  # type: ignore[arg-type]
            case ("order", side, quantity):
                await rig.order(side, quantity)  # type: ignore[arg-type]
            case ("close", index):
                open_now = (await rig.book()).open_positions()
                if open_now:
                    await rig.close_position(open_now[index % len(open_now)].id)  # type: ignore[operator]


async def _balance_is_start_plus_realized(plan: list[tuple[object, ...]]) -> None:
    rig = await Rig.open(":memory:", config=EngineConfig(envelope=GENEROUS))
    try:
        await _trade(rig, plan)
        book = await rig.book()
        stored = await rig.stored_positions()
        realized = sum((p.realized_pnl for p in stored), D(0))
        assert book.balance == START + realized
        assert book.realized_total == realized
        live = {p.id: (p.quantity, p.realized_pnl) for p in stored if p.status == "open"}
        assert live == {p.id: (p.quantity, p.realized_pnl) for p in book.open_positions()}
        (loaded,) = await rig.store.load_books()
        assert loaded.balance == book.balance
        for value in (book.balance, ledger.equity(book), *(p.quantity for p in stored)):
            assert isinstance(value, Decimal) and value.is_finite()

        report = await kill.execute(rig.engine, rig.account_id, "CLOSE_ALL")
        assert report["positions_failed"] == 0
        assert book.open_positions() == []
        assert ledger.equity(book) == book.balance
        assert ledger.summary(book, D(1))["unrealized_pnl"] == 0
        assert book.balance == START + sum((p.realized_pnl for p in await rig.stored_positions()), D(0))
    finally:
        await rig.close()


@PROPERTY
@given(st.lists(steps, min_size=1, max_size=12))
def test_balance_is_always_start_plus_every_positions_realized_pnl(plan: list[tuple[object, ...]]) -> None:
    asyncio.run(_balance_is_start_plus_realized(plan))


# Quantities that binary floats cannot hold: 0.1 + 0.2 != 0.3 in a float.
awkward = st.sampled_from([D("0.1"), D("0.2"), D("0.3"), D("0.7"), D("1.1"), D("0.01"), D("0.03"), D("2.675")])


async def _net_quantities_are_exact(orders: list[tuple[str, Decimal]], path: str) -> None:
    rig = await Rig.open(path, config=EngineConfig(envelope=GENEROUS))
    try:
        for side, quantity in orders:
            await rig.order(side, quantity)
        net = sum((q if side == "buy" else -q for side, q in orders), D(0))
        book = await rig.book()
        open_now = book.open_positions()
        longs = sum((p.quantity for p in open_now if p.side == "long"), D(0))
        shorts = sum((p.quantity for p in open_now if p.side == "short"), D(0))
        assert longs - shorts == net
        assert longs == 0 or shorts == 0  # netting never leaves both sides open
        if net == 0:
            assert open_now == []  # no dust left behind
        restarted = await rig.restart()
        reloaded = (await restarted.book()).open_positions()
        assert sorted((p.id, p.quantity) for p in reloaded) == sorted((p.id, p.quantity) for p in open_now)
        rig = restarted
    finally:
        await rig.close()


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(["buy", "sell"]), awkward), min_size=1, max_size=10))
def test_net_quantities_add_up_exactly(orders: list[tuple[str, Decimal]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_net_quantities_are_exact(orders, f"{tmp}/rt.db"))


def test_point_one_plus_point_two_closes_exactly_point_three(tmp_path: Path) -> None:
    plan = [("buy", D("0.1")), ("buy", D("0.2")), ("sell", D("0.3"))]
    asyncio.run(_net_quantities_are_exact(plan, str(tmp_path / "rt.db")))


# Netting by owner: a strategy's orders net only against its own positions, manual orders only against manual ones.

STRAT = "strat_owner_a"


async def test_a_strategy_sell_does_not_close_a_manual_long(rig: Rig) -> None:
    manual = await rig.position("long", "1")
    held = await rig.position("long", "1", strategy_id=STRAT)
    await rig.order("sell", "1", strategy_id=STRAT)
    assert (manual.status, held.status) == ("open", "closed")
    assert held.close_reason == "order"

    short = await rig.order("sell", "1", strategy_id=STRAT)  # nothing of its own left: it opens its own short
    (opened,) = [p for p in (await rig.book()).open_positions() if p.id == short.position_id]
    assert (opened.side, opened.strategy_id) == ("short", STRAT)
    assert manual.status == "open"


async def test_a_manual_sell_does_not_close_a_strategys_long(rig: Rig) -> None:
    held = await rig.position("long", "1", strategy_id=STRAT)
    await rig.order("sell", "1", strategy_id="strat_owner_b")  # another strategy's sell is not this one's either
    order = await rig.order("sell", "1")
    assert held.status == "open"
    (manual,) = [p for p in (await rig.book()).open_positions() if p.id == order.position_id]
    assert (manual.side, manual.strategy_id) == ("short", None)


async def test_cerberus_judges_exposure_by_the_same_owner_rule(rig: Rig) -> None:
    await rig.position("long", "1")
    await rig.set_state("reducing")
    # The manual long cannot be reduced by a strategy's sell: that sell opens exposure, which reducing refuses.
    with pytest.raises(ValidationFailed) as refused:
        await rig.order("sell", "1", strategy_id=STRAT)
    assert refused.value.extra["details"]["check"] == "trading_state"
    await rig.order("sell", "1")  # the manual sell does reduce it
    assert (await rig.book()).open_positions() == []
