"""The durable dead man's switch on both twins: deadlines armed, moved, due and fired once; sessions watched, their
orders kept, their heartbeats moved on and lapsed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from rt.coord.deadman import Deadman, Lapsed, RedisDeadman, open_deadman
from tests.conftest import need_redis

BEAT_MS = 150


@pytest.fixture(params=["memory", "redis"])
async def deadman(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Deadman]:
    url = await need_redis() if request.param == "redis" else ""
    made = open_deadman(url, redis_prefix, beat_ttl_ms=BEAT_MS)
    try:
        yield made
    finally:
        await made.close()
        if url:
            await drop_keys(url, redis_prefix)


async def drop_keys(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = await client.keys(f"{prefix}:*")
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def until(check: Callable[[], Awaitable[bool]], within: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not reached"
        await asyncio.sleep(0.02)


async def test_a_deadline_is_due_once_it_passes_and_fired_forgets_it(deadman: Deadman) -> None:
    deadline = await deadman.arm("acct_a", 100)
    await deadman.arm("acct_b", 60_000)
    assert await deadman.due() == []

    async def a_due() -> bool:
        return await deadman.due() == [("acct_a", deadline)]

    await until(a_due)
    await deadman.fired("acct_a", deadline)
    assert await deadman.due() == []


async def test_renewing_moves_the_deadline_and_zero_disarms_it(deadman: Deadman) -> None:
    first = await deadman.arm("acct_a", 100)
    second = await deadman.arm("acct_a", 60_000)
    assert second > first
    await asyncio.sleep(0.15)  # past the first deadline: the renewal replaced it
    assert await deadman.due() == []
    await deadman.arm("acct_b", 0)
    await deadman.disarm("acct_b")
    assert await deadman.due() == []


async def test_a_deadline_moved_while_it_fired_is_kept(deadman: Deadman) -> None:
    """The sweeper canceled for the old deadline; the client renewed meanwhile: the new one still stands."""
    old = await deadman.arm("acct_a", 0)
    new = await deadman.arm("acct_a", 0)
    assert new >= old
    if new == old:  # the same millisecond: move it for real
        await asyncio.sleep(0.002)
        new = await deadman.arm("acct_a", 0)
    await deadman.fired("acct_a", old)
    assert await deadman.due() == [("acct_a", new)]


async def test_a_watched_session_beaten_does_not_lapse_and_one_left_alone_does(deadman: Deadman) -> None:
    await deadman.watch("ses_live", "acct_a", ["ord_1"])
    await deadman.watch("ses_dead", "acct_a", ["ord_2", "ord_3"])
    await deadman.placed("ses_dead", "ord_4")
    await deadman.placed("ses_unknown", "ord_5")  # not watched: nothing kept

    async def dead_lapsed() -> bool:
        assert await deadman.beat(["ses_live"]) == []
        lapsed = await deadman.lapsed()
        assert all(lapse.session_id == "ses_dead" for lapse in lapsed)
        return bool(lapsed)

    await until(dead_lapsed)
    assert await deadman.lapsed() == [Lapsed("ses_dead", "acct_a", ("ord_2", "ord_3", "ord_4"))]
    await deadman.forget("ses_dead")
    assert await deadman.lapsed() == []
    assert await deadman.beat(["ses_unknown", "ses_dead"]) == ["ses_unknown", "ses_dead"]


async def test_a_forgotten_session_never_lapses_and_gets_no_orders(deadman: Deadman) -> None:
    await deadman.watch("ses_a", "acct_a", [])
    await deadman.forget("ses_a")
    await deadman.placed("ses_a", "ord_1")
    await asyncio.sleep(BEAT_MS / 1000 + 0.05)
    assert await deadman.lapsed() == []
    assert await deadman.beat(["ses_a"]) == ["ses_a"]  # its holder writes it again whole, if it is still open


async def test_redis_keeps_it_for_every_instance(redis_prefix: str) -> None:
    """What one instance writes, another (the sweeper's) reads."""
    url = await need_redis()
    holder, sweeper = RedisDeadman(url, redis_prefix, BEAT_MS), RedisDeadman(url, redis_prefix, BEAT_MS)
    try:
        assert not sweeper.settled(0)  # nothing answered yet
        deadline = await holder.arm("acct_a", 0)
        await holder.watch("ses_a", "acct_a", ["ord_1"])
        assert await sweeper.due() == [("acct_a", deadline)]
        assert sweeper.settled(0) and not sweeper.settled(60)

        async def lapsed() -> bool:
            return await sweeper.lapsed() == [Lapsed("ses_a", "acct_a", ("ord_1",))]

        await until(lapsed)
    finally:
        await holder.close()
        await sweeper.close()
        await drop_keys(url, redis_prefix)


async def test_a_failed_call_unsettles_redis_until_it_answers_again() -> None:
    unreachable = RedisDeadman("redis://127.0.0.1:1/0", "rt-test")
    try:
        with pytest.raises((aioredis.ConnectionError, OSError)):
            await unreachable.beat([])
        assert not unreachable.settled(0)
    finally:
        await unreachable.close()
