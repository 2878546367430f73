"""The market role: its holder steps the paper feed, sends each step on the tick channel and applies it; every other
instance applies what it hears to its own feed, so the engine, the paper venue and the hub see one market."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from rt.coord import TickChannel, Ticks, raise_if_cancelled
from rt.exchanges import Ticker
from rt.exchanges.feed import MarketFeed

log = logging.getLogger("rt.coord.market")

MARKET = "market"


class Market:
    def __init__(self, feed: MarketFeed, channel: TickChannel, before_apply: Callable[[], None] | None = None) -> None:
        self.feed = feed
        self.channel = channel
        self._before_apply = before_apply
        self.highest = 0  # the largest fencing token heard: steps under a smaller one come from a deposed holder
        self.dropped = 0
        self._own: set[int] = set()  # the tokens this instance stepped under: their echoes are applied already
        self._seq: dict[str, int] = {}  # symbol -> the number of the last tick applied here
        self._stepping: asyncio.Task[None] | None = None

    def lead(self, token: int) -> None:
        """Start stepping the market from the prices applied here, under this fencing token."""
        self._own.add(token)
        self._stepping = asyncio.create_task(self._step(token), name="market-steps")

    async def follow(self) -> None:
        """Stop stepping (the role is lost or given up)."""
        task, self._stepping = self._stepping, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})

    async def _step(self, token: int) -> None:
        async def send(tickers: list[Ticker]) -> None:
            # Numbered on from the last tick applied here, so a new holder goes on where the last one stopped.
            numbered = tuple(replace(t, seq=self._seq.get(t.symbol, 0) + 1) for t in tickers)
            ticks = Ticks(token, numbered)
            sent = await self.channel.publish(MARKET, ticks)
            raise_if_cancelled()
            if not sent:
                log.warning("market step not sent: the lease is no longer this instance's", extra={"token": token})
                return
            # Applied here at once, not when it comes back: the holder's tick work does not hang on its subscription.
            self.receive(ticks)

        await self.feed.run(send)

    def receive(self, ticks: Ticks) -> bool:
        """Apply a step unless its token is older than one already heard."""
        if ticks.token < self.highest:
            self.dropped += 1
            log.warning("market step of a deposed holder dropped", extra={"token": ticks.token, "now": self.highest})
            return False
        self.highest = ticks.token
        if self._before_apply is not None:
            self._before_apply()
        for ticker in ticks.tickers:
            if ticker.symbol in self.feed.markets:
                self._seq[ticker.symbol] = max(self._seq.get(ticker.symbol, 0), ticker.seq)
                self.feed.apply(ticker)
        return True

    async def run(self) -> None:
        """Apply every step heard from another instance, for as long as this runs."""
        while True:
            try:
                async for ticks in self.channel.subscribe():
                    if ticks.token not in self._own:
                        self.receive(ticks)
                return
            except Exception:
                log.exception("tick channel failed, subscribing again")
                await asyncio.sleep(1)
