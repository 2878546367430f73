"""rt/metrics/instruments: what the engine, the hub and the store record, with the labels operators filter by."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest

from rt.channels.hub import Hub
from rt.engine import kill
from rt.errors import Locked, ValidationFailed
from rt.session.frames import Outgoing
from tests.engine.conftest import Rig
from tests.metrics.conftest import Samples


async def test_orders_accepted_and_refused_are_counted_per_cerberus_check(rig: Rig) -> None:
    samples = Samples()
    accepted = samples.value("rt_orders_accepted_total")
    by_size = samples.value("rt_orders_refused_total", check="position_size")
    by_state = samples.value("rt_orders_refused_total", check="trading_state")
    by_margin = samples.value("rt_orders_refused_total", check="margin")

    await rig.limits(max_position_size="1000")
    await rig.order("buy", "1")
    await rig.position("long", "2")
    with pytest.raises(ValidationFailed):
        await rig.order("buy", "11")  # 11 at 100.01 is over 1000
    await rig.set_state("locked")
    with pytest.raises(Locked):
        await rig.order("buy", "1")

    assert samples.value("rt_orders_accepted_total") == accepted + 2
    assert samples.value("rt_orders_refused_total", check="position_size") == by_size + 1
    assert samples.value("rt_orders_refused_total", check="trading_state") == by_state + 1
    assert samples.value("rt_orders_refused_total", check="margin") == by_margin


async def test_kill_latency_is_observed_per_action(rig: Rig) -> None:
    samples = Samples()
    kills = samples.value("rt_kill_duration_seconds_count", action="KILL")
    unlocks = samples.value("rt_kill_duration_seconds_count", action="UNLOCK")
    seconds = samples.value("rt_kill_duration_seconds_sum", action="KILL")
    await rig.position("long", "1")

    await kill.execute(rig.engine, rig.account_id, "KILL", "drill")
    await kill.execute(rig.engine, rig.account_id, "UNLOCK")

    assert samples.value("rt_kill_duration_seconds_count", action="KILL") == kills + 1
    assert samples.value("rt_kill_duration_seconds_count", action="UNLOCK") == unlocks + 1
    assert samples.value("rt_kill_duration_seconds_sum", action="KILL") > seconds
    assert samples.value("rt_kill_duration_seconds_bucket", action="KILL", le="+Inf") == kills + 1


async def test_every_store_commit_is_timed(rig: Rig) -> None:
    samples = Samples()
    commits = samples.value("rt_store_commit_duration_seconds_count")
    await rig.store.create_account("another")
    await rig.order("buy", "1")
    # An account and an order: at least one commit each.
    assert samples.value("rt_store_commit_duration_seconds_count") >= commits + 2


class Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def offer(self, out: Outgoing) -> None:
        self.frames.append(out.payload)

    def fell_behind(self) -> None:
        raise AssertionError("nothing is held")


async def test_fan_out_is_timed_once_per_event_and_counted_per_subscriber(rig: Rig) -> None:
    samples = Samples()
    events = samples.value("rt_hub_fanout_duration_seconds_count")
    hub = Hub(rig.bus)
    sinks = [Sink(), Sink(), Sink()]
    async with contextlib.AsyncExitStack() as stack:
        for sink in sinks:
            subscription = await stack.enter_async_context(hub.subscribe("acc_1", "ticks:BTC/USDT", sink))
            subscription.start(0)
        ticker = rig.set_price(Decimal("101"))

        hub.tick(ticker)
        hub.tick(rig.set_price(Decimal("102"), "ETH/USDT"))  # no subscriber: nothing handed out, nothing timed

    assert [len(s.frames) for s in sinks] == [1, 1, 1]
    assert hub.fanned_out == 3
    assert samples.value("rt_hub_fanout_duration_seconds_count") == events + 1
