"""The hub: takes every delivery from the bus (and every tick from the market) and hands it to subscribed sessions.

Each event is serialized and framed once (`frames.Outgoing`); the same bytes go to every subscriber.

A fan-out runs in slices of `SLICE` deliveries, one per turn of the event loop, so a tick to thousands of
clients never holds a request or a command for longer than one slice: what is still to be handed out waits in one
FIFO, so every sink gets events in the order they were published. The FIFO is bounded: an event that finds more
than `BACKLOG` deliveries waiting before it has its publisher hand out the oldest there and then, so a market
faster than the clients slows down (as a synchronous broadcast would) instead of queueing latency.

A subscription is taken with `Hub.subscribe`, an async context manager (broadcaster's shape) that owns the order
of a subscribe: from the moment it is entered the subscription holds what is published, while its owner builds the
snapshot or replay; `Subscription.start(floor)` then hands on what was held past the snapshot's seq and everything
after it. Leaving the block by an exception, or without starting, removes it; once started it lasts until
`Subscription.close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

from rt import metrics
from rt.bus import Bus
from rt.channels import tick_json
from rt.exchanges import Ticker
from rt.records.events import Delivery
from rt.session import frames
from rt.session.frames import Outgoing
from rt.wire import dumps

log = logging.getLogger("rt.hub")

_TICK_HISTORY = 256
SLICE = 32  # deliveries handed out in one turn of the event loop (each a write to a socket: about 0.2 ms)
BACKLOG = 256  # deliveries an event may find waiting before it: past that, the publisher hands out the oldest
_DATA_MEMO = 64  # events whose serialized data is kept: one event arrives once per channel it goes to
GLOBAL = "*"


class Sink(Protocol):
    """A session as the hub sees it."""

    def offer(self, out: Outgoing) -> None:
        """Take a message; a sink that cannot keep up closes itself (4008), never blocks the hub."""

    def fell_behind(self) -> None:
        """More was published while it subscribed than it may hold: it closes itself (4008)."""


class Subscription:
    """One sink on one (account, channel): holding until started, then handing on what is past its floor."""

    __slots__ = ("_held", "_hub", "channel", "closed", "floor", "key", "sink")

    def __init__(self, hub: Hub, key: tuple[str, str], sink: Sink) -> None:
        self._hub = hub
        self.key = key
        self.channel = key[1]
        self.sink = sink
        self.floor = 0
        self.closed = False
        self._held: list[tuple[int, Outgoing]] | None = []

    @property
    def started(self) -> bool:
        return self._held is None

    def deliver(self, seq: int, out: Outgoing) -> None:
        if self.closed:
            return  # closed after the event came, while its fan-out was still pending
        held = self._held
        if held is not None:
            if len(held) >= self._hub.held_limit:
                self.sink.fell_behind()
                return
            held.append((seq, out))
        elif seq > self.floor:
            self.sink.offer(out)

    def start(self, floor: int) -> None:
        """The snapshot (or replay) up to `floor` is sent: hand on what arrived meanwhile, past the floor."""
        held, self._held = self._held or [], None
        self.floor = floor
        for seq, out in held:
            if seq > floor:
                self.sink.offer(out)

    def close(self) -> None:
        self.closed = True
        self._hub._remove(self)


class Hub:
    def __init__(self, bus: Bus, held_limit: int = 1024) -> None:
        self._bus = bus
        self.held_limit = held_limit
        self._subs: dict[tuple[str, str], dict[Subscription, None]] = {}
        self._tick_seq: dict[str, int] = {}
        self._tick_history: dict[str, deque[tuple[int, Outgoing]]] = {}
        self._data_of: dict[str, bytes] = {}
        # What is still to be handed out: subscriptions as they were when the event came, its seq, the message, and
        # how far it got.
        self._pending: deque[list[Any]] = deque()
        self.pending = 0  # deliveries in it
        self._draining = False
        self.fanned_out = 0

    # subscriptions

    @contextlib.asynccontextmanager
    async def subscribe(self, account_id: str, channel: str, sink: Sink) -> AsyncIterator[Subscription]:
        subscription = Subscription(self, _key(account_id, channel), sink)
        self._subs.setdefault(subscription.key, {})[subscription] = None
        try:
            yield subscription
        except BaseException:
            subscription.close()
            raise
        if not subscription.started:
            subscription.close()

    def _remove(self, subscription: Subscription) -> None:
        subs = self._subs.get(subscription.key)
        if subs is not None:
            subs.pop(subscription, None)
            if not subs:
                del self._subs[subscription.key]

    def subscriptions(self) -> int:
        return sum(len(s) for s in self._subs.values())

    # fan-out

    def _fan_out(self, key: tuple[str, str], seq: int, out: Outgoing) -> None:
        subs = self._subs.get(key)
        if not subs:
            return
        self.fanned_out += len(subs)
        if len(subs) <= SLICE and not self._pending:
            started = time.perf_counter()
            # A sink never changes the hub's subscriptions while it is handed a message (a session that closes is
            # removed by its own task, later), so the dict is walked as it is.
            for subscription in subs:
                try:
                    subscription.deliver(seq, out)
                except Exception:  # one session's failure never stops the fan-out to the others
                    _failed(subscription)
            metrics.FANOUT_SECONDS.observe(time.perf_counter() - started)
            return
        while self.pending > BACKLOG:
            self._hand_out()
        self._pending.append([list(subs), seq, out, 0])
        self.pending += len(subs)
        if self._pending and not self._draining:
            self._draining = True
            self._slice()  # the first slice now, the next ones on the loop's next turns

    def _slice(self) -> None:
        """One turn of the loop's share of what is pending; the next slice after the loop has run again."""
        try:
            self._hand_out()
        finally:
            if self._pending:
                asyncio.get_running_loop().call_soon(self._slice)
            else:
                self._draining = False

    def _hand_out(self) -> None:
        started = time.perf_counter()
        budget = SLICE
        pending = self._pending
        while pending and budget:
            entry = pending[0]
            subs, seq, out, done = entry
            end = min(len(subs), done + budget)
            for i in range(done, end):
                try:
                    subs[i].deliver(seq, out)
                except Exception:
                    _failed(subs[i])
            budget -= end - done
            self.pending -= end - done
            if end == len(subs):
                pending.popleft()
                metrics.FANOUT_SECONDS.observe(time.perf_counter() - started)
            else:
                entry[3] = end

    def deliver(self, deliveries: Iterable[Delivery]) -> None:
        for d in deliveries:
            key = (d.event.account_id, d.channel)
            if key in self._subs:
                self._fan_out(key, d.seq, Outgoing(frames.event(d.channel, d.seq, d.event.event, self._data(d))))

    def _data(self, d: Delivery) -> bytes:
        """An event goes to its channel and to `events`, one delivery each: its data is serialized once."""
        memo = self._data_of
        data = memo.get(d.event.id)
        if data is None:
            if len(memo) >= _DATA_MEMO:
                del memo[next(iter(memo))]
            data = memo[d.event.id] = dumps(d.event.data)
        return data

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
        out = Outgoing(frames.event(channel, seq, "tick", dumps(tick_json(ticker))))
        ring = self._tick_history.get(channel)
        if ring is None:
            ring = self._tick_history[channel] = deque(maxlen=_TICK_HISTORY)
        ring.append((seq, out))
        self._fan_out((GLOBAL, channel), seq, out)

    def tick_seq(self, channel: str) -> int:
        return self._tick_seq.get(channel, 0)

    def tick_history(self, channel: str, since: int) -> list[Outgoing] | None:
        ring = self._tick_history.get(channel)
        last = self._tick_seq.get(channel, 0)
        if since >= last:
            return []
        if not ring or ring[0][0] > since + 1:
            return None
        return [out for seq, out in ring if seq > since]


def _failed(subscription: Subscription) -> None:
    log.exception("fan-out to a session failed", extra={"channel": subscription.channel})


def _key(account_id: str, channel: str) -> tuple[str, str]:
    return (GLOBAL, channel) if channel.startswith("ticks:") else (account_id, channel)


def replay(deliveries: list[Delivery]) -> list[Outgoing]:
    return [Outgoing(frames.event(d.channel, d.seq, d.event.event, dumps(d.event.data))) for d in deliveries]


__all__ = ["Hub", "Sink", "Subscription", "replay"]
