"""The hub: takes every delivery from the bus (and every tick from the market) and hands it to subscribed sessions.

Each event is serialized and framed once (`frames.Outgoing`); the same bytes go to every subscriber.

A fan-out to more than a few sessions runs in slices of `SLICE` subscribers per turn of the event loop, so a tick
to thousands of clients never holds a request or a command for longer than one slice; a command just started
(`make_way`) runs ahead of the next slice. A subscriber gets what was
published for it since its last turn in one turn of the loop, so in one write (uvloop writes what a turn gave a
transport as one `writev`):
- a ticks channel's fan-out is a cursor that goes round its subscribers (`_Ring`): a tick waits at most one lap,
  half of one on average, and a market faster than a lap costs one write per subscriber per lap, not one per tick;
- an account channel's fan-out hands its events out in rounds (`_Fanout`), what comes during one joining the next.

Order: every subscriber gets a channel's events in the order they were published, and an account's events (its
channels and `events`) in the order they were published across channels: fan-outs wait in one FIFO, and an account
channel's event joins only the fan-out at its tail. A ticks channel's fan-out goes to the back after each slice,
so what else waits takes its turn; ticks are ordered within their channel only. What waits is bounded: past
`BACKLOG` fan-outs, or `BACKLOG` events waiting for one channel's subscribers, the publisher hands out the oldest
there and then, so a publisher faster than the clients slows down instead of queueing without end.

A subscription is taken with `Hub.subscribe`, an async context manager (broadcaster's shape) that owns the order
of a subscribe: from the moment it is entered the subscription holds what is published, while its owner builds the
snapshot or replay; `Subscription.start(floor)` then hands on what was held past the snapshot's seq and everything
after it. Leaving the block by an exception, or without starting, removes it; once started it lasts until
`Subscription.close()`. One who subscribes while a fan-out runs is handed what is published after it subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_right
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

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
SLICE = 32  # subscribers handed a round in one turn of the event loop (each a write to a socket: about 0.2 ms)
BACKLOG = 256  # fan-outs waiting, or events waiting for one channel's next round: past that, the publisher hands out
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

    __slots__ = ("_held", "_hub", "channel", "closed", "floor", "key", "sink", "upto")

    def __init__(self, hub: Hub, key: tuple[str, str], sink: Sink) -> None:
        self._hub = hub
        self.key = key
        self.channel = key[1]
        self.sink = sink
        self.floor = 0
        self.upto = 0  # the last seq a ticks channel's fan-out handed it
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
        # Each channel's last change of subscribers while fan-outs were running (numbered across channels).
        self._versions: dict[tuple[str, str], int] = {}
        self._change = 0
        self._pending: deque[_Fanout | _Ring] = deque()  # fan-outs still running, oldest first
        self._ticking: dict[tuple[str, str], _Ring] = {}  # each ticks channel's fan-out while it runs
        self._draining = False
        self._making_way = False
        self.fanned_out = 0

    # subscriptions

    @contextlib.asynccontextmanager
    async def subscribe(self, account_id: str, channel: str, sink: Sink) -> AsyncIterator[Subscription]:
        subscription = Subscription(self, _key(account_id, channel), sink)
        subscription.upto = self._tick_seq.get(channel, 0)  # a ticks channel's fan-out hands it what comes next
        self._subs.setdefault(subscription.key, {})[subscription] = None
        self._changed(subscription.key)
        try:
            yield subscription
        except BaseException:
            subscription.close()
            raise
        if not subscription.started:
            subscription.close()

    def _remove(self, subscription: Subscription) -> None:
        subs = self._subs.get(subscription.key)
        if subs is not None and subscription in subs:
            del subs[subscription]
            self._changed(subscription.key)
            if not subs:
                del self._subs[subscription.key]

    def _changed(self, key: tuple[str, str]) -> None:
        """A running fan-out is for the subscribers it began with: the channel's next event starts another."""
        if self._pending:
            self._change += 1
            self._versions[key] = self._change

    def subscriptions(self) -> int:
        return sum(len(s) for s in self._subs.values())

    # fan-out

    @property
    def pending(self) -> int:
        """Subscribers the running fan-outs have still to hand what was published for them."""
        return sum(fanout.waiting_for for fanout in self._pending)

    def _fan_out(self, key: tuple[str, str], seq: int, out: Outgoing) -> None:
        subs = self._subs.get(key)
        if not subs:
            return
        self.fanned_out += len(subs)
        pending = self._pending
        if len(subs) <= SLICE and not pending:
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
        version = self._versions.get(key, 0)
        if key[0] == GLOBAL:
            self._ring(key, version, subs).add(seq, out)
        else:
            self._account_fanout(key, version, subs).add(seq, out)
        if not self._draining:
            self._draining = True
            self._slice()  # the first slice now, the next ones on the loop's next turns

    def _ring(self, key: tuple[str, str], version: int, subs: dict[Subscription, None]) -> _Ring:
        ring = self._ticking.get(key)
        if ring is not None:
            if ring.version != version:
                ring.resubscribe(version, list(subs))
            while len(ring.log) >= BACKLOG and not ring.over:  # faster than it goes round: it goes round first
                self._hand_out()
            if not ring.over:
                return ring
        self._wait_for_room()
        ring = self._ticking[key] = _Ring(key, version, list(subs))
        self._pending.append(ring)
        return ring

    def _account_fanout(self, key: tuple[str, str], version: int, subs: dict[Subscription, None]) -> _Fanout:
        """An account channel's event joins only the last fan-out in the FIFO: nothing published after it goes
        first."""
        pending = self._pending
        fanout = pending[-1] if pending else None
        if isinstance(fanout, _Fanout) and fanout.key == key and fanout.version == version:
            while fanout.waiting >= BACKLOG:  # the round it would join gets under way first
                self._hand_out()
            if not fanout.over:
                return fanout
        self._wait_for_room()
        fanout = _Fanout(key, version, list(subs))
        pending.append(fanout)
        return fanout

    def _wait_for_room(self) -> None:
        while len(self._pending) >= BACKLOG:
            self._hand_out()

    def make_way(self) -> None:
        """A command was just handed to the loop: the next slice waits one turn, so the command runs first and its
        reply goes out in that turn's writes, not behind a slice's."""
        self._making_way = self._draining

    def _slice(self) -> None:
        """One turn of the loop's share of what is pending; the next slice after the loop has run again."""
        if self._making_way:
            self._making_way = False
            asyncio.get_running_loop().call_soon(self._slice)
            return
        try:
            self._hand_out()
        finally:
            if self._pending:
                asyncio.get_running_loop().call_soon(self._slice)
            else:
                self._draining = False
                self._versions.clear()  # no fan-out is left to compare with

    def _hand_out(self) -> None:
        budget = SLICE
        pending = self._pending
        while pending and budget:
            fanout = pending[0]
            if isinstance(fanout, _Ring):
                budget -= fanout.go_round(budget)
                pending.popleft()
                if fanout.waiting_for:
                    pending.append(fanout)  # a ticks channel: what else waits takes its turn
                else:
                    fanout.over = True
                    del self._ticking[fanout.key]
                continue
            budget -= fanout.hand_out(budget)
            if fanout.done < len(fanout.subs):
                continue
            metrics.FANOUT_SECONDS.observe(time.perf_counter() - fanout.started)
            pending.popleft()
            if fanout.next_round():
                pending.appendleft(fanout)  # its events were published before what waits behind it

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


class _Fanout:
    """An account channel's events on their way to its subscribers: a round hands `batch` to each of `subs` in
    turn, and what the channel publishes once the round has begun waits in `incoming` for the next one."""

    __slots__ = ("batch", "done", "incoming", "key", "over", "started", "started_next", "subs", "version")

    def __init__(self, key: tuple[str, str], version: int, subs: list[Subscription]) -> None:
        self.key = key
        self.version = version
        self.subs = subs
        self.batch: list[tuple[int, Outgoing]] = []
        self.incoming: list[tuple[int, Outgoing]] = []
        self.done = 0  # subscribers handed this round
        self.over = False  # its last round is done: it is out of the hub's FIFO
        self.started = self.started_next = time.perf_counter()  # when the round's first event came

    @property
    def waiting(self) -> int:
        """Events not yet handed to any subscriber."""
        return len(self.incoming) if self.done else len(self.batch)

    @property
    def waiting_for(self) -> int:
        return len(self.subs) - self.done + (len(self.subs) if self.incoming else 0)

    def add(self, seq: int, out: Outgoing) -> None:
        if not self.done:
            self.batch.append((seq, out))
            return
        if not self.incoming:
            self.started_next = time.perf_counter()
        self.incoming.append((seq, out))

    def hand_out(self, budget: int) -> int:
        subs, batch, done = self.subs, self.batch, self.done
        end = min(len(subs), done + budget)
        for i in range(done, end):
            subscription = subs[i]
            try:
                for seq, out in batch:
                    subscription.deliver(seq, out)
            except Exception:  # one session's failure never stops the fan-out to the others
                _failed(subscription)
        self.done = end
        return end - done

    def next_round(self) -> bool:
        if not self.incoming:
            self.over, self.batch = True, []
            return False
        self.batch, self.incoming, self.done = self.incoming, [], 0
        self.started = self.started_next
        return True


class _Ring:
    """A ticks channel's fan-out: a cursor goes round its subscribers and hands each, in one turn of the loop, every
    tick published since the cursor last passed it. A tick waits at most one lap, half of one on average, and a
    market faster than a lap costs one write per subscriber per lap, not one per tick. It runs until the cursor has
    passed every subscriber once since the last tick."""

    __slots__ = ("cursor", "key", "lap_started", "log", "over", "seqs", "subs", "version", "waiting_for")

    def __init__(self, key: tuple[str, str], version: int, subs: list[Subscription]) -> None:
        self.key = key
        self.version = version
        self.subs = subs
        self.log: list[tuple[int, Outgoing]] = []  # ticks some subscriber has not been handed yet
        self.seqs: list[int] = []  # their seqs
        self.cursor = 0
        self.waiting_for = 0  # subscribers to pass before every one has every tick
        self.over = False  # every subscriber has every tick: it is out of the hub's FIFO
        self.lap_started = time.perf_counter()

    def add(self, seq: int, out: Outgoing) -> None:
        self.log.append((seq, out))
        self.seqs.append(seq)
        self.waiting_for = len(self.subs)

    def resubscribe(self, version: int, subs: list[Subscription]) -> None:
        """Someone subscribed or left: the cursor goes on over the new list, a whole lap from here."""
        self.version, self.subs = version, subs
        self.cursor = self.cursor if self.cursor < len(subs) else 0
        self.waiting_for = len(subs)

    def go_round(self, budget: int) -> int:
        subs, log, seqs = self.subs, self.log, self.seqs
        last = seqs[-1] if seqs else 0
        visits = min(budget, self.waiting_for)
        i = self.cursor
        for _ in range(visits):
            subscription = subs[i]
            if subscription.upto < last:
                try:
                    for j in range(bisect_right(seqs, subscription.upto), len(log)):  # no copy of the log per visit
                        subscription.deliver(*log[j])
                except Exception:  # one session's failure never stops the fan-out to the others
                    _failed(subscription)
                subscription.upto = last
            i += 1
            if i == len(subs):
                i = 0
                self._lapped()
        self.cursor = i
        self.waiting_for -= visits
        if not self.waiting_for:
            log.clear()
            seqs.clear()
        return visits

    def _lapped(self) -> None:
        """Back at the first subscriber: the ticks every subscriber has are dropped."""
        now = time.perf_counter()
        metrics.FANOUT_SECONDS.observe(now - self.lap_started)
        self.lap_started = now
        floor = min((s.upto for s in self.subs if not s.closed), default=self.seqs[-1] if self.seqs else 0)
        keep = bisect_right(self.seqs, floor)
        del self.log[:keep], self.seqs[:keep]


def _failed(subscription: Subscription) -> None:
    log.exception("fan-out to a session failed", extra={"channel": subscription.channel})


def _key(account_id: str, channel: str) -> tuple[str, str]:
    return (GLOBAL, channel) if channel.startswith("ticks:") else (account_id, channel)


def replay(deliveries: list[Delivery]) -> list[Outgoing]:
    return [Outgoing(frames.event(d.channel, d.seq, d.event.event, dumps(d.event.data))) for d in deliveries]


__all__ = ["Hub", "Sink", "Subscription", "replay"]
