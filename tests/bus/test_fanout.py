"""Both twins of the bus: every subscriber sees every delivery, one that falls behind is told and the others go on,
and an event id is published once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from rt.bus import Bus, BusLagged
from rt.bus.memory import MemoryBus
from rt.bus.redis import RedisBus
from rt.records.events import Delivery, Event
from tests.bus.test_redis import readers, until_reader
from tests.conftest import need_redis

BOUND = 8


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Bus]:
    if request.param == "memory":
        yield MemoryBus(bound=BOUND)
        return
    url = await need_redis()
    made = RedisBus(url, redis_prefix, bound=BOUND)
    try:
        yield made
    finally:
        await made.close()
        admin = aioredis.Redis.from_url(url)
        keys = [key async for key in admin.scan_iter(f"{redis_prefix}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


class Consumer:
    """A subscription iterated in a task, into a queue."""

    def __init__(self, bus: Bus) -> None:
        self.got: asyncio.Queue[Delivery] = asyncio.Queue()
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run(bus))

    async def _run(self, bus: Bus) -> None:
        try:
            async for delivery in bus.subscribe():
                self.got.put_nowait(delivery)
        except BusLagged as exc:
            self.error = exc

    async def take(self, n: int) -> list[Delivery]:
        return [await asyncio.wait_for(self.got.get(), 5) for _ in range(n)]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def subscribed(bus: Bus, redis_prefix: str) -> None:
    """Until the subscriptions started so far see every publish."""
    await asyncio.sleep(0)  # a subscription registers when its iteration starts
    if isinstance(bus, RedisBus):
        admin = aioredis.Redis.from_url(await need_redis())
        try:
            await until_reader(admin, redis_prefix)
        finally:
            await admin.aclose()


def key(d: Delivery) -> tuple[str, str, int, object]:
    return (d.event.id, d.channel, d.seq, d.event.data)


async def test_every_subscriber_gets_every_delivery_in_order(bus: Bus, redis_prefix: str) -> None:
    consumers = [Consumer(bus) for _ in range(3)]
    await subscribed(bus, redis_prefix)
    published = await bus.publish([Event("acct_f", "order.created", {"n": 1}), Event("acct_f", "order.filled", {})])
    published += await bus.publish([Event("acct_g", "position.opened", {"n": 2})])
    assert len(published) == 6
    for consumer in consumers:
        assert [key(d) for d in await consumer.take(6)] == [key(d) for d in published]
    for consumer in consumers:
        await consumer.stop()


async def test_a_subscriber_that_falls_behind_is_told_and_the_others_go_on(bus: Bus, redis_prefix: str) -> None:
    steady = Consumer(bus)
    stalled = bus.subscribe()
    first = asyncio.ensure_future(anext(stalled))  # it starts, then reads no further for a while
    await subscribed(bus, redis_prefix)
    published: list[Delivery] = []
    for n in range(BOUND + 4):
        published += await bus.publish([Event("acct_l", "server.shutdown", {"n": n})])
        assert [key(d) for d in await steady.take(1)] == [key(d) for d in published[-1:]]
    # The stalled one gets what fit into its queue, then the error, instead of holding up the steady one.
    kept = [await asyncio.wait_for(first, 5)]
    with pytest.raises(BusLagged):
        async with asyncio.timeout(5):
            async for delivery in stalled:
                kept.append(delivery)
    assert [key(d) for d in kept] == [key(d) for d in published[: BOUND + 1]]
    # Subscribing again works, and the steady subscriber never noticed.
    again = Consumer(bus)
    await subscribed(bus, redis_prefix)
    later = await bus.publish([Event("acct_l", "server.shutdown", {"n": "later"})])
    assert [key(d) for d in await again.take(1)] == [key(d) for d in later]
    assert [key(d) for d in await steady.take(1)] == [key(d) for d in later]
    assert steady.error is None
    await again.stop()
    await steady.stop()


async def test_an_event_id_is_published_once(bus: Bus, redis_prefix: str) -> None:
    consumer = Consumer(bus)
    await subscribed(bus, redis_prefix)
    first = Event("acct_o", "order.created", {"n": 1})
    out = await bus.publish([first, Event("acct_o", "order.filled", {"n": 2})])
    assert [(d.channel, d.seq) for d in out] == [("orders", 1), ("events", 1), ("orders", 2), ("events", 2)]
    # A relay publishing `first` again (alone, in a batch, twice in one batch) sequences nothing for it.
    assert await bus.publish([first]) == []
    third = Event("acct_o", "order.canceled", {"n": 3})
    again = await bus.publish([first, third, third])
    assert [(d.event.id, d.channel, d.seq) for d in again] == [(third.id, "orders", 3), (third.id, "events", 3)]
    got = await consumer.take(6)
    assert [key(d) for d in got] == [key(d) for d in out + again]
    assert await bus.last_seq("acct_o", "orders") == 3
    history = await bus.history("acct_o", "orders", 0)
    assert history is not None and [d.event.data["n"] for d in history] == [1, 2, 3]
    assert consumer.got.empty()
    await consumer.stop()


async def test_close_ends_every_subscription(bus: Bus, redis_prefix: str) -> None:
    consumers = [Consumer(bus) for _ in range(2)]
    await subscribed(bus, redis_prefix)
    await bus.publish([Event("acct_c", "server.shutdown", {})])
    for consumer in consumers:
        await consumer.take(1)
    await bus.close()
    for consumer in consumers:
        await asyncio.wait_for(consumer.task, 5)
        assert consumer.error is None
    assert [d async for d in bus.subscribe()] == []


async def test_the_memory_twin_publishes_an_id_again_after_ten_minutes() -> None:
    now = [1000.0]
    bus = MemoryBus(clock=lambda: now[0])
    event = Event("acct_t", "server.shutdown", {})
    assert len(await bus.publish([event])) == 1
    now[0] += 599
    assert await bus.publish([event]) == []
    now[0] += 2
    assert [d.seq for d in await bus.publish([event])] == [2]


async def test_redis_remembers_a_published_id_for_ten_minutes(redis_prefix: str) -> None:
    url = await need_redis()
    bus = RedisBus(url, redis_prefix)
    admin = aioredis.Redis.from_url(url)
    try:
        event = Event("acct_t", "server.shutdown", {})
        await bus.publish([event])
        assert 590 <= await admin.ttl(f"{redis_prefix}:pub:{event.id}") <= 600
        # Another instance (another bus on the same Redis) does not publish it again either.
        other = RedisBus(url, redis_prefix)
        assert await other.publish([event]) == []
        await other.close()
    finally:
        await bus.close()
        keys = [k async for k in admin.scan_iter(f"{redis_prefix}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


async def test_redis_reads_once_for_all_subscribers_and_stops_when_they_leave(redis_prefix: str) -> None:
    url = await need_redis()
    bus = RedisBus(url, redis_prefix)
    admin = aioredis.Redis.from_url(url)
    try:
        consumers = [Consumer(bus) for _ in range(3)]
        await subscribed(bus, redis_prefix)
        assert len(await readers(admin, redis_prefix)) == 1
        for consumer in consumers:
            await consumer.stop()
        deadline = time.monotonic() + 5
        while await readers(admin, redis_prefix):
            assert time.monotonic() < deadline, "the reading connection stayed open without subscribers"
            await asyncio.sleep(0.02)
        # A later subscriber starts a reader again.
        late = Consumer(bus)
        await subscribed(bus, redis_prefix)
        out = await bus.publish([Event("acct_r", "server.shutdown", {})])
        assert [key(d) for d in await late.take(1)] == [key(d) for d in out]
        await late.stop()
    finally:
        await bus.close()
        await admin.aclose()


async def test_redis_reader_errors_reach_every_subscriber_and_a_new_one_reads_again(redis_prefix: str) -> None:
    url = await need_redis()
    bus = RedisBus(url, redis_prefix)
    admin = aioredis.Redis.from_url(url)
    try:
        await admin.set(f"{redis_prefix}:bus", "not a stream")  # every read of it fails with WRONGTYPE
        for _ in range(2):
            with pytest.raises(aioredis.ResponseError):
                async with asyncio.timeout(5):
                    async for _delivery in bus.subscribe():
                        pass
        await admin.delete(f"{redis_prefix}:bus")
        consumer = Consumer(bus)
        await subscribed(bus, redis_prefix)
        out = await bus.publish([Event("acct_e", "server.shutdown", {})])
        assert [key(d) for d in await consumer.take(1)] == [key(d) for d in out]
        await consumer.stop()
    finally:
        await bus.close()
        keys = [k async for k in admin.scan_iter(f"{redis_prefix}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()
