"""rt/bus/memory: sequence numbers per (account, channel), the `events` channel, history and subscribers."""

from __future__ import annotations

import asyncio

from rt.bus.memory import MemoryBus
from rt.records.events import EVENTS_CHANNEL, Delivery, Event, channel_of


def seqs(deliveries: list[Delivery], channel: str) -> list[tuple[str, int]]:
    return [(d.event.event, d.seq) for d in deliveries if d.channel == channel]


def test_events_map_to_channels() -> None:
    assert channel_of("position.opened") == "positions"
    assert channel_of("order.filled") == "orders"
    assert channel_of("risk.limit_reached") == "risk"
    assert channel_of("emergency.kill_triggered") == "risk"
    assert channel_of("account.updated") == "account"
    assert channel_of("strategy.started") == "strategies"
    assert channel_of("server.shutdown") == EVENTS_CHANNEL


async def test_seq_counts_per_account_and_channel() -> None:
    bus = MemoryBus()
    out = await bus.publish(
        [
            Event("acct_a", "position.opened", {}),
            Event("acct_a", "order.created", {}),
            Event("acct_a", "position.closed", {}),
            Event("acct_b", "position.opened", {}),
            Event("acct_a", "order.filled", {}),
        ]
    )
    a = [d for d in out if d.event.account_id == "acct_a"]
    b = [d for d in out if d.event.account_id == "acct_b"]
    assert seqs(a, "positions") == [("position.opened", 1), ("position.closed", 2)]
    assert seqs(a, "orders") == [("order.created", 1), ("order.filled", 2)]
    assert seqs(b, "positions") == [("position.opened", 1)]
    assert await bus.last_seq("acct_a", "positions") == 2
    assert await bus.last_seq("acct_b", "orders") == 0

    later = await bus.publish([Event("acct_a", "position.updated", {})])
    assert seqs(later, "positions") == [("position.updated", 3)]


async def test_every_event_also_goes_to_the_events_channel_in_order() -> None:
    bus = MemoryBus()
    names = ["order.created", "order.filled", "position.opened", "account.updated", "server.shutdown"]
    out = await bus.publish([Event("acct_a", name, {"n": i}) for i, name in enumerate(names)])
    assert seqs(out, EVENTS_CHANNEL) == [(name, i + 1) for i, name in enumerate(names)]
    # An event whose own channel is `events` is sequenced there once, not twice.
    assert len(out) == 2 * len(names) - 1
    own = [d for d in out if d.channel != EVENTS_CHANNEL]
    assert [d.channel for d in own] == ["orders", "orders", "positions", "account"]


async def test_history_since_returns_what_came_after() -> None:
    bus = MemoryBus()
    await bus.publish([Event("acct_a", "order.created", {"n": n}) for n in range(5)])
    since_two = await bus.history("acct_a", "orders", 2)
    assert since_two is not None
    assert [(d.seq, d.event.data["n"]) for d in since_two] == [(3, 2), (4, 3), (5, 4)]
    everything = await bus.history("acct_a", EVENTS_CHANNEL, 0)
    assert everything is not None and [d.seq for d in everything] == [1, 2, 3, 4, 5]
    assert await bus.history("acct_a", "orders", 5) == []
    assert await bus.history("acct_a", "positions", 0) == []
    assert await bus.history("acct_b", "orders", 0) == []


async def test_history_that_no_longer_reaches_back_is_none() -> None:
    bus = MemoryBus(history=3)
    await bus.publish([Event("acct_a", "order.created", {"n": n}) for n in range(5)])
    assert await bus.history("acct_a", "orders", 0) is None
    assert await bus.history("acct_a", "orders", 1) is None
    kept = await bus.history("acct_a", "orders", 2)
    assert kept is not None and [d.seq for d in kept] == [3, 4, 5]


async def test_subscriber_receives_published_deliveries() -> None:
    bus = MemoryBus()
    got: list[Delivery] = []

    async def consume() -> None:
        async for delivery in bus.subscribe():
            got.append(delivery)
            if len(got) == 4:
                return

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)  # the subscription registers when its iteration starts
    published = await bus.publish([Event("acct_a", "order.created", {}), Event("acct_b", "position.opened", {})])
    await asyncio.wait_for(consumer, 5)
    assert got == published
    assert [(d.channel, d.seq) for d in got] == [("orders", 1), ("events", 1), ("positions", 1), ("events", 1)]


async def test_close_ends_subscriptions() -> None:
    bus = MemoryBus()
    got: list[Delivery] = []

    async def consume() -> None:
        async for delivery in bus.subscribe():
            got.append(delivery)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    await bus.publish([Event("acct_a", "order.created", {})])
    await bus.close()
    await asyncio.wait_for(consumer, 5)
    assert [d.event.event for d in got] == ["order.created", "order.created"]
