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

    await running.move("94")  # the 95 buy fills at the ask, 94.01; the grid then sells it at 100
    await eventually(lambda: ("sell", D(100)) in [(o.side, o.price) for o in open_orders(rig, record.id)])
    (held,) = (await rig.book()).open_positions()
    assert (held.side, held.entry_price, held.strategy_id) == ("long", D("94.01"), record.id)

    await running.move("101")  # the 100 sell fills at the bid, 100.99, and closes the long; 95 is bought again
    await eventually(
        lambda: [(o.side, o.price) for o in open_orders(rig, record.id)] == [("buy", D(90)), ("buy", D(95))]
    )
    assert (await rig.book()).open_positions() == []
    performance = await rig.store.strategy_performance(record.id)
    assert performance["trades"] == 2 and performance["win_rate"] == 1
    assert performance["total_pnl"] == (D("100.99") - D("94.01")) - (D("94.01") + D("100.99")) * D("0.001")


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
