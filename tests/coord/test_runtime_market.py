"""The market role in the runtime: alone, a process holds it and everything ticks as before; with Redis, the instance
holding it does the tick work (protective closes, stored marks, resting paper fills) and another takes over when it
stops."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis

from rt.config import Settings
from rt.coord import Ticks
from rt.coord.market import MARKET
from rt.exchanges import Ticker
from rt.exchanges.paper import PaperExchange
from rt.runtime import Runtime, open_runtime
from tests.conftest import need_redis

SYMBOLS = ("BTC/USDT=100",)


def _heard(runtime: Runtime) -> asyncio.Queue[Ticker]:
    queue: asyncio.Queue[Ticker] = asyncio.Queue()
    runtime.feed.listen(queue.put_nowait)
    return queue


def _paper(runtime: Runtime) -> PaperExchange:
    paper = runtime.engine.venues.paper
    assert isinstance(paper, PaperExchange)
    return paper


async def test_alone_the_process_holds_the_market_and_does_the_tick_work(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), paper_tick_ms=10, paper_symbols=SYMBOLS, instance_id="solo")
    async with open_runtime(settings, background=True) as runtime:
        heard = _heard(runtime)
        first, second = await heard.get(), await heard.get()
        assert first.ts_ms <= second.ts_ms
        assert runtime.roles.held(MARKET) and runtime.instance_id == "solo"
        assert runtime.engine.protects and _paper(runtime).matching


@contextlib.asynccontextmanager
async def _instance(tmp_path: Path, name: str, url: str, prefix: str) -> AsyncIterator[Runtime]:
    settings = Settings(
        data_dir=str(tmp_path / name),
        redis_url=url,
        redis_prefix=prefix,
        instance_id=name,
        lease_ttl_ms=600,
        paper_tick_ms=20,
        paper_symbols=SYMBOLS,
    )
    async with open_runtime(settings, background=True) as runtime:
        yield runtime


async def test_the_holder_does_the_tick_work_and_another_takes_it_over(tmp_path: Path, redis_prefix: str) -> None:
    url = await need_redis()
    try:
        async with contextlib.AsyncExitStack() as b_stack:
            async with _instance(tmp_path, "a", url, redis_prefix) as a:
                heard_a = _heard(a)
                await heard_a.get()  # a holds the market and its steps come back to it
                b = await b_stack.enter_async_context(_instance(tmp_path, "b", url, redis_prefix))
                heard_b = _heard(b)
                await heard_b.get()  # b applies a's steps
                assert a.roles.held(MARKET) and not b.roles.held(MARKET)
                assert a.engine.protects and _paper(a).matching
                assert not b.engine.protects and not _paper(b).matching
                token = a.roles.token(MARKET)
                snapshot = a.roles.snapshot()[MARKET]
                assert token is not None and (snapshot["held"], snapshot["token"]) == (True, token)
                assert b.roles.snapshot()[MARKET]["held"] is False
            # a stopped and released the market: b takes it at its next try and steps on from a's last price.
            async with asyncio.timeout(5):
                while not b.roles.held(MARKET):
                    await heard_b.get()
            assert b.roles.token(MARKET) == token + 1
            assert b.engine.protects and _paper(b).matching
            await heard_b.get()
    finally:
        client = aioredis.Redis.from_url(url)
        keys = [key async for key in client.scan_iter(f"{redis_prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_a_holder_paused_past_its_lease_stops_the_tick_work_on_the_next_tick_it_hears(
    tmp_path: Path, redis_prefix: str
) -> None:
    url = await need_redis()
    try:
        async with _instance(tmp_path, "a", url, redis_prefix) as a:
            await _heard(a).get()
            token = a.roles.token(MARKET)
            assert token is not None and a.engine.protects
            # The whole process stops (a GC pause, SIGSTOP) for longer than the 600 ms lease: the loop is blocked.
            time.sleep(0.7)  # noqa: ASYNC251
            # Before its renewal runs, a hears a step of the instance that took over meanwhile.
            current = a.feed.ticker("BTC/USDT")
            assert current is not None
            assert a.market.receive(Ticks(token + 1, (current,)))
            assert not a.engine.protects and not _paper(a).matching
    finally:
        client = aioredis.Redis.from_url(url)
        keys = [key async for key in client.scan_iter(f"{redis_prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
