"""Shared fixtures: the limiter twins, Redis on a test database, temporary data dirs."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from rt.auth.limiter import Limiter, open_limiter
from tests.pg import POSTGRES_URL, postgres_available

# A database of its own so tests never touch data of anything else on this Redis.
REDIS_URL = os.environ.get("RT_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
REQUIRE_SERVICES = os.environ.get("RT_REQUIRE_SERVICES") == "1"


async def redis_available() -> bool:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
        return True
    except (OSError, aioredis.RedisError):
        return False
    finally:
        await client.aclose()


async def need_redis() -> str:
    """The test Redis URL; skip (or fail, under RT_REQUIRE_SERVICES=1) when Redis is not reachable."""
    if not await redis_available():
        message = f"Redis is not reachable at {REDIS_URL} (start redis-server, or set RT_TEST_REDIS_URL)"
        if REQUIRE_SERVICES:
            pytest.fail(message + "; RT_REQUIRE_SERVICES=1 requires it")
        pytest.skip(message)
    return REDIS_URL


async def need_postgres() -> str:
    """The test PostgreSQL server's maintenance URL (tests.pg makes databases on it); skip (or fail, under
    RT_REQUIRE_SERVICES=1) when PostgreSQL is not reachable."""
    if not await postgres_available():
        message = f"PostgreSQL is not reachable at {POSTGRES_URL} (start it, or set RT_TEST_POSTGRES_URL)"
        if REQUIRE_SERVICES:
            pytest.fail(message + "; RT_REQUIRE_SERVICES=1 requires it")
        pytest.skip(message)
    return POSTGRES_URL


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return f"rt-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Limiter]:
    """Each limiter test runs against both twins."""
    made = open_limiter(await need_redis(), redis_prefix) if request.param == "redis" else open_limiter()
    try:
        yield made
    finally:
        await made.close()
