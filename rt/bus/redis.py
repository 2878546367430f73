"""Redis twin of the bus: one sequence per (account, channel) across every instance, history in a capped Stream per
(account, channel), and one global Stream every instance reads for live fan-out. One Lua script sequences and appends
a whole batch, so the order is the same everywhere, and an instance that loses its connection resumes from the last
entry id it read: nothing is lost in between. One reader per bus object feeds all of its subscribers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from rt._redis import close_quietly
from rt.bus import EventLog
from rt.bus.fanout import PUBLISHED_TTL_S, SUBSCRIBER_BOUND, Subscriber
from rt.records.events import EVENTS_CHANNEL, Delivery, Event
from rt.wire import dumps

log = logging.getLogger("rt.bus.redis")

# ARGV: maxlen, the global stream, its maxlen, the seconds an id stays published, then per event: its published-id
# key, its number of deliveries n, its json, then n times: seq key, stream key, channel. An event whose id key
# exists was published already: it is skipped. Returns one seq per delivery, 0 for a skipped event's.
_PUBLISH = """
local maxlen = tonumber(ARGV[1])
local global = ARGV[2]
local global_maxlen = tonumber(ARGV[3])
local ttl = ARGV[4]
local seqs = {}
local i = 5
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  local payload = ARGV[i + 2]
  local fresh = redis.call('SET', ARGV[i], '1', 'NX', 'EX', ttl)
  local j = i + 3
  for _ = 1, n do
    if fresh then
      local seq = redis.call('INCR', ARGV[j])
      redis.call('XADD', ARGV[j + 1], 'MAXLEN', '~', maxlen, seq .. '-1', 'e', payload)
      redis.call('XADD', global, 'MAXLEN', '~', global_maxlen, '*', 'c', ARGV[j + 2], 's', seq, 'e', payload)
      table.insert(seqs, seq)
    else
      table.insert(seqs, 0)
    end
    j = j + 3
  end
  i = j
end
return seqs
"""

_GLOBAL_MAXLEN = 100_000  # what an instance may fall behind by before it misses events
_READ_BLOCK_MS = 5_000
_READ_SLACK_S = 5.0  # how much longer than a blocking read the reader waits for Redis's answer


_RETRY_FIRST = 0.1
_RETRY_MAX = 5.0


def _block_ms(client: aioredis.Redis) -> int:
    """A blocking read shorter than the connection's read timeout, if the URL sets one: an idle stream is not a lost
    connection."""
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if timeout is None:
        return _READ_BLOCK_MS
    return max(1, min(_READ_BLOCK_MS, int(float(timeout) * 1000 / 2)))


def _raise_if_cancelled() -> None:
    """A cancellation redis-py swallowed (or turned into an error) still ends the subscription."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _event_json(event: Event) -> bytes:
    return dumps(
        {"id": event.id, "account_id": event.account_id, "event": event.event, "data": event.data, "ts_us": event.ts_us}
    )


def _event(raw: Any) -> Event:
    e = orjson.loads(raw)
    return Event(e["account_id"], e["event"], e["data"], id=e["id"], ts_us=e["ts_us"])


class RedisBus:
    def __init__(self, url: str, prefix: str = "rt", history: int = 1000, *, bound: int = SUBSCRIBER_BOUND) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=32, timeout=5)
        self._redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._url = url
        self._prefix = prefix
        self._history = history
        self._bound = bound
        self._topic = f"{prefix}:bus"  # the global stream, and the name of each instance's reading connection
        self._publish = self._redis.register_script(_PUBLISH)
        self._subscribers: set[Subscriber] = set()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    def _seq_key(self, account_id: str, channel: str) -> str:
        return f"{self._prefix}:seq:{account_id}:{channel}"

    def _stream_key(self, account_id: str, channel: str) -> str:
        return f"{self._prefix}:stream:{account_id}:{channel}"

    async def publish(self, events: list[Event]) -> list[Delivery]:
        if not events:
            return []
        args: list[Any] = [self._history, self._topic, _GLOBAL_MAXLEN, int(PUBLISHED_TTL_S)]
        slots: list[tuple[str, Event]] = []
        for event in events:
            channels = (event.channel, EVENTS_CHANNEL) if event.channel != EVENTS_CHANNEL else (EVENTS_CHANNEL,)
            args += [f"{self._prefix}:pub:{event.id}", len(channels), _event_json(event)]
            for channel in channels:
                args += [self._seq_key(event.account_id, channel), self._stream_key(event.account_id, channel), channel]
                slots.append((channel, event))
        seqs: Any = await self._publish(keys=[], args=args)
        return [
            Delivery(channel, int(seq), event) for (channel, event), seq in zip(slots, seqs, strict=True) if int(seq)
        ]

    async def subscribe(self) -> AsyncIterator[Delivery]:
        """Every delivery from now on, from this bus's one reader of the global stream."""
        subscriber = Subscriber(self._bound)
        if self._closed:
            subscriber.close()
        else:
            self._subscribers.add(subscriber)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(), name=f"{self._topic}-reader")
        try:
            async for delivery in subscriber.deliveries():
                yield delivery
        finally:
            self._subscribers.discard(subscriber)
            if not self._subscribers and self._reader is not None:
                self._reader.cancel()  # the last one left: stop reading (it ends on its own, closing its connection)
                self._reader = None

    def _offer(self, delivery: Delivery) -> None:
        for subscriber in tuple(self._subscribers):
            subscriber.offer(delivery)

    async def _read(self) -> None:
        """The one XREAD loop: after a lost connection, it resumes from the last entry id it read. Any other error
        ends every current subscription with it (the next subscribe starts a new reader)."""
        try:
            await self._read_stream()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("bus reader failed")
            for subscriber in tuple(self._subscribers):
                subscriber.fail(exc)

    async def _read_stream(self) -> None:
        last_id: bytes | None = None
        delay = _RETRY_FIRST
        while True:
            # No read timeout or retries inside redis-py: this loop bounds each read and resumes from last_id
            # itself. redis-py times a write with asyncio.wait_for, which on Python 3.11 can swallow a cancellation.
            client: aioredis.Redis = aioredis.Redis.from_url(
                self._url, client_name=self._topic, socket_timeout=None, retry=Retry(NoBackoff(), 0)
            )
            block_ms = _block_ms(client)
            try:
                if last_id is None:
                    newest: Any = await client.xrevrange(self._topic, count=1)
                    last_id = newest[0][0] if newest else b"0-0"
                delay = _RETRY_FIRST
                while True:
                    async with asyncio.timeout(block_ms / 1000 + _READ_SLACK_S):
                        reply: Any = await client.xread({self._topic: last_id}, block=block_ms, count=1000)
                    _raise_if_cancelled()
                    for _, entries in reply or ():
                        for entry_id, fields in entries:
                            last_id = entry_id
                            try:
                                delivery = Delivery(fields[b"c"].decode(), int(fields[b"s"]), _event(fields[b"e"]))
                            except (KeyError, ValueError, orjson.JSONDecodeError):
                                log.warning("malformed bus entry dropped")
                                continue
                            self._offer(delivery)
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                _raise_if_cancelled()
                log.warning("bus connection lost, resuming", extra={"error": str(exc), "retry_in": delay})
            finally:
                await close_quietly(client)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def history(self, account_id: str, channel: str, since: int) -> list[Delivery] | None:
        last = await self.last_seq(account_id, channel)
        if since >= last:
            return []
        entries: Any = await self._redis.xrange(self._stream_key(account_id, channel), min=f"{since + 1}-0", max="+")
        if not entries or int(entries[0][0].split(b"-")[0]) != since + 1:
            return None
        return [Delivery(channel, int(entry_id.split(b"-")[0]), _event(fields[b"e"])) for entry_id, fields in entries]

    async def last_seq(self, account_id: str, channel: str) -> int:
        value = await self._redis.get(self._seq_key(account_id, channel))
        return int(value) if value else 0

    async def restore(self, store: EventLog) -> None:
        """Redis keeps the sequences and history itself."""

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        for subscriber in tuple(self._subscribers):
            subscriber.close()
        await close_quietly(self._redis)
