"""Redis twins: a lease is `{prefix}:lease:{role}` = `{instance}:{token}` with a TTL, its fencing token comes from
`INCR {prefix}:fence:{role}` (it only grows), and ticks go out on the pub/sub channel `{prefix}:ticks` through a
script that publishes only while the sender's lease is still the one in Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from rt._redis import close_quietly
from rt.coord import Ticks
from rt.exchanges import Ticker
from rt.wire import dumps

log = logging.getLogger("rt.coord.redis")

# KEYS: lease, fence. ARGV: instance, ttl_ms. Returns the new token, or nil when the lease is taken.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return token
"""
# KEYS: lease. ARGV: holder, ttl_ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: lease. ARGV: holder.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: lease. ARGV: holder, channel, payload. Returns 1 when published.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

_RETRY_FIRST = 0.1
_RETRY_MAX = 2.0


class RedisLeases:
    expires = True

    def __init__(self, url: str, prefix: str, instance: str) -> None:
        # Short timeouts: a lease call that hangs must fail well inside the lease's TTL.
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        self._prefix = prefix
        self.instance = instance
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._publish = self._redis.register_script(_PUBLISH)

    def lease_key(self, role: str) -> str:
        return f"{self._prefix}:lease:{role}"

    def holder(self, token: int) -> str:
        return f"{self.instance}:{token}"

    async def acquire(self, role: str, ttl_ms: int) -> int | None:
        token: Any = await self._acquire(
            keys=[self.lease_key(role), f"{self._prefix}:fence:{role}"], args=[self.instance, ttl_ms]
        )
        return None if token is None else int(token)

    async def renew(self, role: str, token: int, ttl_ms: int) -> bool:
        return bool(await self._renew(keys=[self.lease_key(role)], args=[self.holder(token), ttl_ms]))

    async def release(self, role: str, token: int) -> None:
        await self._release(keys=[self.lease_key(role)], args=[self.holder(token)])

    async def publish_if_holder(self, role: str, token: int, channel: str, payload: bytes) -> bool:
        return bool(await self._publish(keys=[self.lease_key(role)], args=[self.holder(token), channel, payload]))

    async def close(self) -> None:
        await close_quietly(self._redis)


def ticks_json(ticks: Ticks) -> bytes:
    return dumps(
        {
            "token": ticks.token,
            "ticks": [
                {
                    "symbol": t.symbol,
                    "bid": str(t.bid),
                    "ask": str(t.ask),
                    "last": str(t.last),
                    "ts_ms": t.ts_ms,
                    "seq": t.seq,
                }
                for t in ticks.tickers
            ],
        }
    )


def _ticks(raw: bytes) -> Ticks:
    data = orjson.loads(raw)
    tickers = tuple(
        Ticker(
            t["symbol"], Decimal(t["bid"]), Decimal(t["ask"]), Decimal(t["last"]), int(t["ts_ms"]), int(t.get("seq", 0))
        )
        for t in data["ticks"]
    )
    return Ticks(int(data["token"]), tickers)


class RedisTicks:
    def __init__(self, leases: RedisLeases, url: str, prefix: str) -> None:
        self._leases = leases
        self._url = url
        self.channel = f"{prefix}:ticks"

    async def publish(self, role: str, ticks: Ticks) -> bool:
        return await self._leases.publish_if_holder(role, ticks.token, self.channel, ticks_json(ticks))

    async def subscribe(self) -> AsyncIterator[Ticks]:
        """Pub/sub keeps nothing: ticks sent while this connection is down are missed, and the next one moves the
        market again (a tick carries whole prices, not changes)."""
        delay = _RETRY_FIRST
        while True:
            client: aioredis.Redis = aioredis.Redis.from_url(
                self._url, socket_timeout=None, retry=Retry(NoBackoff(), 0)
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                delay = _RETRY_FIRST
                while True:
                    message: Any = await pubsub.get_message(timeout=None)
                    if message is None or message.get("type") != "message":
                        continue
                    try:
                        ticks = _ticks(message["data"])
                    except (KeyError, TypeError, ValueError, InvalidOperation, orjson.JSONDecodeError):
                        log.warning("malformed tick message dropped")
                        continue
                    yield ticks
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                log.warning("tick channel lost, subscribing again", extra={"error": str(exc), "retry_in": delay})
            finally:
                await close_quietly(pubsub, client)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def close(self) -> None:
        """The subscriptions close with their iterators; the lease client closes with the leases."""
