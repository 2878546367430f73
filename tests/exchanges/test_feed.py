"""rt/exchanges/feed: the simulated market. A step made elsewhere is applied as it is; a walk proposes the next step
without moving the market; run() either steps here or hands each step on, walking on from the last."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from rt.exchanges import Ticker
from rt.exchanges.feed import MarketFeed

BTC, ETH = "BTC/USDT", "ETH/USDT"
D = Decimal


def test_apply_takes_a_tick_as_it_is_and_moves_nothing_else() -> None:
    feed = MarketFeed({BTC: D(100), ETH: D(10)}, interval=0)
    eth = feed.ticker(ETH)
    heard: list[Ticker] = []
    feed.listen(heard.append)
    made = Ticker(BTC, D("101.5"), D("102.5"), D(102), 1234)
    assert feed.apply(made) == made
    assert heard == [made] and feed.ticker(BTC) == made and feed.ticker(ETH) == eth


def test_a_walk_proposes_the_next_step_without_applying_it() -> None:
    feed = MarketFeed({BTC: D(100)}, interval=0, seed=3, volatility=0.01)
    heard: list[Ticker] = []
    feed.listen(heard.append)
    before = feed.ticker(BTC)
    (proposed,) = feed.walk()
    assert heard == [] and feed.ticker(BTC) == before
    assert proposed.symbol == BTC and proposed.last != D(100) and proposed.bid < proposed.last < proposed.ask
    (from_elsewhere,) = feed.walk({BTC: D(200)})
    assert abs(from_elsewhere.last - 200) < 20


def test_a_step_is_the_same_walk_for_the_same_seed() -> None:
    stepped = MarketFeed({BTC: D(100)}, interval=0, seed=11)
    walked = MarketFeed({BTC: D(100)}, interval=0, seed=11)
    stepped.step()
    (proposed,) = walked.walk()
    ticker = stepped.ticker(BTC)
    assert ticker is not None and ticker.last == proposed.last


async def test_run_hands_each_step_on_walking_on_from_the_last_without_applying_it() -> None:
    feed = MarketFeed({BTC: D(100)}, interval=0.005, seed=5, volatility=0.01)
    replay = MarketFeed({BTC: D(100)}, interval=0, seed=5, volatility=0.01)
    sent: asyncio.Queue[list[Ticker]] = asyncio.Queue()

    async def emit(tickers: list[Ticker]) -> None:
        sent.put_nowait(tickers)

    task = asyncio.create_task(feed.run(emit))
    try:
        steps = [(await sent.get())[0] for _ in range(3)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ticker = feed.ticker(BTC)
    assert ticker is not None and ticker.last == D(100)  # nothing applied: the market moves when the step comes back
    for step in steps:
        replay.step()
        replayed = replay.ticker(BTC)
        assert replayed is not None and step.last == replayed.last


async def test_no_ticks_at_interval_zero() -> None:
    feed = MarketFeed({BTC: D(100)}, interval=0)

    async def emit(tickers: list[Ticker]) -> None:
        raise AssertionError("no step expected")

    await asyncio.wait_for(feed.run(emit), 1)
