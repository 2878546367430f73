"""Redis twin of the token store: GETDEL makes a token single-use across every instance."""

from __future__ import annotations

import hashlib

import orjson
import redis.asyncio as aioredis

from rt._redis import close_quietly
from rt.auth.principal import Principal
from rt.auth.tokens import TOKEN_TTL, dump, load, new_token


class RedisTokens:
    def __init__(self, url: str, prefix: str = "rt") -> None:
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=32, timeout=5)
        self._redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._prefix = prefix

    def _key(self, token: str) -> str:
        # Stored under a hash so a Redis dump does not hold usable tokens.
        return f"{self._prefix}:wstoken:{hashlib.sha256(token.encode()).hexdigest()}"

    async def issue(self, principal: Principal, ttl: int = TOKEN_TTL) -> str:
        token = new_token()
        await self._redis.set(self._key(token), orjson.dumps(dump(principal)), ex=ttl)
        return token

    async def consume(self, token: str) -> Principal | None:
        raw = await self._redis.getdel(self._key(token))
        return load(orjson.loads(raw)) if raw else None

    async def close(self) -> None:
        await close_quietly(self._redis)
