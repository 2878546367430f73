"""rt/bus: an event that went through the bus (Redis Streams: live fan-out and history) comes back with the same
`data` bytes as the live one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from rt import wire
from rt.bus import Bus, open_bus
from rt.records.events import Delivery, Event
from tests.conftest import need_redis

PROBE = "acct_probe"
AT = datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)


def position_data() -> dict[str, object]:
    return {
        "id": "pos_1",
        "side": "short",
        "entry_price": Decimal("46200.50"),
        "quantity": Decimal("0.010"),
        "unrealized_pnl": Decimal("-0.00"),
        "realized_pnl": Decimal("-120.0"),
        "fee": Decimal("0.0000462005"),
        "stop_loss": None,
        "created_at": AT,
        "checks": ("position_size", "exposure"),
        "utilization": round(-0.00001, 4),
    }


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Bus]:
    url = await need_redis() if request.param == "redis" else ""
    made = open_bus(url, redis_prefix)
    try:
        yield made
    finally:
        await made.close()
        if url:
            client = aioredis.Redis.from_url(url)
            keys = [k async for k in client.scan_iter(f"{redis_prefix}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


async def first_delivery(bus: Bus) -> asyncio.Task[Delivery]:
    """A task that returns the first delivery other than a probe, once its subscription reads from the head of the
    stream: a probe published after it came through."""
    probed = asyncio.Event()

    async def read() -> Delivery:
        async for delivery in bus.subscribe():
            if delivery.event.account_id != PROBE:
                return delivery
            probed.set()
        raise AssertionError("the bus ended")

    reader = asyncio.create_task(read())
    async with asyncio.timeout(5):
        while not probed.is_set():
            await bus.publish([Event(PROBE, "order.filled", {})])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probed.wait(), 0.05)
    return reader


async def test_an_event_through_the_bus_keeps_its_data_bytes(bus: Bus) -> None:
    live = Event("acct_a", "position.opened", position_data())
    live_bytes = wire.dumps(live.data)
    reader = await first_delivery(bus)
    (own, _) = await bus.publish([live])

    fanned_out = await asyncio.wait_for(reader, 5)
    (history,) = await bus.history("acct_a", "positions", 0) or []
    for came_back in (fanned_out, history):
        assert (came_back.channel, came_back.seq) == (own.channel, own.seq)
        assert (came_back.event.id, came_back.event.event, came_back.event.ts_us) == (live.id, live.event, live.ts_us)
        assert wire.dumps(came_back.event.data) == live_bytes
    assert b'"unrealized_pnl":0.0,' in live_bytes and b'"utilization":0.0}' in live_bytes
