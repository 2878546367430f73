"""rt/auth/limiter: GCRA buckets per key and lockouts per IP, on both twins."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rt.auth.limiter import Limiter, gcra
from rt.auth.limiter.memory import MemoryLimiter
from rt.auth.limiter.redis import RedisLimiter
from tests.conftest import need_redis


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_fresh_key_gets_burst_then_is_refused(limiter: Limiter) -> None:
    key = unique("key")
    remaining = []
    for _ in range(5):
        decision = await limiter.hit(key, 60, 5)
        assert decision.allowed
        assert decision.limit == 60
        assert decision.retry_after == 0
        remaining.append(decision.remaining)
    assert remaining == [4, 3, 2, 1, 0]

    refused = await limiter.hit(key, 60, 5)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after > 0
    assert refused.reset_after > 0


async def test_buckets_are_per_key(limiter: Limiter) -> None:
    busy, other = unique("busy"), unique("other")
    for _ in range(3):
        assert (await limiter.hit(busy, 60, 3)).allowed
    assert not (await limiter.hit(busy, 60, 3)).allowed

    fresh = await limiter.hit(other, 60, 3)
    assert fresh.allowed
    assert fresh.remaining == 2


async def test_bucket_refills(limiter: Limiter) -> None:
    key = unique("refill")
    # 6000/min is one request every 10 ms: drain the bucket, then wait for it to come back.
    refused = None
    for _ in range(200):
        decision = await limiter.hit(key, 6000, 2)
        if not decision.allowed:
            refused = decision
            break
    assert refused is not None, "a bucket of 2 was never refused"
    assert 0 < refused.retry_after <= 0.02
    await asyncio.sleep(refused.retry_after + 0.03)
    assert (await limiter.hit(key, 6000, 2)).allowed


async def test_lockout_after_threshold(limiter: Limiter) -> None:
    ip, other_ip = "203.0.113.5", "2001:db8::7"
    for _ in range(2):
        assert await limiter.fail(ip, 3, 60, 30) == 0
        assert await limiter.locked(ip) == 0

    locked_for = await limiter.fail(ip, 3, 60, 30)
    assert 0 < locked_for <= 30
    assert 0 < await limiter.locked(ip) <= 30
    # Failing again while locked out still reports the lockout.
    assert await limiter.fail(ip, 3, 60, 30) > 0
    assert await limiter.locked(other_ip) == 0


async def test_a_hit_with_an_ip_checks_its_lockout_in_the_same_call(limiter: Limiter) -> None:
    key, ip, free_ip = unique("locked"), unique("203.0.113.6"), unique("203.0.113.7")
    first = await limiter.hit(key, 60, 3, ip=free_ip)
    assert first.allowed and first.remaining == 2 and first.locked_for == 0
    assert await limiter.fail(ip, 1, 60, 30) == 30
    refused = await limiter.hit(key, 60, 3, ip=ip)
    assert not refused.allowed
    assert 29 < refused.locked_for <= 30
    # The locked-out request took nothing from the bucket.
    after = await limiter.hit(key, 60, 3, ip=free_ip)
    assert after.allowed and after.remaining == 1 and after.locked_for == 0
    assert (await limiter.hit(key, 60, 3)).locked_for == 0


async def test_concurrent_hits_allow_exactly_burst(limiter: Limiter) -> None:
    key = unique("crowd")
    # 1/min: nothing refills during the test, so the count is exact whatever the scheduling.
    decisions = await asyncio.gather(*(limiter.hit(key, 1, 50) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 50
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(50))


async def test_redis_instances_share_one_budget(redis_prefix: str) -> None:
    url = await need_redis()
    first, second = RedisLimiter(url, redis_prefix), RedisLimiter(url, redis_prefix)
    try:
        allowed = 0
        for i in range(20):
            decision = await (first if i % 2 else second).hit("shared", 60, 10)
            allowed += decision.allowed
        assert allowed == 10

        for _ in range(2):
            await first.fail("198.51.100.9", 3, 60, 30)
        await second.fail("198.51.100.9", 3, 60, 30)
        assert await first.locked("198.51.100.9") > 0
    finally:
        await first.close()
        await second.close()


async def test_redis_prefixes_keep_budgets_apart(redis_prefix: str) -> None:
    url = await need_redis()
    first, second = RedisLimiter(url, redis_prefix), RedisLimiter(url, redis_prefix + "-other")
    try:
        assert (await first.hit("key", 60, 1)).allowed
        assert not (await first.hit("key", 60, 1)).allowed
        assert (await second.hit("key", 60, 1)).allowed
    finally:
        await first.close()
        await second.close()


async def test_memory_refill_and_lock_expiry_on_a_fake_clock() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    for _ in range(2):
        assert (await limiter.hit("k", 60, 2)).allowed
    assert not (await limiter.hit("k", 60, 2)).allowed
    clock.now += 1.0
    assert (await limiter.hit("k", 60, 2)).allowed
    assert not (await limiter.hit("k", 60, 2)).allowed

    # Failures further apart than the window never add up to a lockout.
    for _ in range(5):
        assert await limiter.fail("192.0.2.1", 2, 10, 30) == 0
        clock.now += 11
    await limiter.fail("192.0.2.1", 2, 10, 30)
    assert await limiter.fail("192.0.2.1", 2, 10, 30) == 30
    clock.now += 29
    assert await limiter.locked("192.0.2.1") == pytest.approx(1)
    clock.now += 1
    assert await limiter.locked("192.0.2.1") == 0


def test_gcra_with_explicit_times() -> None:
    # 60/min burst 3: one request per second, up to three at once.
    tat = None
    for expected_remaining in (2, 1, 0):
        decision, tat = gcra(100.0, tat, 60, 3)
        assert decision.allowed
        assert decision.remaining == expected_remaining
    assert tat == pytest.approx(103.0)
    assert decision.reset_after == pytest.approx(3.0)

    refused, stored = gcra(100.0, tat, 60, 3)
    assert not refused.allowed
    assert stored is None
    assert refused.remaining == 0
    assert refused.retry_after == pytest.approx(1.0)

    assert not gcra(100.999, tat, 60, 3)[0].allowed
    again, tat = gcra(101.0, tat, 60, 3)
    assert again.allowed
    assert again.remaining == 0
    assert tat == pytest.approx(104.0)

    # A bucket left alone long enough is full again, not fuller.
    full, _ = gcra(500.0, tat, 60, 3)
    assert full.allowed
    assert full.remaining == 2


@settings(max_examples=300, deadline=None, database=None)
@given(
    per_minute=st.integers(min_value=1, max_value=6000),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=300),
)
def test_gcra_never_exceeds_rate_plus_burst(per_minute: int, burst: int, gaps: list[float]) -> None:
    now, tat = 1000.0, None
    allowed: list[float] = []
    for gap in gaps:
        now += gap
        decision, new_tat = gcra(now, tat, per_minute, burst)
        assert decision.allowed == (new_tat is not None)
        if decision.allowed:
            allowed.append(now)
            tat = new_tat
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            window = allowed[j] - start
            assert j - i + 1 <= burst + window * per_minute / 60 + 1
