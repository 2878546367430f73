"""rt/engine/trading: orders and positions on the paper venue, protective closes, events, restarts."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from rt.engine import trading
from rt.engine.requests import PositionUpdate
from rt.errors import BadRequest, NotFound
from rt.records.trading import Position
from tests.engine.conftest import FEE, START, SYMBOL, Rig, RigFactory

D = Decimal


@pytest.mark.parametrize(
    ("slippage_bps", "buy_at", "sell_at"),
    [
        pytest.param(D(0), D("100.01"), D("99.99"), id="no-slippage"),
        pytest.param(D(10), D("100.01") * D("1.001"), D("99.99") * D("0.999"), id="10bps"),
    ],
)
async def test_market_orders_fill_at_the_far_side_of_the_spread_plus_slippage(
    make_rig: RigFactory, slippage_bps: Decimal, buy_at: Decimal, sell_at: Decimal
) -> None:
    rig = await make_rig(slippage_bps=slippage_bps)
    buy = await rig.order("buy", "2")
    assert (buy.status, buy.filled_quantity, buy.average_price) == ("filled", D(2), buy_at)
    assert buy.fee == buy_at * 2 * FEE
    sell = await rig.order("sell", "2", symbol="ETH/USDT")
    eth_bid = D("9.999") * (1 - slippage_bps / 10000)
    assert (sell.status, sell.average_price) == ("filled", eth_bid)
    await rig.order("sell", "2")  # closes the BTC long at the bid
    (btc_sell,) = [o for o in await rig.stored_orders("filled") if o.symbol == SYMBOL and o.side == "sell"]
    assert btc_sell.average_price == sell_at


async def test_a_limit_order_rests_until_the_price_crosses_it(rig: Rig) -> None:
    order = await rig.order("buy", "1", type="limit", price="95")
    assert order.status == "open"
    assert (await rig.book()).open_positions() == []

    rig.set_price("96")  # ask 96.01: not yet
    await rig.settle()
    assert order.status == "open"

    rig.set_price("94.5")  # ask 94.51: through the limit; a resting limit fills at its limit
    await rig.settle()
    assert (order.status, order.average_price) == ("filled", D("95"))
    (position,) = (await rig.book()).open_positions()
    assert (position.side, position.entry_price, position.quantity) == ("long", D("95"), D(1))
    (stored,) = await rig.stored_orders("filled")
    assert stored.id == order.id and stored.fee == D("95") * FEE


async def test_a_fill_the_engine_fails_to_book_rests_again_and_is_booked_later(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = await rig.order("buy", "1", type="limit", price="95")
    save = rig.store.save
    failures = []

    async def failing_once(batch: object) -> None:
        if not failures:
            failures.append(batch)
            raise OSError("disk full")
        await save(batch)  # type: ignore[arg-type]

    monkeypatch.setattr(rig.store, "save", failing_once)
    rig.set_price("94.5")
    await rig.settle()
    book = await rig.book()  # back to what the store holds: the order open, no position, the balance untouched
    assert failures and book.orders[order.id].status == "open"
    assert book.open_positions() == [] and book.balance == START

    rig.set_price("94.6")  # the next tick fills it again, and now it is booked
    await rig.settle()
    book = await rig.book()
    assert order.id not in book.orders
    (position,) = book.open_positions()
    assert position.quantity == D(1)
    (stored,) = await rig.stored_orders("filled")
    assert stored.id == order.id


async def test_a_limit_sell_fills_when_the_bid_reaches_it(rig: Rig) -> None:
    order = await rig.order("sell", "1", type="limit", price="105")
    rig.set_price("105.01")  # bid 105.00
    await rig.settle()
    assert (order.status, order.average_price) == ("filled", D("105.00"))


@pytest.mark.parametrize(
    ("side", "stop", "quiet", "through", "fill"),
    [
        pytest.param("buy", "105", "104", "106", D("106.01"), id="buy-stop"),
        pytest.param("sell", "95", "96", "94", D("93.99"), id="sell-stop"),
    ],
)
async def test_a_stop_order_triggers_at_market(
    rig: Rig, side: str, stop: str, quiet: str, through: str, fill: Decimal
) -> None:
    order = await rig.order(side, "1", type="stop", stop_price=stop)
    assert order.status == "open"
    rig.set_price(quiet)
    await rig.settle()
    assert order.status == "open"
    rig.set_price(through)
    await rig.settle()
    assert (order.status, order.average_price) == ("filled", fill)
    assert len((await rig.book()).open_positions()) == 1


async def test_cancel_an_open_order(rig: Rig) -> None:
    order = await rig.order("buy", "1", type="limit", price="90")
    canceled = await trading.cancel_order(rig.engine, rig.account_id, order.id)
    assert canceled.status == "canceled"
    assert [o.status for o in await rig.stored_orders()] == ["canceled"]
    assert (await rig.event_names("orders"))[-1] == "order.canceled"

    rig.set_price("80")  # a canceled order never fills
    await rig.settle()
    assert (await rig.book()).open_positions() == []
    with pytest.raises(trading.OrderNotOpen):
        await trading.cancel_order(rig.engine, rig.account_id, order.id)


async def test_cancel_a_filled_order_is_order_not_open(rig: Rig) -> None:
    order = await rig.order("buy", "1")
    with pytest.raises(trading.OrderNotOpen) as caught:
        await trading.cancel_order(rig.engine, rig.account_id, order.id)
    assert (caught.value.status, caught.value.code) == (409, "ORDER_NOT_OPEN")
    with pytest.raises(NotFound):
        await trading.cancel_order(rig.engine, rig.account_id, "ord_missing")


async def test_a_cancel_that_races_the_fill_books_the_fill(rig: Rig) -> None:
    order = await rig.order("buy", "1", type="limit", price="95")
    rig.set_price("94")  # filled at the venue; the engine hears of it a moment later
    with pytest.raises(trading.OrderNotOpen):
        await trading.cancel_order(rig.engine, rig.account_id, order.id)
    await rig.settle()
    assert order.status == "filled"
    (position,) = (await rig.book()).open_positions()
    assert (await rig.book()).balance == START - position.entry_price * FEE  # booked once


@pytest.mark.parametrize(
    ("side", "protection", "move", "reason", "exit_price"),
    [
        pytest.param("long", {"stop_loss": "95"}, "94", "stop_loss", D("93.99"), id="long-stop-loss"),
        pytest.param("long", {"take_profit": "110"}, "111", "take_profit", D("110.99"), id="long-take-profit"),
        pytest.param("short", {"stop_loss": "105"}, "106", "stop_loss", D("106.01"), id="short-stop-loss"),
        pytest.param("short", {"take_profit": "90"}, "89", "take_profit", D("89.01"), id="short-take-profit"),
    ],
)
async def test_protection_closes_the_position_when_the_price_crosses_it(
    rig: Rig, side: str, protection: dict[str, str], move: str, reason: str, exit_price: Decimal
) -> None:
    position = await rig.position(side, "1", **protection)
    rig.set_price("100.5")  # on the way, but not across
    await rig.settle()
    assert position.status == "open"

    rig.set_price(move)
    await rig.settle()
    assert (position.status, position.close_reason) == ("closed", reason)
    closes = [d.event.data for d in await rig.history("positions") if d.event.event == "position.closed"]
    assert [(c["id"], c["reason"]) for c in closes] == [(position.id, reason)]
    (stored,) = await rig.stored_positions("closed")
    assert (stored.close_reason, stored.current_price) == (reason, exit_price)
    (close_order,) = [o for o in await rig.stored_orders() if o.id != position.entry_order_id]
    assert close_order.average_price == exit_price

    rig.set_price("100")
    rig.set_price(move)  # crossing again does nothing to a closed position
    await rig.settle()
    assert len(await rig.stored_orders()) == 2


async def test_a_protective_close_happens_once(rig: Rig) -> None:
    position = await rig.position("long", "1", stop_loss="95")
    for price in ("94", "93", "92", "91"):
        rig.set_price(price)
    await rig.settle()
    assert position.status == "closed"
    assert len(await rig.stored_orders()) == 2
    assert (await rig.event_names("positions")).count("position.closed") == 1


async def test_update_moves_the_protection(rig: Rig) -> None:
    position = await rig.position("long", "1", stop_loss="90", take_profit="120")
    updated = await trading.update_position(
        rig.engine, rig.account_id, position.id, PositionUpdate.model_validate({"stop_loss": 97})
    )
    assert (updated.stop_loss, updated.take_profit) == (D(97), D(120))  # an absent field stays
    removed = await trading.update_position(
        rig.engine, rig.account_id, position.id, PositionUpdate.model_validate({"take_profit": None})
    )
    assert (removed.stop_loss, removed.take_profit) == (D(97), None)  # null removes it
    assert (await rig.event_names("positions"))[-1] == "position.updated"
    (stored,) = await rig.stored_positions("open")
    assert (stored.stop_loss, stored.take_profit) == (D(97), None)

    rig.set_price("96.5")  # bid 96.49: through the new stop
    await rig.settle()
    assert (position.status, position.close_reason) == ("closed", "stop_loss")


@pytest.mark.parametrize(
    ("side", "change"),
    [
        pytest.param("long", {"stop_loss": D(105)}, id="long-stop-above"),
        pytest.param("long", {"take_profit": D(95)}, id="long-target-below"),
        pytest.param("short", {"stop_loss": D(95)}, id="short-stop-below"),
        pytest.param("short", {"take_profit": D(105)}, id="short-target-above"),
    ],
)
async def test_update_rejects_protection_on_the_wrong_side(rig: Rig, side: str, change: dict[str, Decimal]) -> None:
    position = await rig.position(side, "1")
    with pytest.raises(BadRequest) as caught:
        await trading.update_position(rig.engine, rig.account_id, position.id, PositionUpdate.model_validate(change))
    assert caught.value.status == 400
    assert [e["field"] for e in caught.value.extra["errors"]] == list(change)
    assert (position.stop_loss, position.take_profit) == (None, None)


async def test_opening_with_protection_on_the_wrong_side_is_refused(rig: Rig) -> None:
    with pytest.raises(BadRequest):
        await rig.position("long", "1", stop_loss="101")
    with pytest.raises(BadRequest):
        await rig.position("short", "1", take_profit="100.5")
    # A limit entry is judged at its entry price: a stop at 95 is above an entry at 90.
    with pytest.raises(BadRequest):
        await rig.position("long", "1", entry_price="90", stop_loss="95")
    assert await rig.stored_positions() == []
    assert await rig.stored_orders() == []


async def test_a_quantity_under_the_markets_minimum_is_refused_before_anything_is_stored(rig: Rig) -> None:
    (market,) = [m for m in await rig.paper.markets() if m.symbol == SYMBOL]
    tiny = market.min_amount / 10
    for attempt in (
        rig.order("buy", tiny),
        rig.position("long", tiny),
        rig.order("sell", tiny, type="limit", price=99),
    ):
        with pytest.raises(BadRequest) as caught:
            await attempt
        assert [e["field"] for e in caught.value.extra["errors"]] == ["quantity"]
    assert await rig.stored_orders() == []
    assert await rig.stored_positions() == []
    assert (await rig.order("buy", market.min_amount)).status == "filled"


async def test_updating_or_closing_a_closed_position(rig: Rig) -> None:
    position = await rig.position("long", "1")
    await rig.close_position(position.id)
    with pytest.raises(trading.PositionNotOpen):
        await rig.close_position(position.id)
    with pytest.raises(trading.PositionNotOpen):
        await trading.update_position(
            rig.engine, rig.account_id, position.id, PositionUpdate.model_validate({"stop_loss": 1})
        )
    with pytest.raises(NotFound):
        await rig.close_position("pos_missing")


async def test_a_closed_position_read_stale_from_the_store_is_never_traded_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The book holds every live position: a stored copy that still says open (a read that saw the store before the
    close committed) must not be closed again, nor written back by an update."""
    position = await rig.position("long", "1")
    stale = dataclasses.replace(position, status="open")  # as it was before the close
    await rig.close_position(position.id)
    balance = (await rig.book()).balance

    async def stale_read(account_id: str, position_id: str) -> Position | None:
        return dataclasses.replace(stale)

    monkeypatch.setattr(rig.store, "get_position", stale_read)
    with pytest.raises(trading.PositionNotOpen):
        await rig.close_position(position.id)
    with pytest.raises(trading.PositionNotOpen):
        await trading.update_position(
            rig.engine, rig.account_id, position.id, PositionUpdate.model_validate({"stop_loss": 1})
        )
    monkeypatch.undo()
    assert (await rig.book()).balance == balance
    (stored,) = await rig.stored_positions("closed")
    assert stored.id == position.id
    assert sorted(o.side for o in await rig.stored_orders("filled")) == ["buy", "sell"]  # no second close


async def test_a_limit_entry_is_pending_until_it_fills(rig: Rig) -> None:
    position = await rig.position("long", "2", entry_price="95", stop_loss="90", take_profit="110")
    assert (position.status, position.entry_price) == ("pending", D(95))
    (stored,) = await rig.stored_positions("pending")
    assert stored.id == position.id
    book = await rig.book()
    assert book.open_positions() == []
    assert [o.id for o in book.orders.values()] == [position.entry_order_id]

    rig.set_price("94")
    await rig.settle()
    opened = book.positions[position.id]
    assert (opened.status, opened.entry_price, opened.quantity) == ("open", D("95"), D(2))
    assert (opened.stop_loss, opened.take_profit) == (D(90), D(110))
    assert "position.opened" in await rig.event_names("positions")
    (stored,) = await rig.stored_positions("open")
    assert stored.id == position.id

    rig.set_price("89")  # the protection it was opened with works
    await rig.settle()
    assert (opened.status, opened.close_reason) == ("closed", "stop_loss")


async def test_canceling_a_limit_entry_cancels_the_position(rig: Rig) -> None:
    position = await rig.position("short", "1", entry_price="105")
    assert position.entry_order_id is not None
    await trading.cancel_order(rig.engine, rig.account_id, position.entry_order_id)

    (stored,) = await rig.stored_positions()
    assert (stored.id, stored.status, stored.close_reason) == (position.id, "canceled", "entry_canceled")
    names = [(d.event.event, d.event.data["id"]) for d in await rig.history("positions")]
    assert names == [("position.canceled", position.id)]
    (canceled,) = [d.event.data for d in await rig.history("positions")]
    assert (canceled["status"], canceled["reason"]) == ("canceled", "entry_canceled")
    rig.set_price("106")
    await rig.settle()
    assert (await rig.book()).open_positions() == []
    with pytest.raises(trading.PositionNotOpen):
        await rig.close_position(position.id)


async def test_events_are_published_in_order_with_a_seq_per_channel(rig: Rig) -> None:
    position = await rig.position("long", "1")
    await rig.close_position(position.id)

    everything = await rig.history("events")
    assert [d.event.event for d in everything] == [
        *("order.created", "order.filled", "position.opened", "account.updated"),
        *("order.created", "order.filled", "position.closed", "account.updated"),
    ]
    assert [d.seq for d in everything] == list(range(1, 9))
    for channel, names in {
        "orders": ["order.created", "order.filled", "order.created", "order.filled"],
        "positions": ["position.opened", "position.closed"],
        "account": ["account.updated", "account.updated"],
    }.items():
        deliveries = await rig.history(channel)
        assert [(d.event.event, d.seq) for d in deliveries] == [(n, i + 1) for i, n in enumerate(names)]
    assert all(d.event.account_id == rig.account_id for d in everything)
    assert everything[2].event.data["id"] == position.id
    assert everything[2].event.data["status"] == "open"
    assert everything[6].event.data["status"] == "closed"
    account = everything[-1].event.data
    assert (account["balance"], account["open_positions"]) == ((await rig.book()).balance, 0)
    ts = [d.event.ts_us for d in everything]
    assert ts == sorted(ts)


async def test_state_survives_a_restart(rig: Rig) -> None:
    kept = await rig.position("long", "1", stop_loss="90")
    resting = await rig.order("buy", "2", type="limit", price="95")
    entry = await rig.position("short", "1", entry_price="110")
    closed = await rig.position("long", "1")
    await rig.close_position(closed.id)
    balance = (await rig.book()).balance

    rig = await rig.restart()
    book = await rig.book()
    assert book.balance == balance
    assert {p.id: p.status for p in book.positions.values()} == {kept.id: "open", entry.id: "pending"}
    assert book.positions[kept.id].stop_loss == D(90)
    assert book.positions[kept.id].entry_price == D("100.01")
    assert sorted(o.id for o in book.orders.values()) == sorted([resting.id, str(entry.entry_order_id)])

    rig.set_price("94")  # the resting buy still fills after the restart
    await rig.settle()
    assert resting.id not in book.orders
    (filled,) = [o for o in await rig.stored_orders("filled") if o.id == resting.id]
    assert filled.average_price == D("95")
    assert len(book.open_positions()) == 2

    rig.set_price("111")  # so does the limit entry; then the stop of the first position closes it
    await rig.settle()
    assert book.positions[entry.id].status == "open"
    rig.set_price("89")
    await rig.settle()
    stopped = await rig.store.get_position(rig.account_id, kept.id)
    assert stopped is not None and (stopped.status, stopped.close_reason) == ("closed", "stop_loss")
    assert book.balance == START + sum((p.realized_pnl for p in await rig.stored_positions()), D(0))
