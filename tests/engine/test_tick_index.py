"""rt/engine/market: a tick works on the books it touches, found through the index of open positions by venue and
market (and quote currency), not by walking every account."""

from __future__ import annotations

import copy
import pickle
from decimal import Decimal
from typing import Any, NoReturn

import pytest

from rt.engine import market, trading
from rt.engine.engine import Changes
from rt.engine.requests import PositionUpdate
from rt.records.trading import Book, Mark, Position
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


def warnings_and_breaches(deliveries: list[Any]) -> list[str]:
    return [d.event.data["level"] for d in deliveries if d.event.event == "risk.limit_reached"]


async def test_an_alert_due_at_the_markets_price_after_a_fill_comes_on_the_next_tick_at_that_price(rig: Rig) -> None:
    rig.set_price("100")
    await rig.limits(max_daily_loss="1.3")
    await rig.position("long", "10")  # filled at the ask, 100.01, plus the fee: about 77% of the limit
    assert (await rig.book()).alerts == {}
    rig.set_price("100")  # at the last of 100 the day's loss is about 85%
    await rig.settle()
    assert (await rig.book()).alerts == {"daily_loss_limit": "warning"}
    assert warnings_and_breaches(await rig.history("risk")) == ["warning"]


async def test_a_breach_due_at_the_markets_price_after_a_fill_switches_to_reducing_on_the_next_tick(rig: Rig) -> None:
    rig.set_price("100")
    await rig.limits(max_daily_loss="1.05")
    await rig.position("long", "10")
    assert (await rig.book()).alerts == {"daily_loss_limit": "warning"}
    rig.set_price("100")
    await rig.settle()
    book = await rig.book()
    assert (book.alerts, book.state) == ({"daily_loss_limit": "breached"}, "reducing")


async def test_a_price_move_while_an_alert_is_being_stored_is_looked_at_on_the_next_tick(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rig.limits(max_daily_loss="60")
    await rig.position("long", "10")
    rig.set_price("99")
    await rig.settle()
    save = rig.engine.store.save
    moves = ["94"]

    async def moving(batch: Any) -> Any:
        if moves and batch.events:
            rig.set_price(moves.pop())  # the market moves on while the warning judged at 95 is written
        return await save(batch)

    monkeypatch.setattr(rig.engine.store, "save", moving)
    rig.set_price("95")
    await rig.settle()
    assert (await rig.book()).alerts == {"daily_loss_limit": "warning"}
    rig.set_price("94")  # the last stays where it moved: the breach comes on this tick
    await rig.settle()
    book = await rig.book()
    assert (book.alerts, book.state) == ({"daily_loss_limit": "breached"}, "reducing")


async def test_a_bad_stored_stop_loss_never_stops_another_accounts_protection_nor_a_restart(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    other = rig.as_account((await rig.store.create_account("other")).id)
    bad = await rig.position("long", "1", stop_loss="95")
    huge = await rig.position("long", "1", take_profit="110")
    good = await other.position("long", "1", stop_loss="96")
    async with rig.store._transaction("BEGIN"):
        await rig.store._db.execute("UPDATE positions SET stop_loss = 'NaN' WHERE id = ?", (bad.id,))
        # a level past the decimal context's largest exponent: its negation would overflow
        await rig.store._db.execute("UPDATE positions SET stop_loss = '-1E+1000000' WHERE id = ?", (huge.id,))
    await rig.engine._reload(rig.account_id)
    assert "stop_loss is not a number" in caplog.text
    reloaded = await rig.restart()
    reloaded.set_price("95.5")
    reloaded.set_price("94")
    await reloaded.settle()
    (closed,) = await reloaded.as_account(other.account_id).stored_positions("closed")
    assert (closed.id, closed.close_reason) == (good.id, "stop_loss")
    assert (await reloaded.book()).positions[bad.id].status == "open"


async def test_a_commit_stores_only_the_positions_a_tick_moved_since_they_were_last_stored(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(5):
        await rig.position("long", "0.01")
    written: list[int] = []
    save = rig.engine.store.save

    async def counting(batch: Any) -> Any:
        written.append(len(batch.positions))
        return await save(batch)

    monkeypatch.setattr(rig.engine.store, "save", counting)

    async def touch(changes: Changes) -> None:
        changes.book_changed = True

    rig.set_price("100.5")
    await rig.settle()
    for _ in range(3):
        await rig.engine.run(rig.account_id, touch)
    assert written == [5, 0, 0]


async def test_a_position_quoted_in_btc_is_alerted_on_the_btc_usdt_tick_that_moves_its_pnl(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig(prices={"BTC/USDT": D(60000), "ETH/BTC": D("0.05")})
    rig.set_price("60000", "BTC/USDT")
    rig.set_price("0.05", "ETH/BTC")
    await rig.limits(max_daily_loss="2000", max_position_size="1000000")
    await rig.position("long", "10", symbol="ETH/BTC")  # 0.5 BTC of ETH
    rig.set_price("0.048", "ETH/BTC")  # a loss of 0.02 BTC: 1,260 USDT with the fee, 63%
    await rig.settle()
    assert (await rig.book()).alerts == {}
    rig.set_price("90000", "BTC/USDT")  # the same loss in BTC is now 1,890 USDT
    await rig.settle()
    assert (await rig.book()).alerts == {"daily_loss_limit": "warning"}


def test_a_copy_of_a_position_keeps_its_price_when_the_market_moves_on() -> None:
    position = Position("p", "a", "paper", "BTC/USDT", "long", D(1), D(100), "open", current_price=D(100))
    mark = Mark()
    position.follow(mark)
    mark.move(D(105))
    copied, deep, unpickled = copy.copy(position), copy.deepcopy(position), pickle.loads(pickle.dumps(position))
    mark.move(D(110))
    assert position.current_price == D(110)
    assert (copied.current_price, deep.current_price, unpickled.current_price) == (D(105), D(105), D(105))
    copied.current_price = D(1)
    assert position.current_price == D(110)


async def test_a_position_whose_venue_no_longer_resolves_keeps_its_price_in_the_alert_band(rig: Rig) -> None:
    await rig.limits(max_daily_loss="60")
    await rig.position("long", "10")  # entry 100.01: at 95 the day's loss is about 51 of 60
    book = await rig.book()
    # Open on a venue this process no longer knows: no tick moves it, so it counts at its own price.
    gone = Position("gone", rig.account_id, "gone", "ETH/USDT", "long", D(1), D(10), "open", current_price=D(10))
    book.positions[gone.id] = gone
    rig.engine.ticks.index(book)
    rig.set_price("99")
    await rig.settle()
    assert (await rig.book()).alerts == {}
    rig.set_price("95")
    await rig.settle()
    assert (await rig.book()).alerts == {"daily_loss_limit": "warning"}
    assert gone.current_price == D(10)
