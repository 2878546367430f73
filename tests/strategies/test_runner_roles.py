"""Two runners on one store and bus, as two instances have them: only the leader runs strategies; deploy, stop and
the kill switch work through the follower too; the follower's checks answer as the leader's; and a follower that
takes over resumes every active strategy without placing its orders again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal as D

import pytest

from rt.coord.memory import MemoryLeases
from rt.coord.roles import Roles
from rt.engine import kill
from rt.strategies.runner import Runner
from tests.engine.conftest import SYMBOL, Rig
from tests.strategies.test_runner import GRID, Running, eventually, resting


class Pair:
    def __init__(self, leader: Running, follower: Running) -> None:
        self.leader, self.follower = leader, follower


class Following(Running):
    """A runner whose instance does not hold the `strategies` role (its roles never run)."""

    async def start(self) -> Runner:
        await self.runner.start(Roles(MemoryLeases("b")))
        self.task = asyncio.create_task(self.runner.run_fills())
        await asyncio.sleep(0)
        await self.runner.reconcile()
        self.runner.listen([self.rig.paper])
        return self.runner


@pytest.fixture
async def pair(rig: Rig) -> AsyncIterator[Pair]:
    # The follower is made second: the engine's strategy checks and halts are the follower's, so every order the
    # leader places passes the follower's checks, as on another instance.
    leader, follower = Running(rig), Following(rig)
    await leader.start()
    await follower.start()
    yield Pair(leader, follower)
    await follower.stop()
    await leader.stop()


async def test_a_strategy_deployed_through_the_follower_runs_once_on_the_leader(rig: Rig, pair: Pair) -> None:
    record = await pair.follower.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    assert record.status == "active"
    await eventually(lambda: resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))])
    assert [r.id for r, _ in pair.leader.runner._live.values()] == [record.id]
    assert pair.follower.runner._live == {}
    # Both answer the same: active, in the strategies channel and in Cerberus's check.
    assert [r.id for r in pair.follower.runner.active()] == [r.id for r in pair.leader.runner.active()] == [record.id]
    assert pair.follower.runner.checks(rig.account_id, record.id, D(1), True) == []

    await pair.leader.move("94.99")  # the 95 buy fills: the leader, and only it, sells that lot at 100
    await eventually(lambda: ("sell", D(100)) in resting(rig, record.id))
    assert resting(rig, record.id) == [("buy", D(90)), ("sell", D(100))]
    stored = await rig.store.get_strategy(rig.account_id, record.id)
    assert stored is not None and "pending_start" not in stored.state


async def test_a_stop_through_the_follower_cancels_the_leaders_orders_and_stays_stopped(rig: Rig, pair: Pair) -> None:
    record = await pair.leader.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    assert len(resting(rig, record.id)) == 2
    stopped = await pair.follower.runner.stop_strategy(rig.account_id, record.id)
    assert stopped.status == "stopped"
    await eventually(lambda: record.id not in pair.leader.runner._live)
    assert resting(rig, record.id) == []
    await pair.leader.move("97")  # a tick the leader would have traded on
    stored = await rig.store.get_strategy(rig.account_id, record.id)
    assert stored is not None and (stored.status, stored.stop_reason) == ("stopped", "manual")
    assert resting(rig, record.id) == []
    refused = pair.follower.runner.checks(rig.account_id, record.id, D(1), True)
    assert [c.passed for c in refused] == [False]


async def test_a_kill_through_the_follower_halts_what_the_leader_runs(rig: Rig, pair: Pair) -> None:
    record = await pair.leader.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    report = await kill.execute(rig.engine, rig.account_id, "KILL")  # the engine's halt is the follower's
    assert (report["strategies_halted"], report["orders_canceled"]) == (1, 2)
    await eventually(lambda: record.id not in pair.leader.runner._live)
    stored = await rig.store.get_strategy(rig.account_id, record.id)
    assert stored is not None and stored.status == "halted"


async def test_a_follower_that_takes_over_resumes_without_placing_again(rig: Rig, pair: Pair) -> None:
    record = await pair.follower.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await eventually(lambda: len(resting(rig, record.id)) == 2)
    await pair.leader.runner.follow()  # the leader's lease is gone
    await pair.follower.runner.lead()
    assert list(pair.follower.runner._live) == [record.id] and pair.leader.runner._live == {}
    assert resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))]
    await pair.follower.move("94.99")
    await eventually(lambda: ("sell", D(100)) in resting(rig, record.id))


async def test_a_strategy_started_while_no_one_leads_starts_when_a_leader_comes(rig: Rig, pair: Pair) -> None:
    await pair.leader.runner.follow()
    record = await pair.follower.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await asyncio.sleep(0.05)
    assert resting(rig, record.id) == []
    await pair.leader.runner.lead()
    assert resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))]


async def test_an_order_a_dead_leader_placed_but_never_saved_is_canceled_by_the_next(rig: Rig, pair: Pair) -> None:
    record = await pair.leader.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    stray = await rig.order("buy", "1", type="limit", price="85", strategy_id=record.id)
    await pair.leader.runner.follow()
    await pair.follower.runner.lead()
    assert (await rig.store.get_order(rig.account_id, stray.id)).status == "canceled"  # type: ignore[union-attr]
    assert resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))]


async def test_a_tick_while_the_leader_starts_a_strategy_started_elsewhere_does_not_double_its_buys(
    rig: Rig, pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    refresh = rig.engine.refresh

    async def tick_meanwhile(account_id: str) -> None:
        rig.set_price("99.5")  # a tick lands while the leader reads the book for on_start
        await refresh(account_id)

    monkeypatch.setattr(rig.engine, "refresh", tick_meanwhile)
    record = await pair.follower.runner.deploy(rig.account_id, "grid", "grid", "paper", SYMBOL, GRID, {})
    await eventually(lambda: len(resting(rig, record.id)) >= 2)
    await pair.leader.move("99.5")
    assert resting(rig, record.id) == [("buy", D(90)), ("buy", D(95))]
