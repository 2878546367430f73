"""The hub: takes every delivery from the bus (and every tick from the market) and hands it to subscribed sessions.

Each event is serialized once; the same bytes go to every subscriber's bounded queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from rt import metrics
from rt.bus import Bus
from rt.channels import tick_json
from rt.exchanges import Ticker
from rt.records.events import Delivery
from rt.wire import dumps

log = logging.getLogger("rt.hub")

_TICK_HISTORY = 256
GLOBAL = "*"


class Sink(Protocol):
    """A session as the hub sees it."""

    def offer_event(self, channel: str, seq: int, frame: str) -> None:
        """Queue a frame; a sink that cannot keep up closes itself (4008), never blocks the hub."""


def event_frame(channel: str, seq: int, event: str, data_json: bytes, ts_us: int | None = None) -> str:
    """One event message, serialized once for every subscriber."""
    ts = ts_us if ts_us is not None else time.time_ns() // 1000
    return (
        b'{"type":"event","channel":'
        + dumps(channel)
        + b',"seq":'
        + str(seq).encode()
        + b',"event":'
        + dumps(event)
        + b',"ts":'
        + str(ts).encode()
        + b',"data":'
        + data_json
        + b"}"
    ).decode()


class Hub:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._subs: dict[tuple[str, str], set[Sink]] = {}
        self._tick_seq: dict[str, int] = {}
        self._tick_history: dict[str, deque[tuple[int, str]]] = {}
        self.fanned_out = 0

    # subscriptions

    def add(self, account_id: str, channel: str, sink: Sink) -> None:
        self._subs.setdefault(_key(account_id, channel), set()).add(sink)

    def remove(self, account_id: str, channel: str, sink: Sink) -> None:
        key = _key(account_id, channel)
        sinks = self._subs.get(key)
        if sinks is not None:
            sinks.discard(sink)
            if not sinks:
                del self._subs[key]

    def subscriptions(self) -> int:
        return sum(len(s) for s in self._subs.values())

    # fan-out

    def _fan_out(self, key: tuple[str, str], seq: int, frame: str) -> None:
        sinks = self._subs.get(key)
        if not sinks:
            return
        channel = key[1]
        started = time.perf_counter()
        for sink in sinks:  # offer_event never changes the hub's sets
            sink.offer_event(channel, seq, frame)
        self.fanned_out += len(sinks)
        metrics.FANOUT_SECONDS.observe(time.perf_counter() - started)

    def deliver(self, deliveries: Iterable[Delivery]) -> None:
        data_of: dict[str, bytes] = {}  # an event goes to its channel and to `events`: serialize its data once
        for d in deliveries:
            key = (d.event.account_id, d.channel)
            if key in self._subs:
                data = data_of.get(d.event.id)
                if data is None:
                    data = data_of[d.event.id] = dumps(d.event.data)
                self._fan_out(key, d.seq, event_frame(d.channel, d.seq, d.event.event, data))

    async def run(self) -> None:
        """Forward bus deliveries for as long as the bus runs; a subscription that fails is made again."""
        while True:
            try:
                async for delivery in self._bus.subscribe():
                    try:
                        self.deliver((delivery,))
                    except Exception:
                        log.exception("fan-out failed")
                return
            except Exception:
                log.exception("bus subscription failed, subscribing again")
                await asyncio.sleep(1)

    # market data

    def tick(self, ticker: Ticker) -> None:
        channel = f"ticks:{ticker.symbol}"
        last = self._tick_seq.get(channel, 0)
        # The market's number for it when several instances share one market, so each gives it the same seq.
        seq = ticker.seq if ticker.seq else last + 1
        if seq <= last:
            return  # heard already
        self._tick_seq[channel] = seq
        frame = event_frame(channel, seq, "tick", dumps(tick_json(ticker)))
        ring = self._tick_history.get(channel)
        if ring is None:
            ring = self._tick_history[channel] = deque(maxlen=_TICK_HISTORY)
        ring.append((seq, frame))
        self._fan_out((GLOBAL, channel), seq, frame)

    def tick_seq(self, channel: str) -> int:
        return self._tick_seq.get(channel, 0)

    def tick_history(self, channel: str, since: int) -> list[str] | None:
        ring = self._tick_history.get(channel)
        last = self._tick_seq.get(channel, 0)
        if since >= last:
            return []
        if not ring or ring[0][0] > since + 1:
            return None
        return [frame for seq, frame in ring if seq > since]


def _key(account_id: str, channel: str) -> tuple[str, str]:
    return (GLOBAL, channel) if channel.startswith("ticks:") else (account_id, channel)


def replay_frames(deliveries: list[Delivery]) -> list[str]:
    return [event_frame(d.channel, d.seq, d.event.event, dumps(d.event.data)) for d in deliveries]


__all__ = ["Hub", "Sink", "event_frame", "replay_frames"]
