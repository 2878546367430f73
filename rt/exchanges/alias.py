"""A simulated venue by another name: the paper market answering to a real exchange's id (a dry run).

Every alias delegates to the one PaperExchange, so an order on `binance` rests among the paper venue's orders, fills at
its prices and comes back through the paper venue's fill handlers (fills are routed by venue order id, whichever name
the order was placed under). Only ticks are heard under the alias's own id, so positions booked on it are marked.
"""

from __future__ import annotations

import re
from decimal import Decimal

from rt.exchanges import FillHandler, Market, OrderSpec, Ticker, TickHandler, VenueOrder
from rt.exchanges.paper import PaperExchange

# What an exchange id looks like (ccxt's ids: lowercase letters, digits, a few marks); at most what a request takes.
_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")


def valid_id(exchange_id: str) -> bool:
    return bool(_ID.fullmatch(exchange_id)) and exchange_id != PaperExchange.id


class PaperAlias:
    simulated = True

    def __init__(self, exchange_id: str, paper: PaperExchange) -> None:
        if not valid_id(exchange_id):
            raise ValueError(f"{exchange_id!r} cannot name a simulated venue")
        self.id = exchange_id
        self.paper = paper

    def __repr__(self) -> str:
        return f"PaperAlias({self.id!r})"

    @property
    def connected(self) -> bool:
        return self.paper.connected

    async def start(self) -> None:
        """The paper venue is started (and closed) once, as itself."""

    async def close(self) -> None:
        """See start."""

    async def markets(self) -> list[Market]:
        return await self.paper.markets()

    async def market(self, symbol: str) -> Market | None:
        return await self.paper.market(symbol)

    async def ticker(self, symbol: str) -> Ticker:
        return await self.paper.ticker(symbol)

    async def place(self, spec: OrderSpec) -> VenueOrder:
        return await self.paper.place(spec)

    async def cancel(self, venue_order_id: str, symbol: str) -> VenueOrder:
        return await self.paper.cancel(venue_order_id, symbol)

    async def balances(self) -> dict[str, Decimal]:
        return await self.paper.balances()

    def on_fill(self, handler: FillHandler) -> None:
        """Nothing to add: the paper venue's fill handlers hear every fill of the simulated market, this name's too;
        a second registration would deliver each fill twice."""

    def on_tick(self, handler: TickHandler) -> None:
        self.paper.on_tick(handler)

    def adopt(self, venue_order_id: str, spec: OrderSpec) -> None:
        self.paper.adopt(venue_order_id, spec)

    def forget(self, venue_order_id: str) -> None:
        self.paper.forget(venue_order_id)

    def watch(self, symbol: str) -> None:
        self.paper.watch(symbol)
