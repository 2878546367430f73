"""rt/exchanges/paper: where the paper venue fills market, limit and stop orders. BTC/USDT at 100: bid 99.99, ask
100.01."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from rt.exchanges import ExchangeRejected, Fill, OrderSpec
from rt.exchanges.feed import MarketFeed
from rt.exchanges.paper import PaperExchange

BTC = "BTC/USDT"
D = Decimal


def _venue(slippage_bps: Decimal = Decimal(0)) -> tuple[MarketFeed, PaperExchange, list[Fill]]:
    feed = MarketFeed({BTC: D(100)}, interval=0)
    paper = PaperExchange(feed, D("0.001"), slippage_bps)
    fills: list[Fill] = []

    async def collect(fill: Fill) -> None:
        fills.append(fill)

    paper.on_fill(collect)
    return feed, paper, fills


async def _settle(paper: PaperExchange) -> None:
    await asyncio.gather(*paper._pending)


@pytest.mark.parametrize(
    ("side", "limit", "gap"),
    [pytest.param("buy", "95", "80", id="buy"), pytest.param("sell", "105", "120", id="sell")],
)
async def test_a_resting_limit_fills_at_its_limit_through_a_gap(side: str, limit: str, gap: str) -> None:
    feed, paper, fills = _venue(slippage_bps=D(25))
    placed = await paper.place(OrderSpec(BTC, side, "limit", D(2), price=D(limit)))  # type: ignore[arg-type]
    assert placed.status == "open"
    feed.set_price(BTC, D(gap))
    await _settle(paper)
    (fill,) = fills
    assert (fill.venue_order_id, fill.price, fill.quantity, fill.fee) == (
        placed.venue_order_id,
        D(limit),
        D(2),
        D(limit) * 2 * D("0.001"),
    )


async def test_a_resting_limit_the_market_only_touches_fills_at_its_limit() -> None:
    feed, paper, fills = _venue()
    await paper.place(OrderSpec(BTC, "buy", "limit", D(1), price=D(95)))
    feed.set_price(BTC, D("95.01"))  # ask 95.02: not yet
    feed.set_price(BTC, D("94.99"))  # ask 95.00: reached
    await _settle(paper)
    assert [f.price for f in fills] == [D(95)]


@pytest.mark.parametrize(
    ("slippage_bps", "side", "limit", "price"),
    [
        pytest.param(D(0), "buy", "150", D("100.01"), id="buy-at-the-ask"),
        pytest.param(D(0), "sell", "50", D("99.99"), id="sell-at-the-bid"),
        pytest.param(D(10), "buy", "150", D("100.01") * D("1.001"), id="buy-with-slippage"),
        pytest.param(D(10), "buy", "100.05", D("100.05"), id="buy-capped-at-its-limit"),
        pytest.param(D(10), "sell", "99.95", D("99.95"), id="sell-capped-at-its-limit"),
    ],
)
async def test_a_marketable_limit_fills_at_once_as_a_taker(
    slippage_bps: Decimal, side: str, limit: str, price: Decimal
) -> None:
    _, paper, _ = _venue(slippage_bps)
    placed = await paper.place(OrderSpec(BTC, side, "limit", D(1), price=D(limit)))  # type: ignore[arg-type]
    assert placed.status == "filled" and placed.fill is not None
    assert placed.fill.price == price


@pytest.mark.parametrize(
    ("side", "stop"), [pytest.param("buy", "100.01", id="buy-at-the-ask"), pytest.param("sell", "100", id="sell")]
)
async def test_the_venue_refuses_a_stop_that_would_trigger_at_once(side: str, stop: str) -> None:
    _, paper, _ = _venue()
    with pytest.raises(ExchangeRejected) as refused:
        await paper.place(OrderSpec(BTC, side, "stop", D(1), stop_price=D(stop)))  # type: ignore[arg-type]
    assert refused.value.extra["details"]["check"] == "exchange"
    assert paper._resting == {}


async def test_a_triggered_stop_is_a_market_order_with_slippage() -> None:
    feed, paper, fills = _venue(slippage_bps=D(10))
    await paper.place(OrderSpec(BTC, "sell", "stop", D(1), stop_price=D(95)))
    feed.set_price(BTC, D(90))  # gaps through 95: sold at the bid, less slippage, not at the stop
    await _settle(paper)
    assert [f.price for f in fills] == [D("89.99") * D("0.999")]


async def test_a_venue_that_does_not_match_leaves_resting_orders_resting_until_it_does() -> None:
    feed, paper, fills = _venue()
    placed = await paper.place(OrderSpec(BTC, "buy", "limit", D(1), price=D(95)))
    paper.matching = False  # another instance holds the market and matches
    feed.set_price(BTC, D(90))
    await _settle(paper)
    assert fills == []
    paper.matching = True
    feed.set_price(BTC, D(90))
    await _settle(paper)
    assert [(f.venue_order_id, f.price) for f in fills] == [(placed.venue_order_id, D(95))]


async def test_starting_the_venue_does_not_move_the_market() -> None:
    feed = MarketFeed({BTC: D(100)}, interval=0.001)
    paper = PaperExchange(feed)
    before = feed.ticker(BTC)
    await paper.start()
    await asyncio.sleep(0.01)  # ten intervals: a feed run by the venue would have stepped
    assert feed.ticker(BTC) == before
    await paper.close()


async def test_an_adopted_order_rests_and_a_forgotten_one_never_fills() -> None:
    feed, paper, fills = _venue()
    spec = OrderSpec(BTC, "buy", "limit", D(1), price=D(95))
    paper.adopt("paper-kept", spec)
    paper.adopt("paper-gone", spec)
    # Canceled (or filled) on another instance: the store no longer holds it open.
    paper.forget("paper-gone")
    feed.set_price(BTC, D(90))
    await _settle(paper)
    assert [f.venue_order_id for f in fills] == ["paper-kept"]
