"""rt/channels/hub: a tick's seq on its channel is the one market's number for it when the market is shared, so a
client resuming with `since` on another instance neither misses ticks nor hears them twice."""

from __future__ import annotations

from decimal import Decimal as D

from rt.bus.memory import MemoryBus
from rt.channels.hub import Hub
from rt.exchanges import Ticker

BTC = "BTC/USDT"


def tick(price: int, seq: int = 0) -> Ticker:
    return Ticker(BTC, D(price) - 1, D(price) + 1, D(price), 1, seq)


async def test_a_tick_numbered_by_the_market_keeps_its_number_and_one_heard_already_is_dropped() -> None:
    hub = Hub(MemoryBus())
    channel = f"ticks:{BTC}"
    hub.tick(tick(100, seq=41))
    assert hub.tick_seq(channel) == 41
    hub.tick(tick(101, seq=42))
    hub.tick(tick(99, seq=42))  # heard twice (a takeover's overlap): once is enough
    assert hub.tick_seq(channel) == 42
    assert len(hub.tick_history(channel, 40) or []) == 2


async def test_alone_ticks_are_numbered_here() -> None:
    hub = Hub(MemoryBus())
    channel = f"ticks:{BTC}"
    for price in (100, 101, 102):
        hub.tick(tick(price))
    assert hub.tick_seq(channel) == 3
    assert hub.tick_history(channel, 1) is not None and len(hub.tick_history(channel, 1) or []) == 2
