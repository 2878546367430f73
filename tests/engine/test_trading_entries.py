"""rt/engine/trading: stop entries of positions; moving a pending entry (amend_entry) keeps the position's id."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from pydantic import ValidationError

from rt.engine import trading
from rt.engine.requests import EntryUpdate, PositionRequest
from rt.errors import BadRequest, NotFound, ValidationFailed
from rt.exchanges import ExchangeUnavailable
from rt.records.trading import Position
from tests.engine.conftest import Rig


async def amend(rig: Rig, position_id: str, **fields: object) -> Position:
    return await trading.amend_entry(rig.engine, rig.account_id, position_id, EntryUpdate.model_validate(fields))


async def test_a_stop_entry_rests_until_the_market_breaks_through_it(rig: Rig) -> None:
    position = await rig.position("long", "1", entry_price="103", entry_type="stop", stop_loss="98")
    assert (position.status, position.entry_price) == ("pending", D(103))
    book = await rig.book()
    (entry,) = book.orders.values()
    assert (entry.id, entry.type, entry.stop_price, entry.price) == (position.entry_order_id, "stop", D(103), None)

    rig.set_price("102")  # ask 102.01: not yet
    await rig.settle()
    assert book.positions[position.id].status == "pending"
    rig.set_price("103.5")  # ask 103.51: through the stop, filled at the market
    await rig.settle()
    opened = book.positions[position.id]
    assert (opened.status, opened.entry_price, opened.stop_loss) == ("open", D("103.51"), D(98))
    (stored,) = await rig.stored_positions("open")
    assert stored.id == position.id


async def test_a_short_stop_entry_fills_when_the_bid_falls_to_it(rig: Rig) -> None:
    position = await rig.position("short", "1", entry_price="97", entry_type="stop")
    rig.set_price("98")
    await rig.settle()
    assert (await rig.book()).positions[position.id].status == "pending"
    rig.set_price("96")
    await rig.settle()
    opened = (await rig.book()).positions[position.id]
    assert (opened.status, opened.side, opened.entry_price) == ("open", "short", D("95.99"))


async def test_a_stop_entry_the_market_is_already_through_is_refused(rig: Rig) -> None:
    with pytest.raises(BadRequest) as refused:
        await rig.position("long", "1", entry_price="100", entry_type="stop")  # the ask is 100.01
    assert refused.value.status == 400
    assert refused.value.extra["errors"][0]["field"] == "stop_price"
    with pytest.raises(BadRequest):
        await rig.position("short", "1", entry_price="99.99", entry_type="stop")  # the bid is 99.99
    assert await rig.stored_positions() == []
    assert (await rig.book()).orders == {}


def test_a_stop_entry_needs_a_price() -> None:
    with pytest.raises(ValidationError, match="stop entry needs an entry_price"):
        PositionRequest.model_validate({"symbol": "BTC/USDT", "side": "long", "quantity": 1, "entry_type": "stop"})
    with pytest.raises(ValidationError):
        PositionRequest.model_validate(
            {"symbol": "BTC/USDT", "side": "long", "quantity": 1, "entry_price": 1, "entry_type": "market"}
        )


async def test_moving_an_entry_keeps_the_position_and_replaces_its_order(rig: Rig) -> None:
    position = await rig.position("long", "1", entry_price="95", take_profit="110")
    first = position.entry_order_id
    moved = await amend(rig, position.id, entry_price="97")
    assert (moved.id, moved.status, moved.entry_price, moved.take_profit) == (position.id, "pending", D(97), D(110))
    assert moved.entry_order_id not in (None, first)
    book = await rig.book()
    resting = [(o.id, o.price, o.position_id) for o in book.orders.values()]
    assert resting == [(moved.entry_order_id, D(97), position.id)]
    canceled = await rig.store.get_order(rig.account_id, str(first))
    assert canceled is not None and canceled.status == "canceled"
    (stored,) = await rig.stored_positions("pending")
    assert (stored.id, stored.entry_price, stored.entry_order_id) == (position.id, D(97), moved.entry_order_id)

    rig.set_price("96.5")  # ask 96.51: through the new limit, where the old one would still rest
    await rig.settle()
    opened = book.positions[position.id]
    assert (opened.status, opened.entry_price, opened.take_profit) == ("open", D(97), D(110))
    assert [p.id for p in await rig.stored_positions()] == [position.id]


async def test_the_old_price_no_longer_fills_after_a_move(rig: Rig) -> None:
    position = await rig.position("short", "1", entry_price="105")
    await amend(rig, position.id, entry_price="108")
    rig.set_price("106")
    await rig.settle()
    assert (await rig.book()).positions[position.id].status == "pending"
    assert len(await rig.stored_orders("open")) == 1


async def test_a_moved_stop_entry_stays_a_stop(rig: Rig) -> None:
    position = await rig.position("long", "1", entry_price="103", entry_type="stop")
    moved = await amend(rig, position.id, entry_price="104")
    (entry,) = (await rig.book()).orders.values()
    assert (entry.id, entry.type, entry.stop_price) == (moved.entry_order_id, "stop", D(104))
    with pytest.raises(BadRequest):
        await amend(rig, position.id, entry_price="100")  # under the ask: it would trigger at once
    (kept,) = (await rig.book()).orders.values()
    assert (kept.id, kept.stop_price) == (entry.id, D(104))


async def test_changing_only_the_protection_keeps_the_entry_order(rig: Rig) -> None:
    position = await rig.position("long", "1", entry_price="95", stop_loss="90")
    changed = await amend(rig, position.id, stop_loss="92", take_profit="120")
    assert (changed.entry_order_id, changed.stop_loss, changed.take_profit) == (position.entry_order_id, D(92), D(120))
    cleared = await amend(rig, position.id, entry_price="95", take_profit=None)
    assert (cleared.entry_order_id, cleared.stop_loss, cleared.take_profit) == (position.entry_order_id, D(92), None)
    with pytest.raises(BadRequest):
        await amend(rig, position.id, stop_loss="96")  # above the entry of a long
    rig.set_price("94")
    await rig.settle()
    opened = (await rig.book()).positions[position.id]
    assert (opened.status, opened.stop_loss, opened.take_profit) == ("open", D(92), None)


async def test_a_move_cerberus_refuses_leaves_the_entry_resting(rig: Rig) -> None:
    position = await rig.position("long", "1", entry_price="95")
    await rig.limits(max_position_size="100")
    with pytest.raises(ValidationFailed):
        await amend(rig, position.id, entry_price="120")  # a buy limit above the ask: judged at 120, over the size
    book = await rig.book()
    (entry,) = book.orders.values()
    assert (entry.id, entry.price, book.positions[position.id].status) == (position.entry_order_id, D(95), "pending")
    rig.set_price("94")
    await rig.settle()
    assert book.positions[position.id].status == "open"


async def test_a_move_to_a_price_the_market_reaches_opens_at_once(rig: Rig) -> None:
    position = await rig.position("long", "1", entry_price="95")
    opened = await amend(rig, position.id, entry_price="101")
    assert (opened.id, opened.status, opened.entry_price) == (position.id, "open", D("100.01"))
    assert (await rig.book()).orders == {}


async def test_only_a_pending_entry_can_be_moved(rig: Rig) -> None:
    held = await rig.position("long", "1")
    with pytest.raises(trading.OrderNotOpen):
        await amend(rig, held.id, entry_price="97")
    with pytest.raises(NotFound):
        await amend(rig, "pos_missing", entry_price="97")
    entry = await rig.position("long", "1", entry_price="95")
    assert entry.entry_order_id is not None
    await trading.cancel_order(rig.engine, rig.account_id, entry.entry_order_id)
    with pytest.raises(trading.OrderNotOpen):
        await amend(rig, entry.id, entry_price="97")


async def test_a_move_the_venue_cannot_place_leaves_no_entry_behind(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    position = await rig.position("long", "1", entry_price="95")

    async def down(spec: object) -> object:
        raise ExchangeUnavailable("paper is down")

    monkeypatch.setattr(rig.paper, "place", down)
    with pytest.raises(ExchangeUnavailable):
        await amend(rig, position.id, entry_price="97")
    monkeypatch.undo()
    (stored,) = await rig.stored_positions()
    assert (stored.id, stored.status, stored.close_reason) == (position.id, "canceled", "entry_canceled")
    assert await rig.stored_orders("open") == []
    assert (await rig.book()).orders == {}
    rig.set_price("94")  # neither the old price nor the new one fills
    await rig.settle()
    assert (await rig.book()).open_positions() == []
