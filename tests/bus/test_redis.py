"""rt/bus/redis: the reading connection stays quiet while nothing happens, and a real loss is logged once and healed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from rt.bus import EVENTS_CHANNEL, Delivery, Event
from rt.bus.redis import RedisBus
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


async def reader_ids(admin: aioredis.Redis, prefix: str) -> list[str]:
    clients = await admin.client_list()
    return [str(c["id"]) for c in clients if c.get("name") == f"{prefix}:bus"]


async def until_reader(admin: aioredis.Redis, prefix: str) -> None:
    for _ in range(200):
        if await reader_ids(admin, prefix):
            await asyncio.sleep(0.1)  # its first XREAD is issued right after it connects
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the bus never opened its reading connection")


def losses(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rt.bus.redis" and r.getMessage() == LOST]


async def test_an_idle_bus_is_silent_for_several_read_periods(
    caplog: pytest.LogCaptureFixture, redis_prefix: str
) -> None:
    caplog.set_level(logging.INFO, logger="rt.bus.redis")
    async with reading(await need_redis(), redis_prefix) as (bus, received):
        await asyncio.sleep(11)  # more than two of the 5 s blocking reads, on redis-py's default read timeout
        assert losses(caplog) == []
        await bus.publish([Event("acct_idle", "order.filled", {"n": 1})])
        delivery = await asyncio.wait_for(received.get(), 5)
    assert delivery.event.data == {"n": 1}


async def test_a_short_read_timeout_in_the_url_is_respected(
    caplog: pytest.LogCaptureFixture, redis_prefix: str
) -> None:
    caplog.set_level(logging.INFO, logger="rt.bus.redis")
    url = (await need_redis()) + "?socket_timeout=0.5"
    async with reading(url, redis_prefix) as (bus, received):
        await asyncio.sleep(2)
        assert losses(caplog) == []
        await bus.publish([Event("acct_idle", "order.filled", {"n": 2})])
        delivery = await asyncio.wait_for(received.get(), 5)
    assert delivery.event.data == {"n": 2}


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
