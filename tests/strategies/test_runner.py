"""The runner on the in-process engine: a grid trades a round trip, limits apply, stop and kill, and a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal as D
from typing import Any

import pytest

from rt.engine import kill
from rt.errors import BadRequest, RtError
from rt.strategies.runner import Runner
from tests.engine.conftest import SYMBOL, Rig

GRID = {"grid_levels": 5, "price_range": [90, 110], "quantity_per_level": 1}


async def eventually(check: Callable[[], Any], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not reached"
        await asyncio.sleep(0.01)


class Running:
    """A runner wired as rt serve wires it: fills from the bus, ticks from the venue."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.runner = Runner(rig.engine, rig.store)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Runner:
        await self.runner.start()
        self.task = asyncio.create_task(self.runner.run_fills())
        await asyncio.sleep(0)
        await self.runner.reconcile()
        self.runner.listen([self.rig.paper])
        return self.runner

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.runner.close()

    async def move(self, price: str) -> None:
        self.rig.set_price(price)
        await self.rig.settle()
        await asyncio.sleep(0.05)  # the runner's bus subscription takes its deliveries
        await self.rig.settle()


@pytest.fixture
async def running(rig: Rig) -> AsyncIterator[Running]:
    made = Running(rig)
    await made.start()
    yield made
    await made.stop()


def open_orders(rig: Rig, strategy_id: str) -> list[Any]:
    book = rig.engine.cached_book(rig.account_id)
    return (
        sorted((o for o in book.orders.values() if o.strategy_id == strategy_id), key=lambda o: o.price) if book else []
    )


async def test_a_grid_buys_low_sells_one_level_up_and_books_the_round_trip(rig: Rig, running: Running) -> None:
    record = await running.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    assert record.status == "active"
    assert [(o.side, o.price) for o in open_orders(rig, record.id)] == [("buy", D(90)), ("buy", D(95))]

    # The market moves exactly onto the levels (ask 95, then bid 100), so a limit fills at its own price either way.
    await running.move("94.99")  # the 95 buy fills; the grid then sells that lot at 100
    await eventually(lambda: ("sell", D(100)) in [(o.side, o.price) for o in open_orders(rig, record.id)])
    (held,) = (await rig.book()).open_positions()
    assert (held.side, held.entry_price, held.strategy_id) == ("long", D(95), record.id)

    await running.move("100.01")  # the 100 sell fills and closes the long; 95 is bought again
    await eventually(
        lambda: [(o.side, o.price) for o in open_orders(rig, record.id)] == [("buy", D(90)), ("buy", D(95))]
    )
    assert (await rig.book()).open_positions() == []
    performance = await running.runner.performance(record)
    assert performance["trades"] == 2 and performance["win_rate"] == 1
    realized = (D(100) - D(95)) - (D(95) + D(100)) * D("0.001")
    assert performance == {**performance, "realized_pnl": realized, "unrealized_pnl": 0, "total_pnl": realized}


async def test_the_strategys_own_limits_apply_on_top_of_the_envelope(rig: Rig, running: Running) -> None:
    record = await running.runner.deploy(
        rig.account_id, "small", "grid", "paper", SYMBOL, GRID, {"max_position_size": 92}
    )
    # 90 x 1 is under the strategy's 92; 95 x 1 is not: only the 90 level rests.
    assert [(o.side, o.price) for o in open_orders(rig, record.id)] == [("buy", D(90))]
    rejected = [d.event.data for d in await rig.history("orders") if d.event.event == "order.rejected"]
    assert [r["reject_reason"].split(":")[0] for r in rejected] == ["strategy_limit"]


async def test_stop_cancels_its_orders_and_kill_halts_it(rig: Rig, running: Running) -> None:
    runner = running.runner
    first = await runner.deploy(rig.account_id, "a", "grid", "paper", SYMBOL, GRID, {})
    stopped = await runner.stop_strategy(rig.account_id, first.id)
    assert stopped.status == "stopped" and open_orders(rig, first.id) == []

    second = await runner.deploy(rig.account_id, "b", "grid", "paper", SYMBOL, GRID, {})
    assert len(open_orders(rig, second.id)) == 2
    report = await kill.execute(rig.engine, rig.account_id, "KILL")
    assert (report["strategies_halted"], report["orders_canceled"]) == (1, 2)
    assert (await runner.get(rig.account_id, second.id)).status == "halted"
    with pytest.raises(RtError) as locked:
        await runner.start_strategy(rig.account_id, second.id)
    assert locked.value.status == 423
    names = [d.event.event for d in await rig.history("strategies")]
    assert names == ["strategy.started", "strategy.stopped", "strategy.started", "strategy.stopped"]


async def test_starting_twice_at_once_places_once(rig: Rig, running: Running) -> None:
    runner = running.runner
    record = await runner.deploy(rig.account_id, "g", "grid", "paper", SYMBOL, GRID, {})
    await runner.stop_strategy(rig.account_id, record.id)
    await asyncio.gather(*(runner.start_strategy(rig.account_id, record.id) for _ in range(3)))
    assert len(open_orders(rig, record.id)) == 2


async def test_a_bad_deploy_is_a_bad_request(rig: Rig, running: Running) -> None:
    for kind, config, limits in (
        ("martingale", GRID, {}),
        ("grid", {**GRID, "grid_levels": 1}, {}),
        ("grid", GRID, {"stop_loss_pct": 2}),
    ):
        with pytest.raises(BadRequest):
            await running.runner.deploy(rig.account_id, "x", kind, "paper", SYMBOL, config, limits)


async def test_fills_missed_while_down_are_fed_to_the_strategy_at_start(rig: Rig) -> None:
    before = Running(rig)
    runner = await before.start()
    record = await runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await before.stop()  # the runner is gone: nothing hears the fill that follows
    rig.set_price("94")
    await rig.settle()
    assert ("sell", D(100)) not in [(o.side, o.price) for o in open_orders(rig, record.id)]

    after = Running(rig)
    await after.start()
    try:
        assert [(o.side, o.price) for o in open_orders(rig, record.id)] == [("buy", D(90)), ("sell", D(100))]
    finally:
        await after.stop()


def resting(rig: Rig, strategy_id: str) -> list[tuple[str, D | None]]:
    return [(o.side, o.price) for o in open_orders(rig, strategy_id)]


async def test_a_grid_beside_a_manual_long_trades_only_its_own_lots(rig: Rig, running: Running) -> None:
    manual = await rig.position("long", "1")
    record = await running.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await running.move("94.99")
    await eventually(lambda: ("sell", D(100)) in resting(rig, record.id))
    await running.move("100.01")
    await eventually(lambda: resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))])
    assert manual.status == "open"
    assert [p.id for p in (await rig.book()).open_positions()] == [manual.id]
    performance = await running.runner.performance(record)
    assert (performance["trades"], performance["win_rate"]) == (2, 1)


async def test_performance_counts_the_open_lots_at_the_live_price(rig: Rig, running: Running) -> None:
    record = await running.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await running.move("94.99")  # the 95 buy fills at 95 and rests a sell at 100
    await eventually(lambda: ("sell", D(100)) in resting(rig, record.id))
    await running.move("98")
    performance = await running.runner.performance(record)
    opening_fee = D(95) * D("0.001")
    assert performance["realized_pnl"] == -opening_fee
    assert performance["unrealized_pnl"] == D(98) - D(95)
    assert performance["total_pnl"] == D(98) - D(95) - opening_fee
    assert (performance["trades"], performance["win_rate"]) == (1, 0)


async def test_a_lot_stopped_out_takes_its_sell_with_it_and_the_level_is_bought_again_later(
    rig: Rig, running: Running
) -> None:
    record = await running.runner.deploy(
        rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {"stop_loss_pct": "0.02"}
    )
    await running.move("94.99")  # the 95 buy fills (stop loss 93.10); a sell rests at 100
    await eventually(lambda: ("sell", D(100)) in resting(rig, record.id))
    (lot,) = (await rig.book()).open_positions()
    assert lot.stop_loss == D("93.10")

    await running.move("92.5")  # the stop loss closes the lot; the grid's sell for it goes too
    await eventually(lambda: resting(rig, record.id) == [("buy", D(90))])
    (closed,) = await rig.stored_positions("closed")
    assert (closed.id, closed.close_reason) == (lot.id, "stop_loss")
    assert record.state["lots"] == {}

    await running.move("96")  # back above the level: its buy rests again
    await eventually(lambda: resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))])


async def test_a_lot_closed_by_hand_cancels_the_grids_sell_for_it(rig: Rig, running: Running) -> None:
    record = await running.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await running.move("89.99")  # both buys fill: lots at 95 and 90, sells at 100 and 95
    await eventually(lambda: resting(rig, record.id) == [("sell", D(95)), ("sell", D(100))])
    lots = sorted((await rig.book()).open_positions(), key=lambda p: p.entry_price)
    await rig.close_position(lots[0].id)  # the lot bought at 90
    await running.move("89.99")
    await eventually(lambda: resting(rig, record.id) == [("sell", D(100))])
    await running.move("100.01")  # the remaining sell closes the remaining lot; both levels rest buys again
    await eventually(lambda: resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))])
    assert (await rig.book()).open_positions() == []
    assert all(p.side == "long" for p in await rig.stored_positions())  # no sell ever opened a short


async def test_a_grid_deployed_below_its_range_starts_trading_when_the_price_enters(rig: Rig, running: Running) -> None:
    rig.set_price("80")
    record = await running.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    assert resting(rig, record.id) == []
    await running.move("85")
    assert resting(rig, record.id) == []
    await running.move("97")
    await eventually(lambda: resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))])
    await running.move("97.5")
    assert resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))]


async def test_grid_orders_are_on_the_markets_steps(rig: Rig, running: Running) -> None:
    config = {"grid_levels": 4, "price_range": [90, 100], "quantity_per_level": "0.12345"}
    record = await running.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, config, {})
    assert [(o.price, o.quantity) for o in open_orders(rig, record.id)] == [
        (D("90.00"), D("0.1234")),
        (D("93.33"), D("0.1234")),
        (D("96.67"), D("0.1234")),
    ]


async def test_a_sell_that_closed_an_older_lot_leaves_its_own_sell_to_the_lot_still_open(
    rig: Rig, running: Running
) -> None:
    record = await running.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await running.move("94.99")  # a lot at 95 first, its sell at 100
    await eventually(lambda: ("sell", D(100)) in resting(rig, record.id))
    await running.move("89.99")  # then a lot at 90, its sell at 95
    await eventually(lambda: resting(rig, record.id) == [("sell", D(95)), ("sell", D(100))])
    await running.move("95.01")  # the 95 sell nets FIFO: it closes the older lot, the one bought at 95
    await eventually(lambda: resting(rig, record.id) == [("buy", D(90)), ("sell", D(100))])
    (left,) = (await rig.book()).open_positions()
    assert left.entry_price == D(90)
    await rig.close_position(left.id)  # the sell at 100 is now the one for this lot: it goes with it
    await running.move("95.01")
    await eventually(lambda: resting(rig, record.id) == [("buy", D(90))])


async def test_a_tick_while_a_grid_starts_does_not_double_its_buys(rig: Rig, running: Running) -> None:
    runner = running.runner
    store_it = runner._changed

    async def changed(record: Any, event: str) -> None:
        rig.set_price("99.5")  # a tick lands while the start is being stored
        await store_it(record, event)

    runner._changed = changed  # type: ignore[method-assign]
    record = await runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await running.move("99.5")
    assert resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))]


async def test_close_all_takes_the_grids_sells_with_its_lots(rig: Rig, running: Running) -> None:
    record = await running.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await running.move("89.99")  # both buys fill; sells rest at 95 and 100
    await eventually(lambda: resting(rig, record.id) == [("sell", D(95)), ("sell", D(100))])
    report = await kill.execute(rig.engine, rig.account_id, "CLOSE_ALL")
    assert (report["positions_closed"], report["strategies_halted"]) == (2, 0)
    await eventually(lambda: resting(rig, record.id) == [])
    assert (await running.runner.get(rig.account_id, record.id)).status == "active"
    await running.move("99")  # still running: back in the range, every level below the price gets its buy
    await eventually(lambda: resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))])


async def test_a_grid_stopped_and_started_again_sells_the_lot_it_still_holds(rig: Rig, running: Running) -> None:
    runner = running.runner
    record = await runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await running.move("94.99")
    await eventually(lambda: ("sell", D(100)) in resting(rig, record.id))
    await runner.stop_strategy(rig.account_id, record.id)
    assert resting(rig, record.id) == []
    (lot,) = (await rig.book()).open_positions()  # a stop leaves the lot open

    await runner.start_strategy(rig.account_id, record.id)
    assert resting(rig, record.id) == [("buy", D(90)), ("sell", D(100))]
    await running.move("100.01")  # its sell closes it, and its level is bought again
    await eventually(lambda: resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))])
    (closed,) = await rig.stored_positions("closed")
    assert (closed.id, closed.close_reason) == (lot.id, "order")


async def test_a_lot_stopped_out_while_the_runner_was_down_loses_its_sell_at_start(rig: Rig) -> None:
    before = Running(rig)
    runner = await before.start()
    record = await runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {"stop_loss_pct": "0.02"})
    await before.move("94.99")
    await eventually(lambda: ("sell", D(100)) in resting(rig, record.id))
    await before.stop()  # nothing hears the stop loss that follows
    rig.set_price("92.5")
    await rig.settle()
    assert (await rig.book()).open_positions() == [] and ("sell", D(100)) in resting(rig, record.id)

    after = Running(rig)
    await after.start()
    try:
        assert resting(rig, record.id) == [("buy", D(90))]
    finally:
        await after.stop()


async def test_a_grid_whose_market_steps_changed_across_a_restart_keeps_its_levels(rig: Rig) -> None:
    before = Running(rig)
    runner = await before.start()
    record = await runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await before.stop()
    await rig.close()
    # The market comes back at 1,000,000 with a price step of 100: every level of this grid would round to 100.
    moved = await Rig.open(rig.path, rig.account_id, prices={SYMBOL: D("1000000"), "ETH/USDT": D(10)})
    after = Running(moved)
    try:
        await after.start()
        (live,) = after.runner.active()
        assert live.id == record.id
        assert after.runner._live[record.id][1].levels == [D(90), D(95), D(100), D(105), D(110)]  # type: ignore[attr-defined]
    finally:
        await after.stop()
        await moved.close()


async def test_one_strategy_failing_on_a_tick_does_not_keep_the_next_one_from_it(
    rig: Rig, running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    runner = running.runner
    broken = await runner.deploy(rig.account_id, "a", "grid", "paper", SYMBOL, GRID, {})
    rig.set_price("80")
    working = await runner.deploy(rig.account_id, "b", "grid", "paper", SYMBOL, GRID, {})

    def fail(ticker: Any) -> Any:
        raise RuntimeError("boom")

    first = next(iter(runner._live))
    assert first == broken.id
    runner._live[first][1].on_tick = fail  # type: ignore[method-assign]
    await running.move("97")
    await eventually(lambda: resting(rig, working.id) == [("buy", D(90)), ("buy", D(95))])
    assert "strategy tick failed" in caplog.text


async def test_the_strategies_channel_snapshot_shows_live_performance(rig: Rig, running: Running) -> None:
    from rt.channels import snapshot

    record = await running.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await running.move("94.99")  # the 95 buy fills and rests a sell at 100
    await eventually(lambda: ("sell", D(100)) in resting(rig, record.id))
    await running.move("98")
    data = await snapshot(rig.engine, rig.account_id, "strategies", running.runner)
    (shown,) = data["strategies"]
    assert shown["id"] == record.id
    assert shown["performance"] == await running.runner.performance(record)
    assert shown["performance"]["unrealized_pnl"] == D(98) - D(95)
    other = await snapshot(rig.engine, "acct_someone_else", "strategies", running.runner)
    assert other == {"strategies": []}


async def test_a_grid_over_the_envelope_stores_one_refusal_not_one_per_level(rig: Rig, running: Running) -> None:
    await rig.limits(max_concurrent_positions=2)
    wide = {"grid_levels": 21, "price_range": [80, 120], "quantity_per_level": 1}
    record = await running.runner.deploy(rig.account_id, "wide", "grid", "paper", SYMBOL, wide, {})
    # Ten levels sit below 100: two rest, the third is refused and the seven above it are not even tried, since
    # Cerberus would refuse each (same limits, a larger notional); all eight are retried later.
    assert resting(rig, record.id) == [("buy", D(80)), ("buy", D(82))]
    rejected = [d.event.data for d in await rig.history("orders") if d.event.event == "order.rejected"]
    assert [r["reject_reason"].split(":")[0] for r in rejected] == ["concurrent_positions"]
    assert sorted(record.state["refused"], key=int) == [str(i) for i in range(2, 10)]


async def test_a_dca_that_made_its_last_buy_stops_as_completed(rig: Rig, running: Running) -> None:
    dca = {"quantity": 1, "interval_s": 60, "max_orders": 2}
    record = await running.runner.deploy(rig.account_id, "dca", "dca", "paper", SYMBOL, dca, {})
    await running.runner.clock(1_000.0)
    assert (await running.runner.get(rig.account_id, record.id)).status == "active"  # one of two buys made
    await running.runner.clock(1_030.0)  # not due yet
    await running.runner.clock(1_060.0)  # the last buy
    stopped = await running.runner.get(rig.account_id, record.id)
    assert (stopped.status, stopped.stop_reason) == ("stopped", "completed")
    assert len([p for p in (await rig.book()).open_positions() if p.strategy_id == record.id]) == 2
    names = [d.event.event for d in await rig.history("strategies")]
    assert names == ["strategy.started", "strategy.stopped"]
