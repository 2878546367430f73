"""A strategy trades on the prices of its own venue: with the paper market answering to `binance`
(RT_PAPER_VENUES) and an account trading a real binance, neither market's ticks reach the other's strategies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal as D

import pytest

from rt.strategies.runner import Runner
from tests.engine.conftest import SYMBOL, Rig
from tests.exchanges.test_paper_venues import RealBinance, rigs
from tests.strategies.test_runner import GRID, eventually, open_orders

__all__ = ["rigs"]


@pytest.fixture
async def runner(rigs: tuple[Rig, Rig, RealBinance]) -> AsyncIterator[Runner]:
    """Wired as rt serve wires it: fills from the bus, the ticks of every venue."""
    alice, _, _ = rigs
    made = Runner(alice.engine, alice.store)
    await made.start()
    fills = asyncio.create_task(made.run_fills())
    await asyncio.sleep(0)
    await made.reconcile()
    made.listen(alice.engine.venues.all())
    yield made
    fills.cancel()
    await asyncio.gather(fills, return_exceptions=True)
    await made.close()


async def settle(rig: Rig, runner: Runner) -> None:
    """Let what the strategies placed on a tick run to the end."""
    while runner._tasks:
        await asyncio.gather(*runner._tasks, return_exceptions=True)
    await rig.settle()


def prices(rig: Rig, strategy_id: str) -> list[D | None]:
    return [o.price for o in open_orders(rig, strategy_id)]


async def test_the_paper_markets_ticks_never_reach_a_strategy_on_a_real_venue_of_the_same_id(
    rigs: tuple[Rig, Rig, RealBinance], runner: Runner
) -> None:
    alice, bob, _ = rigs
    alice.set_price("120")  # both grids start above their range (bob's venue is at 200): nothing placed yet
    bobs = await runner.deploy(bob.account_id, "real", "grid", "binance", SYMBOL, GRID, {})
    alices = await runner.deploy(alice.account_id, "dry run", "grid", "binance", SYMBOL, GRID, {})
    assert prices(bob, bobs.id) == prices(alice, alices.id) == []

    alice.set_price("97")  # the paper market enters the range: the dry run buys, bob's real grid does not
    await eventually(lambda: prices(alice, alices.id) == [D(90), D(95)])
    await settle(alice, runner)
    assert prices(bob, bobs.id) == []


async def test_a_real_venues_ticks_never_reach_a_strategy_on_the_simulated_venue_of_the_same_id(
    rigs: tuple[Rig, Rig, RealBinance], runner: Runner
) -> None:
    alice, bob, real = rigs
    alices = await runner.deploy(alice.account_id, "dry run", "grid", "binance", SYMBOL, GRID, {})
    bobs = await runner.deploy(bob.account_id, "real", "grid", "binance", SYMBOL, GRID, {})
    assert (prices(alice, alices.id), prices(bob, bobs.id)) == ([D(90), D(95)], [])

    real.feed.set_price(SYMBOL, D(103))  # bob's venue enters the range: his grid buys, the dry run hears nothing
    await eventually(lambda: prices(bob, bobs.id) == [D(90), D(95), D(100)])
    await settle(alice, runner)
    assert prices(alice, alices.id) == [D(90), D(95)]
    assert {o.simulated for o in open_orders(bob, bobs.id)} == {False}
