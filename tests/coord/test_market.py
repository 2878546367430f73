"""rt/coord/market: one market for every instance. The holder of the market role steps the feed and sends each step;
every instance applies what it hears, drops steps of a deposed holder, and a new holder walks on from the last
prices it applied."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from rt.coord import Ticks
from rt.coord.market import MARKET, Market
from rt.coord.memory import MemoryTicks
from rt.coord.redis import RedisTicks, ticks_json
from rt.coord.roles import Roles
from rt.exchanges import Ticker
from rt.exchanges.feed import MarketFeed
from tests.conftest import need_redis
from tests.coord.test_roles import PausableLeases

BTC = "BTC/USDT"
D = Decimal


class Heard(Market):
    """A Market that lets a test await what it applied and what it dropped."""

    def __init__(self, feed: MarketFeed, channel: RedisTicks | MemoryTicks) -> None:
        super().__init__(feed, channel)
        self.heard: asyncio.Queue[tuple[bool, Ticks]] = asyncio.Queue()

    def receive(self, ticks: Ticks) -> bool:
        applied = super().receive(ticks)
        self.heard.put_nowait((applied, ticks))
        return applied

    async def next_applied(self, token: int | None = None) -> Ticks:
        while True:
            applied, ticks = await self.heard.get()
            if applied and (token is None or ticks.token == token):
                return ticks


@dataclass
class Node:
    leases: PausableLeases
    market: Heard
    roles: Roles
    seen: list[Ticker] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _node(url: str, prefix: str, name: str, start: Decimal) -> Node:
    leases = PausableLeases(url, prefix, name)
    feed = MarketFeed({BTC: start}, interval=0.05, volatility=0.001)
    market = Heard(feed, RedisTicks(leases, url, prefix))
    roles = Roles(leases, 600)

    async def gained(token: int) -> None:
        market.lead(token)

    roles.role(MARKET, gained, market.follow)
    node = Node(leases, market, roles)
    feed.listen(node.seen.append)
    return node


@pytest.fixture
async def redis_url(redis_prefix: str) -> AsyncIterator[str]:
    url = await need_redis()
    yield url
    client = aioredis.Redis.from_url(url)
    keys = [key async for key in client.scan_iter(f"{redis_prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_every_instance_applies_the_holders_steps_and_a_new_holder_walks_on_from_them(
    redis_url: str, redis_prefix: str
) -> None:
    a = _node(redis_url, redis_prefix, "a", D(100))
    b = _node(redis_url, redis_prefix, "b", D(200))  # a different start, to tell whose prices a step walks on from
    try:
        for node in (a, b):
            node.tasks.append(asyncio.create_task(node.market.run()))
        a.tasks.append(asyncio.create_task(a.roles.run()))
        await a.market.next_applied()  # a holds the market and its steps come back to it
        b.tasks.append(asyncio.create_task(b.roles.run()))
        for _ in range(5):
            step = await b.market.next_applied()
        old_token = step.token
        assert a.roles.token(MARKET) == old_token and not b.roles.held(MARKET)
        while a.seen[-1] != b.seen[-1]:
            await a.market.next_applied()
        # The same ticks, in the same order, on both: b's since it first heard one.
        first = a.seen.index(b.seen[1])
        assert b.seen[1:] == a.seen[first : first + len(b.seen) - 1]
        assert all(abs(t.last - 100) < 5 for t in b.seen[1:])  # b's own start (200) is gone
        # Numbered by the holder: one more each step, the same number on every instance (the hub's seq).
        assert [t.seq for t in a.seen[first : first + 3]] == [a.seen[first].seq + n for n in range(3)]

        a.leases.paused = True  # a stops answering: b takes over once a's lease has run out
        while True:
            step = await b.market.next_applied()
            if step.token != old_token:
                break
        assert step.token > old_token and b.roles.held(MARKET)
        last_of_a = b.seen[-2].last
        assert abs(step.tickers[0].last / last_of_a - 1) < D("0.01")
        assert step.tickers[0].seq == b.seen[-2].seq + 1  # the new holder numbers on from the last tick
        # A step a sends now under its old token is refused by the lease check in Redis...
        late = Ticks(old_token, (Ticker(BTC, D(499), D(501), D(500), 1),))
        assert await a.market.channel.publish(MARKET, late) is False
        # ...and one that got onto the channel (sent just before the takeover) is dropped by every instance.
        client = aioredis.Redis.from_url(redis_url)
        await client.publish(f"{redis_prefix}:ticks", ticks_json(late))
        await client.aclose()
        while True:
            applied, ticks = await b.market.heard.get()
            if ticks == late:
                break
        assert applied is False and b.market.dropped >= 1
        # a knows the token for its own: it applied those steps when it made them, and applies none heard again.
        await a.market.next_applied(b.roles.token(MARKET))
        for node in (a, b):
            assert all(t.last != 500 for t in node.seen)
    finally:
        for node in (a, b):
            for task in node.tasks:
                task.cancel()
            await asyncio.gather(*node.tasks, return_exceptions=True)
            node.leases.paused = False
            await node.leases.close()


async def test_a_step_under_an_older_token_than_one_heard_is_dropped() -> None:
    feed = MarketFeed({BTC: D(100)}, interval=0)
    market = Market(feed, MemoryTicks())
    assert market.receive(Ticks(2, (Ticker(BTC, D(109), D(111), D(110), 5),)))
    assert not market.receive(Ticks(1, (Ticker(BTC, D(89), D(91), D(90), 6),)))
    assert market.receive(Ticks(2, (Ticker(BTC, D(119), D(121), D(120), 7),)))
    ticker = feed.ticker(BTC)
    assert ticker is not None and (ticker.last, ticker.ts_ms) == (D(120), 7)
    assert market.dropped == 1


async def test_alone_the_holder_hears_its_own_steps() -> None:
    feed = MarketFeed({BTC: D(100)}, interval=0.01, seed=7)
    seen: list[Ticker] = []
    feed.listen(seen.append)
    market = Heard(feed, MemoryTicks())
    runner = asyncio.create_task(market.run())
    await asyncio.sleep(0)  # the subscription is made when run() starts
    market.lead(1)
    try:
        steps = [(await market.next_applied(1)).tickers[0] for _ in range(3)]
    finally:
        await market.follow()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert seen[:3] == steps
    assert len({t.last for t in steps}) == 3
