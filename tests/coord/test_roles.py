"""rt/coord: leases on a real Redis (a prefix of each test's own): one holder at a time, a fencing token that grows
with every holder, a holder whose renewals stop gives the role up before another can gain it, and a graceful
release hands it over at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from rt.coord.memory import MemoryLeases
from rt.coord.redis import RedisLeases
from rt.coord.roles import Roles
from rt.metrics.instruments import LEASE_RENEWALS
from tests.conftest import need_redis

TTL_MS = 600
TTL = TTL_MS / 1000
MARKET = "market"


@dataclass
class Log:
    """What every instance was told, in the order it happened, with the loop time."""

    entries: list[tuple[float, str, str, int]] = field(default_factory=list)
    holders: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, instance: str, what: str, token: int = 0) -> None:
        self.entries.append((asyncio.get_running_loop().time(), instance, what, token))
        self.changed.set()

    async def next_gain(self, after: int = 0) -> tuple[float, str, int]:
        """The first gain recorded after entry `after`."""
        while True:
            for at, instance, what, token in self.entries[after:]:
                if what == "gain":
                    return at, instance, token
            self.changed.clear()
            await self.changed.wait()


class PausableLeases(RedisLeases):
    """A lease client whose calls can be made to hang, as when its process or its network stops answering."""

    paused = False

    async def _gate(self) -> None:
        if self.paused:
            await asyncio.Event().wait()

    async def acquire(self, role: str, ttl_ms: int) -> int | None:
        await self._gate()
        return await super().acquire(role, ttl_ms)

    async def renew(self, role: str, token: int, ttl_ms: int) -> bool:
        await self._gate()
        return await super().renew(role, token, ttl_ms)

    async def release(self, role: str, token: int) -> None:
        await self._gate()
        await super().release(role, token)


@dataclass
class Instance:
    name: str
    leases: PausableLeases
    roles: Roles
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.roles.run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def _instance(name: str, url: str, prefix: str, log: Log) -> Instance:
    leases = PausableLeases(url, prefix, name)
    roles = Roles(leases, TTL_MS)

    async def gained(token: int) -> None:
        assert not log.holders, f"{name} gained {MARKET} while {log.holders} held it"
        log.holders.add(name)
        log.record(name, "gain", token)

    async def lost() -> None:
        log.holders.discard(name)
        log.record(name, "lose")

    roles.role(MARKET, gained, lost)
    return Instance(name, leases, roles)


Start = Callable[[], tuple[list[Instance], Log]]


@pytest.fixture
async def three(redis_prefix: str) -> AsyncIterator[Start]:
    url = await need_redis()
    made: list[Instance] = []
    log = Log()

    def start() -> tuple[list[Instance], Log]:
        for name in ("a", "b", "c"):
            made.append(_instance(name, url, redis_prefix, log))
        for instance in made:
            instance.start()
        return made, log

    try:
        yield start
    finally:
        for instance in made:
            with contextlib.suppress(Exception):
                await instance.stop()
            await instance.leases.close()
        client = aioredis.Redis.from_url(url)
        keys = [key async for key in client.scan_iter(f"{redis_prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def _renewals(result: str) -> float:
    registry = CollectorRegistry()
    registry.register(LEASE_RENEWALS)
    return registry.get_sample_value("rt_lease_renewals_total", {"role": MARKET, "result": result}) or 0.0


def _by_name(instances: list[Instance], name: str) -> Instance:
    return next(i for i in instances if i.name == name)


async def test_one_holder_at_a_time_and_each_new_holder_a_larger_token(three: Start) -> None:
    instances, log = three()
    _, first, token = await log.next_gain()
    tokens = [token]
    seen = [first]
    while len(seen) < 3:
        holder = _by_name(instances, seen[-1])
        mark = len(log.entries)
        await holder.stop()
        _, name, token = await log.next_gain(mark)
        assert name not in seen
        seen.append(name)
        tokens.append(token)
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    assert [i.roles.held(MARKET) for i in instances] == [i.name == seen[-1] for i in instances]
    assert _by_name(instances, seen[-1]).roles.token(MARKET) == tokens[-1]


async def test_a_graceful_stop_hands_the_role_over_at_once(three: Start) -> None:
    instances, log = three()
    _, first, _ = await log.next_gain()
    loop = asyncio.get_running_loop()
    mark = len(log.entries)
    stopped = loop.time()
    await _by_name(instances, first).stop()
    at, second, _ = await log.next_gain(mark)
    assert second != first
    # The lease was deleted, not left to run out: the next try of another instance (every ttl/3) takes it.
    assert at - stopped < TTL / 3 + 0.2


async def test_a_holder_whose_renewals_stop_gives_the_role_up_before_another_gains_it(
    three: Start,
) -> None:
    instances, log = three()
    _, first, old_token = await log.next_gain()
    holder = _by_name(instances, first)
    mark = len(log.entries)
    failed = _renewals("error")
    paused_at = asyncio.get_running_loop().time()
    holder.leases.paused = True
    at, second, new_token = await log.next_gain(mark)
    assert second != first and new_token > old_token
    # Another instance holds the role within the ttl and one retry.
    assert at - paused_at < TTL + TTL / 3 + 0.3
    # The paused holder was told first, before its lease could have run out in Redis.
    lose_at, loser, _, _ = next(e for e in log.entries[mark:] if e[2] == "lose")
    assert loser == first and lose_at < at
    assert _renewals("error") == failed + 1  # rt_lease_renewals_total{role="market",result="error"}
    assert not holder.roles.held(MARKET)
    assert holder.roles.snapshot()[MARKET]["held"] is False


async def test_memory_leases_hold_every_role_in_this_process() -> None:
    roles = Roles(MemoryLeases("solo"), TTL_MS)
    gained: asyncio.Queue[int] = asyncio.Queue()

    async def gain(token: int) -> None:
        gained.put_nowait(token)

    async def lose() -> None:
        gained.put_nowait(-1)

    roles.role(MARKET, gain, lose)
    roles.role("sweeper", gain, lose)
    task = asyncio.create_task(roles.run())
    assert {await gained.get(), await gained.get()} == {1}
    assert roles.held(MARKET) and roles.held("sweeper") and roles.token(MARKET) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [await gained.get(), await gained.get()] == [-1, -1]
    assert not roles.held(MARKET)


async def test_memory_leases_keep_their_roles_through_a_loop_blocked_past_the_ttl(
    caplog: pytest.LogCaptureFixture,
) -> None:
    roles = Roles(MemoryLeases("solo"), TTL_MS)
    events: list[str] = []
    gained = asyncio.Event()

    async def gain(token: int) -> None:
        events.append(f"gain {token}")
        gained.set()

    async def lose() -> None:
        events.append("lose")

    roles.role(MARKET, gain, lose)
    task = asyncio.create_task(roles.run())
    await gained.wait()
    time.sleep(TTL * 1.5)  # noqa: ASYNC251 (a saturated loop: every renewal comes after the lease would have run out)
    assert roles.held(MARKET)
    await asyncio.sleep(TTL)  # the renewals that were due run, late
    assert roles.held(MARKET) and events == ["gain 1"]
    assert not [r for r in caplog.records if "role lost" in r.message]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert events == ["gain 1", "lose"]


def test_a_role_is_registered_once() -> None:
    async def nothing(*_: object) -> None:
        return None

    roles = Roles(MemoryLeases("solo"))
    roles.role(MARKET, nothing, nothing)
    with pytest.raises(ValueError, match="already registered"):
        roles.role(MARKET, nothing, nothing)


async def test_an_instance_whose_store_is_unreachable_gives_its_roles_up_and_takes_none(three: Start) -> None:
    instances, log = three()
    _, holder, _ = await log.next_gain()
    held = _by_name(instances, holder)
    reachable = True

    async def store_answers() -> bool:
        if not reachable:
            raise ConnectionError("PostgreSQL is unreachable")
        return True

    held.roles.fit = store_answers
    reachable = False
    before = len(log.entries)
    unfit = _renewals("unfit")
    # Another instance takes over within a renewal interval and the lease's TTL.
    async with asyncio.timeout(TTL * 3):
        _, next_holder, _ = await log.next_gain(before)
    assert next_holder != holder
    assert _renewals("unfit") > unfit
    # Still unfit, it never takes a role back, even when the holder goes.
    after = len(log.entries)  # before the stop: the next holder may gain the role while it is under way
    await _by_name(instances, next_holder).stop()
    async with asyncio.timeout(TTL * 3):
        _, third, _ = await log.next_gain(after)
    assert third not in (holder, next_holder)
