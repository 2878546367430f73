"""Redis twin of the limiter: one Lua script per decision (a guarded request's lockout check included), so every
instance draws from one budget."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from rt._redis import close_quietly
from rt.auth.limiter import Decision

# GCRA in milliseconds on the Redis clock, so instances with skewed clocks still agree. KEYS[2], when given, is the
# IP's lockout: while it lasts the bucket is left alone and its milliseconds left are the fifth value.
_GCRA = """
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
if KEYS[2] then
  local locked = redis.call('PTTL', KEYS[2])
  if locked > 0 then return {0, 0, '0', '0', locked} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > capacity + 0.000001 then
  return {0, 0, tostring(tat - now), tostring(ahead - capacity), 0}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(ahead))
return {1, math.floor((capacity - ahead) / interval + 0.000001), tostring(ahead), '0', 0}
"""

_FAIL = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return tonumber(ARGV[3])
end
return redis.call('PTTL', KEYS[2])
"""


class RedisLimiter:
    def __init__(self, url: str, prefix: str = "rt") -> None:
        # A blocking pool: a burst of concurrent requests waits for a connection instead of failing with
        # MaxConnectionsError once more than the default pool's 100 are in flight.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=5)
        self._redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._prefix = prefix
        self._gcra = self._redis.register_script(_GCRA)
        self._fail = self._redis.register_script(_FAIL)

    async def hit(self, key: str, per_minute: int, burst: int, ip: str | None = None) -> Decision:
        interval = 60_000.0 / per_minute
        keys = [f"{self._prefix}:rl:{key}"]
        if ip is not None:
            keys.append(self._lockout_key(ip))
        reply: Any = await self._gcra(keys=keys, args=[interval, interval * burst])
        allowed, remaining, reset_ms, retry_ms, locked_ms = reply
        return Decision(
            allowed=bool(allowed),
            limit=per_minute,
            remaining=int(remaining),
            reset_after=float(reset_ms) / 1000,
            retry_after=float(retry_ms) / 1000,
            locked_for=int(locked_ms) / 1000,
        )

    def _lockout_key(self, ip: str) -> str:
        return f"{self._prefix}:lockout:{ip}"

    async def fail(self, ip: str, threshold: int, window_s: int, lock_s: int) -> float:
        keys = [f"{self._prefix}:authfail:{ip}", self._lockout_key(ip)]
        left_ms: Any = await self._fail(keys=keys, args=[threshold, window_s * 1000, lock_s * 1000])
        return max(int(left_ms), 0) / 1000

    async def locked(self, ip: str) -> float:
        left_ms: Any = await self._redis.pttl(self._lockout_key(ip))
        return max(int(left_ms), 0) / 1000

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await close_quietly(self._redis)
