"""The dead man's switch, durable: `orders.cancel_after` deadlines and the sessions that asked for
`cancel_on_disconnect`, kept where every instance sees them, so the holder of the `deadman` role carries them out
when the instance that had the socket is gone.

Redis keeps, under the prefix:
- `{prefix}:deadman`: a sorted set, account -> its deadline (ms);
- `{prefix}:deadman:beats`: a sorted set, session -> when its heartbeat runs out (ms); the instance that holds the
  socket moves it on every second, and a session whose heartbeat ran out without a clean close has lapsed;
- `{prefix}:deadman:session:{id}`: the session's account, and `{prefix}:deadman:orders:{id}`: the orders it placed.
Every time is Redis's own clock (TIME), so instances whose clocks disagree still agree on what is due.

The memory twin keeps the same in this process, for one instance without Redis.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from rt._redis import close_quietly

BEAT_S = 1.0  # how often the holding instance moves a session's heartbeat on
BEAT_TTL_MS = 3000  # how long a heartbeat lasts: a session is lapsed this long after its holder's last beat


@dataclass(frozen=True)
class Lapsed:
    """A session whose heartbeat ran out: the orders it placed are to be canceled."""

    session_id: str
    account_id: str
    order_ids: tuple[str, ...]


class Deadman(Protocol):
    async def arm(self, account_id: str, timeout_ms: int) -> int:
        """Set (or move) the account's deadline to timeout_ms from now; returns the deadline (ms since the epoch)."""

    async def disarm(self, account_id: str) -> None: ...

    async def due(self) -> list[tuple[str, int]]:
        """(account, deadline) of every deadline that has passed."""

    async def fired(self, account_id: str, deadline: int) -> None:
        """The deadline was carried out: forget it, unless it was moved meanwhile."""

    async def watch(self, session_id: str, account_id: str, order_ids: Iterable[str]) -> None:
        """The session asked for cancel_on_disconnect: keep it, the orders it placed so far, and a first beat."""

    async def placed(self, session_id: str, order_id: str) -> None:
        """An order the watched session placed (nothing when it is not watched)."""

    async def beat(self, session_ids: Collection[str]) -> list[str]:
        """Move the heartbeat of these sessions on; returns the ones no longer kept (to be watched again)."""

    async def lapsed(self) -> list[Lapsed]:
        """Sessions whose heartbeat ran out."""

    async def forget(self, session_id: str) -> None:
        """A clean close (or cancel_on_disconnect turned off, or a lapsed session dealt with)."""

    def settled(self, grace_s: float) -> bool:
        """Whether calls to the store have been answered for at least grace_s: after an outage nobody could beat,
        so a heartbeat that ran out then says nothing about its session."""

    async def close(self) -> None: ...


def open_deadman(url: str, prefix: str, beat_ttl_ms: int = BEAT_TTL_MS) -> Deadman:
    if not url:
        return MemoryDeadman(beat_ttl_ms)
    return RedisDeadman(url, prefix, beat_ttl_ms)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class MemoryDeadman:
    def __init__(self, beat_ttl_ms: int = BEAT_TTL_MS) -> None:
        self._ttl_ms = beat_ttl_ms
        self._deadlines: dict[str, int] = {}
        self._beats: dict[str, int] = {}
        self._accounts: dict[str, str] = {}
        self._orders: dict[str, set[str]] = {}

    async def arm(self, account_id: str, timeout_ms: int) -> int:
        deadline = self._deadlines[account_id] = _now_ms() + timeout_ms
        return deadline

    async def disarm(self, account_id: str) -> None:
        self._deadlines.pop(account_id, None)

    async def due(self) -> list[tuple[str, int]]:
        now = _now_ms()
        return [(account, deadline) for account, deadline in self._deadlines.items() if deadline <= now]

    async def fired(self, account_id: str, deadline: int) -> None:
        if self._deadlines.get(account_id) == deadline:
            del self._deadlines[account_id]

    async def watch(self, session_id: str, account_id: str, order_ids: Iterable[str]) -> None:
        self._accounts[session_id] = account_id
        self._orders.setdefault(session_id, set()).update(order_ids)
        self._beats[session_id] = _now_ms() + self._ttl_ms

    async def placed(self, session_id: str, order_id: str) -> None:
        if session_id in self._accounts:
            self._orders.setdefault(session_id, set()).add(order_id)

    async def beat(self, session_ids: Collection[str]) -> list[str]:
        until = _now_ms() + self._ttl_ms
        missing = []
        for session_id in session_ids:
            if session_id in self._beats:
                self._beats[session_id] = until
            else:
                missing.append(session_id)
        return missing

    async def lapsed(self) -> list[Lapsed]:
        now = _now_ms()
        return [
            Lapsed(sid, self._accounts.get(sid, ""), tuple(sorted(self._orders.get(sid, ()))))
            for sid, until in self._beats.items()
            if until <= now
        ]

    async def forget(self, session_id: str) -> None:
        self._beats.pop(session_id, None)
        self._accounts.pop(session_id, None)
        self._orders.pop(session_id, None)

    def settled(self, grace_s: float) -> bool:
        return True

    async def close(self) -> None:
        """Nothing to close."""


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: deadlines. ARGV: account, timeout_ms. Returns the deadline.
_ARM = (
    _NOW
    + """
local deadline = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], deadline, ARGV[1])
return deadline
"""
)

# KEYS: deadlines. Returns account, deadline, account, deadline, ...
_DUE = (
    _NOW
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
"""
)

# KEYS: deadlines. ARGV: account, deadline.
_FIRED = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""

# KEYS: beats, session, orders. ARGV: session id, ttl_ms, account, order ids...
_WATCH = (
    _NOW
    + """
redis.call('HSET', KEYS[2], 'account', ARGV[3])
for i = 4, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 0
"""
)

# KEYS: session, orders. ARGV: order id.
_PLACED = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SADD', KEYS[2], ARGV[1]) end
return 0
"""

# KEYS: beats. ARGV: ttl_ms, session ids... Returns the sessions not kept.
_BEAT = (
    _NOW
    + """
local expiry = now + tonumber(ARGV[1])
local missing = {}
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[i]) == 0 and not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    table.insert(missing, ARGV[i])
  end
end
return missing
"""
)

# KEYS: beats. ARGV: the session key prefix, the orders key prefix. Returns {session, account, {orders}} per lapse.
_LAPSED = (
    _NOW
    + """
local out = {}
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)) do
  local account = redis.call('HGET', ARGV[1] .. sid, 'account') or ''
  table.insert(out, {sid, account, redis.call('SMEMBERS', ARGV[2] .. sid)})
end
return out
"""
)


class RedisDeadman:
    def __init__(self, url: str, prefix: str, beat_ttl_ms: int = BEAT_TTL_MS) -> None:
        self._ttl_ms = beat_ttl_ms
        # Short timeouts: the sweeper and the beats must see a lost Redis within a beat, not after redis-py's retries.
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        self._deadlines = f"{prefix}:deadman"
        self._beats = f"{prefix}:deadman:beats"
        self._session = f"{prefix}:deadman:session:"
        self._orders = f"{prefix}:deadman:orders:"
        self._arm = self._redis.register_script(_ARM)
        self._due = self._redis.register_script(_DUE)
        self._fired = self._redis.register_script(_FIRED)
        self._watch = self._redis.register_script(_WATCH)
        self._placed = self._redis.register_script(_PLACED)
        self._beat = self._redis.register_script(_BEAT)
        self._lapsed = self._redis.register_script(_LAPSED)
        self._answered_since: float | None = None

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._answered(script(keys=keys, args=args))

    async def _answered(self, call: Awaitable[Any]) -> Any:
        try:
            reply = await call
        except (aioredis.RedisError, OSError):
            self._answered_since = None
            raise
        if self._answered_since is None:
            self._answered_since = time.monotonic()
        return reply

    def settled(self, grace_s: float) -> bool:
        return self._answered_since is not None and time.monotonic() - self._answered_since >= grace_s

    async def arm(self, account_id: str, timeout_ms: int) -> int:
        return int(await self._call(self._arm, [self._deadlines], [account_id, timeout_ms]))

    async def disarm(self, account_id: str) -> None:
        await self._answered(self._redis.zrem(self._deadlines, account_id))

    async def due(self) -> list[tuple[str, int]]:
        flat = await self._call(self._due, [self._deadlines], [])
        return [(flat[i].decode(), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]

    async def fired(self, account_id: str, deadline: int) -> None:
        await self._call(self._fired, [self._deadlines], [account_id, deadline])

    async def watch(self, session_id: str, account_id: str, order_ids: Iterable[str]) -> None:
        keys = [self._beats, self._session + session_id, self._orders + session_id]
        await self._call(self._watch, keys, [session_id, self._ttl_ms, account_id, *order_ids])

    async def placed(self, session_id: str, order_id: str) -> None:
        await self._call(self._placed, [self._session + session_id, self._orders + session_id], [order_id])

    async def beat(self, session_ids: Collection[str]) -> list[str]:
        missing = await self._call(self._beat, [self._beats], [self._ttl_ms, *session_ids])
        return [m.decode() for m in missing]

    async def lapsed(self) -> list[Lapsed]:
        rows = await self._call(self._lapsed, [self._beats], [self._session, self._orders])
        return [
            Lapsed(sid.decode(), account.decode(), tuple(sorted(o.decode() for o in orders)))
            for sid, account, orders in rows
        ]

    async def forget(self, session_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._beats, session_id)
            pipe.delete(self._session + session_id, self._orders + session_id)
            await self._answered(pipe.execute())

    async def close(self) -> None:
        await close_quietly(self._redis)
