"""rt/bus/redis: the reading connection stays quiet while nothing happens, and a real loss is logged once and healed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from rt.bus.redis import RedisBus
from rt.records.events import EVENTS_CHANNEL, Delivery, Event
from tests.conftest import need_redis

pytestmark = pytest.mark.redis

LOST = "bus connection lost, resuming"


@contextlib.asynccontextmanager
async def reading(url: str, prefix: str) -> AsyncIterator[tuple[RedisBus, asyncio.Queue[Delivery]]]:
    """A bus whose subscription runs in a task, once its reading connection is up."""
    bus = RedisBus(url, prefix)
    received: asyncio.Queue[Delivery] = asyncio.Queue()

    async def consume() -> None:
        async for delivery in bus.subscribe():
            received.put_nowait(delivery)

    task = asyncio.create_task(consume())
    admin = aioredis.Redis.from_url(url)
    try:
        await until_reader(admin, prefix)
        yield bus, received
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=3)
        await bus.close()
        keys = [key async for key in admin.scan_iter(f"{prefix}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()
    assert done, "the subscription went on reading after it was cancelled"
    assert task.cancelled()


async def readers(admin: aioredis.Redis, prefix: str) -> list[dict[str, str]]:
    return [c for c in await admin.client_list() if c.get("name") == f"{prefix}:bus"]


async def reader_ids(admin: aioredis.Redis, prefix: str) -> list[str]:
    return [str(c["id"]) for c in await readers(admin, prefix)]


async def until_reader(admin: aioredis.Redis, prefix: str) -> None:
    """Until the reading connection has issued its first XREAD: from then on it sees every publish."""
    deadline = time.monotonic() + 5
    while not any(c.get("cmd") == "xread" for c in await readers(admin, prefix)):
        assert time.monotonic() < deadline, "the bus never issued its first read"
        await asyncio.sleep(0.02)


def losses(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rt.bus.redis" and r.getMessage() == LOST]


async def quiet_then_delivers(caplog: pytest.LogCaptureFixture, url: str, prefix: str, idle_s: float, n: int) -> None:
    """Idle for idle_s without a lost connection logged, then an event published is delivered."""
    caplog.set_level(logging.INFO, logger="rt.bus.redis")
    async with reading(url, prefix) as (bus, received):
        await asyncio.sleep(idle_s)
        assert losses(caplog) == []
        await bus.publish([Event("acct_idle", "order.filled", {"n": n})])
        delivery = await asyncio.wait_for(received.get(), 5)
    assert delivery.event.data == {"n": n}


async def test_an_idle_bus_is_silent_for_several_read_periods(
    caplog: pytest.LogCaptureFixture, redis_prefix: str
) -> None:
    # More than two of the 5 s blocking reads, on redis-py's default read timeout.
    await quiet_then_delivers(caplog, await need_redis(), redis_prefix, 11, 1)


async def test_a_short_read_timeout_in_the_url_is_respected(
    caplog: pytest.LogCaptureFixture, redis_prefix: str
) -> None:
    await quiet_then_delivers(caplog, (await need_redis()) + "?socket_timeout=0.5", redis_prefix, 2, 2)


async def test_a_killed_connection_is_logged_once_and_nothing_is_lost(
    caplog: pytest.LogCaptureFixture, redis_prefix: str
) -> None:
    caplog.set_level(logging.INFO, logger="rt.bus.redis")
    url = await need_redis()
    async with reading(url, redis_prefix) as (bus, received):
        # Each event is delivered twice: on its own channel and on `events`.
        await bus.publish([Event("acct_k", "order.filled", {"n": 0})])
        assert [(await asyncio.wait_for(received.get(), 5)).event.data for _ in range(2)] == [{"n": 0}] * 2
        admin = aioredis.Redis.from_url(url)
        try:
            (reader,) = await reader_ids(admin, redis_prefix)
            await admin.execute_command("CLIENT", "KILL", "ID", reader)
            await bus.publish([Event("acct_k", "order.filled", {"n": n}) for n in range(1, 6)])
            got = [await asyncio.wait_for(received.get(), 10) for _ in range(10)]
            assert (await reader_ids(admin, redis_prefix)) != [reader]
        finally:
            await admin.aclose()
        await asyncio.sleep(1)
    for channel in ("orders", EVENTS_CHANNEL):
        on_channel = [d for d in got if d.channel == channel]
        assert [d.event.data["n"] for d in on_channel] == [1, 2, 3, 4, 5]
        assert [d.seq for d in on_channel] == [2, 3, 4, 5, 6]
    assert len(losses(caplog)) == 1
    assert received.empty()


async def test_a_subscription_cancelled_just_after_a_delivery_ends(redis_prefix: str) -> None:
    url = await need_redis()
    for n in range(5):
        async with reading(url, f"{redis_prefix}-{n}") as (bus, received):
            await bus.publish([Event("acct_c", "order.filled", {"n": n})])
            await asyncio.wait_for(received.get(), 5)
        # leaving the block cancels the subscription at once and checks that it ended
