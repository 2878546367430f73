"""The paper venue: fills against the simulated feed with a fee and slippage; limit and stop orders rest here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass
from decimal import Decimal

from rt.errors import BadRequest
from rt.exchanges import ExchangeRejected, Fill, FillHandler, Market, OrderSpec, Ticker, TickHandler, VenueOrder
from rt.exchanges.feed import MarketFeed

log = logging.getLogger("rt.paper")


@dataclass
class _Resting:
    spec: OrderSpec
    venue_order_id: str


class PaperExchange:
    id = "paper"
    simulated = True

    def __init__(
        self, feed: MarketFeed, fee_rate: Decimal = Decimal("0.001"), slippage_bps: Decimal = Decimal("0")
    ) -> None:
        self._feed = feed
        self._fee_rate = fee_rate
        self._slippage = slippage_bps / Decimal(10000)
        self._resting: dict[str, _Resting] = {}
        self._filling: dict[str, Fill] = {}
        self._retry: dict[str, _Resting] = {}
        self._fill_handlers: list[FillHandler] = []
        # False on an instance that does not hold the market role: another instance matches resting orders.
        self.matching = True
        self._pending: set[asyncio.Task[None]] = set()
        feed.listen(self._on_tick)

    @property
    def feed(self) -> MarketFeed:
        return self._feed

    @property
    def connected(self) -> bool:
        return True

    async def start(self) -> None:
        """The feed is not run here: the instance holding the market role steps it (rt.coord.market)."""

    async def close(self) -> None:
        tasks = list(self._pending)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def markets(self) -> list[Market]:
        return list(self._feed.markets.values())

    async def market(self, symbol: str) -> Market | None:
        return self._feed.markets.get(symbol)

    async def ticker(self, symbol: str) -> Ticker:
        ticker = self._feed.ticker(symbol)
        if ticker is None:
            raise BadRequest(
                f"unknown symbol {symbol!r} on paper",
                errors=[{"field": "symbol", "message": f"one of {', '.join(self._feed.markets)}"}],
            )
        return ticker

    def on_fill(self, handler: FillHandler) -> None:
        self._fill_handlers.append(handler)

    def on_tick(self, handler: TickHandler) -> None:
        self._feed.listen(handler)

    async def balances(self) -> dict[str, Decimal]:
        return {}

    def market_price(self, ticker: Ticker, side: str) -> Decimal:
        """Where a market order fills now: the far side of the spread, moved by slippage."""
        if side == "buy":
            return ticker.ask * (1 + self._slippage)
        return ticker.bid * (1 - self._slippage)

    def fee(self, price: Decimal, quantity: Decimal) -> Decimal:
        return price * quantity * self._fee_rate

    def _fill(self, venue_order_id: str, price: Decimal, quantity: Decimal) -> Fill:
        return Fill(venue_order_id, price, quantity, self.fee(price, quantity))

    def _fill_price(self, spec: OrderSpec, ticker: Ticker, *, resting: bool) -> Decimal | None:
        """The price this order fills at against this ticker, or None when it keeps resting. At submission a
        marketable limit is a taker: the market price (with slippage) when better than its limit, else its limit.
        Once resting it is a maker: when the market reaches it, it fills at its limit, even through a gap."""
        buy = spec.side == "buy"
        if spec.type == "market":
            return self.market_price(ticker, spec.side)
        if spec.type == "limit":
            assert spec.price is not None
            if not (ticker.ask <= spec.price if buy else ticker.bid >= spec.price):
                return None
            if resting:
                return spec.price
            market = self.market_price(ticker, spec.side)
            return min(spec.price, market) if buy else max(spec.price, market)
        return self.market_price(ticker, spec.side) if _triggered(spec, ticker) else None

    async def place(self, spec: OrderSpec) -> VenueOrder:
        ticker = await self.ticker(spec.symbol)
        if spec.type == "stop" and _triggered(spec, ticker):
            reason = "the stop would trigger at once"
            details = {"check": "exchange", "reason": reason}
            raise ExchangeRejected(f"paper rejected the order: {reason}", details=details)
        venue_order_id = f"paper-{secrets.token_hex(8)}"
        price = self._fill_price(spec, ticker, resting=False)
        if price is not None:
            return VenueOrder(venue_order_id, "filled", self._fill(venue_order_id, price, spec.quantity))
        self._resting[venue_order_id] = _Resting(spec, venue_order_id)
        return VenueOrder(venue_order_id, "open")

    async def cancel(self, venue_order_id: str, symbol: str) -> VenueOrder:
        if self._resting.pop(venue_order_id, None) is None:
            # Nothing resting: it has already filled; the fill goes along while its delivery is still under way.
            return VenueOrder(venue_order_id, "filled", self._filling.get(venue_order_id))
        return VenueOrder(venue_order_id, "canceled")

    def adopt(self, venue_order_id: str, spec: OrderSpec) -> None:
        """Rest an order the store holds open (after a restart, or placed on another instance)."""
        if venue_order_id not in self._filling:
            self._resting[venue_order_id] = _Resting(spec, venue_order_id)

    def forget(self, venue_order_id: str) -> None:
        self._resting.pop(venue_order_id, None)

    def watch(self, symbol: str) -> None:
        """Every symbol of the simulated market ticks already."""

    def _on_tick(self, ticker: Ticker) -> None:
        if not self.matching:
            return
        fills = []
        for venue_order_id, resting in list(self._resting.items()):
            if resting.spec.symbol != ticker.symbol:
                continue
            price = self._fill_price(resting.spec, ticker, resting=True)
            if price is not None:
                del self._resting[venue_order_id]
                self._retry[venue_order_id] = resting
                fills.append(self._fill(venue_order_id, price, resting.spec.quantity))
        if fills and self._fill_handlers:
            self._filling.update((fill.venue_order_id, fill) for fill in fills)
            task = asyncio.get_running_loop().create_task(self._deliver(fills))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _deliver(self, fills: list[Fill]) -> None:
        try:
            for fill in fills:
                for handler in self._fill_handlers:
                    try:
                        await handler(fill)
                    except Exception:
                        log.exception("fill handler failed", extra={"venue_order_id": fill.venue_order_id})
                        # Not booked: the order rests again and fills (and is booked) on a later tick.
                        resting = self._retry.get(fill.venue_order_id)
                        if resting is not None and fill.venue_order_id in self._filling:
                            self._resting[fill.venue_order_id] = resting
        finally:
            for fill in fills:
                self._filling.pop(fill.venue_order_id, None)
                self._retry.pop(fill.venue_order_id, None)


def _triggered(spec: OrderSpec, ticker: Ticker) -> bool:
    assert spec.stop_price is not None
    return ticker.triggers(spec.side, spec.stop_price)
