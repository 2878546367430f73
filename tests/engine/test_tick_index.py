"""rt/engine/market: a tick works on the books it touches, found through the index of open positions by venue and
market (and quote currency), not by walking every account."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NoReturn

import pytest

from rt.engine import market, trading
from rt.engine.requests import PositionUpdate
from rt.records.trading import Book, Position
from tests.engine.conftest import Rig, RigFactory

D = Decimal


class Untouchable(dict[str, Position]):
    """The positions of a book no tick may look at."""

    def _visited(self, *_: Any) -> NoReturn:
        raise AssertionError("a tick walked a book it does not touch")

    values = items = keys = __iter__ = __len__ = get = _visited  # type: ignore[assignment]


def idle_books(rig: Rig, count: int) -> list[Book]:
    """Books of accounts with nothing open, in the engine's copy as if read from the store."""
    books = []
    for i in range(count):
        book = rig.engine._new_book(f"idle-{i}")
        rig.engine._swap(book.account_id, book)
        book.positions = Untouchable()
        books.append(book)
    return books


def spawned(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []
    spawn = rig.engine.spawn

    def recording(coro: Any, name: str) -> None:
        names.append(name)
        spawn(coro, name)

    monkeypatch.setattr(rig.engine, "spawn", recording)
    return names


async def test_ten_thousand_idle_accounts_are_not_visited_and_a_crossing_closes_the_one_open_position(
    rig: Rig,
) -> None:
    position = await rig.position("long", "1", stop_loss="95")
    idle_books(rig, 10_000)
    rig.set_price("97")
    rig.set_price("94")
    await rig.settle()
    assert (position.status, position.close_reason) == ("closed", "stop_loss")
    (stored,) = await rig.stored_positions("closed")
    assert stored.id == position.id


async def test_a_tick_inside_every_accounts_alert_band_looks_at_no_book(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    traders = [rig.as_account((await rig.store.create_account(f"t{i}")).id) for i in range(20)]
    positions = [await trader.position("long", "1") for trader in traders]
    looked: list[str] = []
    differ = market.alerts_differ

    def counting(book: Book) -> bool:
        looked.append(book.account_id)
        return differ(book)

    monkeypatch.setattr(market, "alerts_differ", counting)
    for price in ("100.5", "99.5", "101", "98"):
        rig.set_price(price)
    await rig.settle()
    assert looked == []
    assert {p.current_price for p in positions} == {D(98)}  # every one marked all the same


async def test_the_tick_that_crosses_a_daily_loss_limit_raises_the_alert_and_leaving_it_clears_it(rig: Rig) -> None:
    await rig.limits(max_daily_loss="60")
    await rig.position("long", "10")  # entry 100.01: at 95 the day's loss is about 51 of 60
    rig.set_price("99")
    await rig.settle()
    assert (await rig.book()).alerts == {}
    rig.set_price("95")
    await rig.settle()
    assert (await rig.book()).alerts == {"daily_loss_limit": "warning"}
    levels = [d.event.data["level"] for d in await rig.history("risk") if d.event.event == "risk.limit_reached"]
    assert levels == ["warning"]
    rig.set_price("94")  # about 61: breached, and the account only reduces from now on
    await rig.settle()
    assert ((await rig.book()).alerts, (await rig.book()).state) == ({"daily_loss_limit": "breached"}, "reducing")
    rig.set_price("100")
    await rig.settle()
    assert (await rig.book()).alerts == {}


async def test_an_account_on_two_markets_is_alerted_on_the_tick_that_crosses(rig: Rig) -> None:
    await rig.limits(max_daily_loss="60")
    await rig.position("long", "10")
    await rig.position("long", "1", symbol="ETH/USDT")
    rig.set_price("99")
    rig.set_price("10.1", "ETH/USDT")
    await rig.settle()
    assert (await rig.book()).alerts == {}
    rig.set_price("95")
    await rig.settle()
    assert (await rig.book()).alerts == {"daily_loss_limit": "warning"}


async def test_a_position_enters_the_triggers_when_opened_and_follows_its_stop_when_amended(rig: Rig) -> None:
    position = await rig.position("long", "1", stop_loss="95")
    update = PositionUpdate.model_validate({"stop_loss": "90"})
    await trading.update_position(rig.engine, rig.account_id, position.id, update)
    rig.set_price("94")  # past the old stop, not the new one
    await rig.settle()
    assert position.status == "open"

    update = PositionUpdate.model_validate({"stop_loss": "93", "take_profit": "110"})
    await trading.update_position(rig.engine, rig.account_id, position.id, update)
    rig.set_price("111")
    await rig.settle()
    assert (position.status, position.close_reason) == ("closed", "take_profit")


async def test_a_short_closes_on_its_stop_above_and_its_take_profit_below(rig: Rig) -> None:
    stopped = await rig.position("short", "1", stop_loss="105")
    taken = await rig.position("short", "1", take_profit="90")
    rig.set_price("104.9")
    await rig.settle()
    assert (stopped.status, taken.status) == ("open", "open")
    rig.set_price("106")
    await rig.settle()
    assert (stopped.status, stopped.close_reason, taken.status) == ("closed", "stop_loss", "open")
    rig.set_price("89")
    await rig.settle()
    assert (taken.status, taken.close_reason) == ("closed", "take_profit")


async def test_a_closed_position_leaves_the_triggers(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    position = await rig.position("long", "1", stop_loss="95", take_profit="110")
    await rig.close_position(position.id)
    names = spawned(rig, monkeypatch)
    rig.set_price("94")
    rig.set_price("111")
    await rig.settle()
    assert not [name for name in names if name.startswith("close-")]
    assert position.current_price != D(111)  # a closed position keeps the price it closed at


async def test_a_position_read_from_the_store_is_indexed(make_rig: RigFactory) -> None:
    rig = await make_rig()
    position = await rig.position("long", "1", stop_loss="95")
    reloaded = await rig.restart()
    rig.set_price("94")  # the old process's market: nothing of it is left
    reloaded.set_price("96")
    book = await reloaded.book()
    assert book.positions[position.id].current_price == D(96)
    reloaded.set_price("94")
    await reloaded.settle()
    (stored,) = await reloaded.stored_positions("closed")
    assert (stored.id, stored.close_reason) == (position.id, "stop_loss")


async def test_a_copy_swapped_in_replaces_the_one_the_ticks_move(rig: Rig) -> None:
    position = await rig.position("long", "1", stop_loss="95")
    old = (await rig.book()).positions[position.id]
    await rig.engine._reload(rig.account_id)  # the stored book takes the copy's place
    new = (await rig.book()).positions[position.id]
    assert new is not old
    rig.set_price("97")
    assert (new.current_price, old.current_price) == (D(97), position.entry_price)
    rig.set_price("94")
    await rig.settle()
    assert (new.status, new.close_reason, old.status) == ("closed", "stop_loss", "open")


async def test_an_instance_not_doing_the_tick_work_marks_but_never_closes(rig: Rig) -> None:
    position = await rig.position("long", "1", stop_loss="95")
    rig.engine.protects = False
    rig.set_price("94")
    await rig.settle()
    assert (position.status, position.current_price) == ("open", D(94))
    rig.engine.protects = True  # it takes the market over: the next tick past the stop closes
    rig.set_price("93.5")
    await rig.settle()
    assert (position.status, position.close_reason) == ("closed", "stop_loss")


async def test_a_tick_gives_its_rate_to_positions_quoted_in_its_currency(make_rig: RigFactory) -> None:
    rig = await make_rig(prices={"BTC/USDT": D(60000), "ETH/BTC": D("0.05")})
    rig.set_price("60000", "BTC/USDT")
    position = await rig.position("long", "1", symbol="ETH/BTC")
    assert position.cross_rate == D(60000)
    rig.set_price("70000", "BTC/USDT")
    assert position.cross_rate == D(70000)
    assert position.notional == position.current_price * D(70000)
