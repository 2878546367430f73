"""Redis twin of the bus: one sequence per (account, channel) across every instance, history in a capped Stream,
live fan-out over Pub/Sub. One Lua script sequences, stores and announces a whole batch, so order is global."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis

from rt.bus import EVENTS_CHANNEL, Delivery, Event
from rt.store import Store
from rt.wire import dumps

log = logging.getLogger("rt.bus.redis")

# ARGV: maxlen, then per delivery: seq key, stream key, channel, event json. Returns the seqs.
_PUBLISH = """
local maxlen = tonumber(ARGV[1])
local topic = ARGV[2]
local seqs = {}
local i = 3
while i <= #ARGV do
  local seq = redis.call('INCR', ARGV[i])
  redis.call('XADD', ARGV[i + 1], 'MAXLEN', '~', maxlen, seq .. '-1', 'e', ARGV[i + 3])
  redis.call('PUBLISH', topic, '{"c":' .. cjson.encode(ARGV[i + 2]) .. ',"s":' .. seq .. ',"e":' .. ARGV[i + 3] .. '}')
  table.insert(seqs, seq)
  i = i + 4
end
return seqs
"""


_RETRY_FIRST = 0.1
_RETRY_MAX = 5.0


def _event_json(event: Event) -> bytes:
    return dumps(
        {"id": event.id, "account_id": event.account_id, "event": event.event, "data": event.data, "ts_us": event.ts_us}
    )


def _event(raw: Any) -> Event:
    e = orjson.loads(raw)
    return Event(e["account_id"], e["event"], e["data"], id=e["id"], ts_us=e["ts_us"])


class RedisBus:
    def __init__(self, url: str, prefix: str = "rt", history: int = 1000) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=32, timeout=5)
        self._redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._url = url
        self._prefix = prefix
        self._history = history
        self._topic = f"{prefix}:bus"
        self._publish = self._redis.register_script(_PUBLISH)

    def _seq_key(self, account_id: str, channel: str) -> str:
        return f"{self._prefix}:seq:{account_id}:{channel}"

    def _stream_key(self, account_id: str, channel: str) -> str:
        return f"{self._prefix}:stream:{account_id}:{channel}"

    async def publish(self, events: list[Event]) -> list[Delivery]:
        if not events:
            return []
        args: list[Any] = [self._history, self._topic]
        slots: list[tuple[str, Event]] = []
        for event in events:
            payload = _event_json(event)
            for channel in (event.channel, EVENTS_CHANNEL) if event.channel != EVENTS_CHANNEL else (EVENTS_CHANNEL,):
                args += [
                    self._seq_key(event.account_id, channel),
                    self._stream_key(event.account_id, channel),
                    channel,
                    payload,
                ]
                slots.append((channel, event))
        seqs: Any = await self._publish(keys=[], args=args)
        return [Delivery(channel, int(seq), event) for (channel, event), seq in zip(slots, seqs, strict=True)]

    async def subscribe(self) -> AsyncIterator[Delivery]:
        """Live deliveries; after a lost connection, resubscribe and replay from the Streams what went by meanwhile."""
        last: dict[tuple[str, str], int] = {}
        delay = _RETRY_FIRST
        resumed = False
        while True:
            client: aioredis.Redis = aioredis.Redis.from_url(self._url, client_name=self._topic)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._topic)
                # Subscribed first, then read history: an event in both is yielded once, none falls in between.
                replayed: dict[tuple[str, str], int] = {}
                if resumed:
                    for (account_id, channel), seq in list(last.items()):
                        missed = await self.history(account_id, channel, seq)
                        if missed is None:
                            log.warning("bus history no longer reaches back", extra={"channel": channel, "seq": seq})
                        for delivery in missed or ():
                            last[(account_id, channel)] = replayed[(account_id, channel)] = delivery.seq
                            yield delivery
                resumed = True
                delay = _RETRY_FIRST
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        raw = orjson.loads(message["data"])
                        e = raw["e"]
                        event = Event(e["account_id"], e["event"], e["data"], id=e["id"], ts_us=e["ts_us"])
                        delivery = Delivery(raw["c"], int(raw["s"]), event)
                    except (KeyError, ValueError, orjson.JSONDecodeError):
                        log.warning("malformed bus message dropped")
                        continue
                    key = (delivery.event.account_id, delivery.channel)
                    if key in replayed:
                        if delivery.seq <= replayed[key]:
                            continue
                        del replayed[key]
                    last[key] = delivery.seq
                    yield delivery
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                log.warning("bus subscription lost, resubscribing", extra={"error": str(exc), "retry_in": delay})
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await client.aclose()
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

    async def restore(self, store: Store) -> None:
        """Redis keeps the sequences and history itself."""

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
