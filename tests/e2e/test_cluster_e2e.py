"""tests.e2e.cluster: a cluster leaves nothing behind in Redis (every key under its prefix deleted when it ends)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.conftest import need_postgres, need_redis
from tests.e2e.cluster import cluster, delete_prefix

pytestmark = pytest.mark.e2e


async def _keys(redis_url: str, pattern: str) -> list[bytes]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return [key async for key in client.scan_iter(match=pattern)]
    finally:
        await client.aclose()


def test_a_cluster_deletes_every_redis_key_under_its_prefix_when_it_ends(tmp_path: Path) -> None:
    asyncio.run(need_postgres())
    redis_url = asyncio.run(need_redis())
    with cluster(tmp_path, redis_url, 1) as running:
        prefix = running.env["RT_REDIS_PREFIX"]
        with running.servers[0].client(running.key) as admin:
            made = admin.post("/v1/ws/token")  # a token kept in Redis
        assert made.is_success and made.json()["token"], made.text
        written = asyncio.run(_keys(redis_url, f"{prefix}:*"))
        assert any(b":lease:" in key for key in written), written  # the instance holds its roles through Redis
        assert any(b":wstoken:" in key for key in written), written
    assert asyncio.run(_keys(redis_url, f"{prefix}:*")) == []


async def test_delete_prefix_spares_other_prefixes_and_takes_glob_characters_literally() -> None:
    redis_url = await need_redis()
    base = f"rt-test-{uuid.uuid4().hex[:12]}"
    client = aioredis.Redis.from_url(redis_url)
    try:
        mine = [f"{base}*[x]:a", f"{base}*[x]:b:c"]
        others = [f"{base}*[x]b:a", f"{base}a[x]:a", f"{base}x:a", f"{base}*[x]"]
        many = [f"{base}*[x]:many:{n}" for n in range(2500)]  # more than one SCAN page and one UNLINK batch
        async with client.pipeline(transaction=False) as pipe:
            for key in mine + others + many:
                pipe.set(key, "1", ex=60)
            await pipe.execute()
        assert await delete_prefix(redis_url, f"{base}*[x]") == len(mine) + 2500
        assert sorted(await client.keys(f"{base}*")) == sorted(key.encode() for key in others)
    finally:
        async for key in client.scan_iter(match=f"{base}*"):
            await client.unlink(key)
        await client.aclose()
