"""The events table is the outbox: an event whose publish a crash cut off after its write committed is published
after all, once, and an event the bus has is never published again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rt.records.events import Delivery, Event
from tests.engine.conftest import Rig


async def test_events_whose_publish_was_lost_after_the_commit_are_published_by_the_relay(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    heard: list[Delivery] = []

    async def listen() -> None:
        async for delivery in rig.bus.subscribe():
            heard.append(delivery)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0)
    publish = rig.bus.publish

    async def lost(events: list[Event]) -> Any:
        raise ConnectionError("the process died between the commit and the publish")

    monkeypatch.setattr(rig.bus, "publish", lost)
    placed = await rig.order("buy", "1")  # stored: the caller hears it traded, not that the bus was down
    monkeypatch.setattr(rig.bus, "publish", publish)
    (stored,) = (await rig.store.list_orders(rig.account_id, None, None, None, 10, 0))[0]
    assert stored.id == placed.id
    assert heard == []
    try:
        assert await rig.engine.relay(older_than_s=0) > 0
        await asyncio.sleep(0)
        names = [d.event.event for d in heard if d.channel != "events"]
        assert "order.created" in names and "order.filled" in names
        assert any(d.event.data.get("id") == stored.id for d in heard)
        # Published now, and marked so: the relay has nothing more.
        assert await rig.engine.relay(older_than_s=0) == 0
    finally:
        listener.cancel()


async def test_a_published_event_is_marked_and_never_relayed(rig: Rig) -> None:
    await rig.order("buy", "1")
    assert await rig.store.unpublished_events(2**62, 10) != []
    await rig.engine.flush_sent()
    assert await rig.store.unpublished_events(2**62, 10) == []
    assert await rig.engine.relay(older_than_s=0) == 0


async def test_only_the_process_doing_the_tick_work_relays(rig: Rig) -> None:
    await rig.order("buy", "1")
    rig.engine.protects = False
    assert await rig.engine.relay(older_than_s=0) == 0
    rig.engine.protects = True
    assert await rig.engine.relay(older_than_s=0) > 0


async def test_after_a_restart_an_event_already_in_the_memory_bus_history_is_not_relayed_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lost(events: list[Event]) -> Any:
        raise ConnectionError("the process died between the commit and the publish")

    monkeypatch.setattr(rig.bus, "publish", lost)
    await rig.order("buy", "1")
    monkeypatch.undo()
    # The next process restores its history (and sequences) from the stored events, the unpublished ones included.
    restarted = await rig.restart()
    bus = restarted.bus
    await bus.restore(restarted.store)
    channels = ("orders", "positions", "account", "events")

    async def seqs() -> list[int]:
        return [await bus.last_seq(rig.account_id, channel) for channel in channels]

    before = await seqs()
    assert before[0] > 0
    assert await restarted.engine.relay(older_than_s=0) > 0
    # Marked published, and delivered no second time: no sequence moved.
    assert await seqs() == before
    assert await restarted.store.unpublished_events(2**62, 10) == []
