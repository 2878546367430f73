"""An in-process trading core: SQLite store on a temp file, memory bus, paper venue on a still market."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rt.bus.memory import MemoryBus
from rt.engine import trading
from rt.engine.engine import Changes, Engine, EngineConfig
from rt.engine.requests import OrderRequest, PositionRequest
from rt.exchanges import Ticker
from rt.exchanges.feed import MarketFeed
from rt.exchanges.paper import PaperExchange
from rt.exchanges.registry import Venues
from rt.records.events import Delivery
from rt.records.trading import Book, Order, Position
from rt.store.sqlite import SQLiteStore

SYMBOL = "BTC/USDT"
# At 100 the price step is 0.01 and the spread one step either side: bid 99.99, ask 100.01.
PRICES = {SYMBOL: Decimal("100"), "ETH/USDT": Decimal("10")}
FEE = Decimal("0.001")
START = Decimal("100000")


@dataclass
class Rig:
    path: str
    store: SQLiteStore
    bus: MemoryBus
    feed: MarketFeed
    paper: PaperExchange
    engine: Engine
    account_id: str
    slippage_bps: Decimal
    closed: bool = False
    successor: Rig | None = None

    @classmethod
    async def open(
        cls,
        path: str,
        account_id: str | None = None,
        *,
        config: EngineConfig | None = None,
        prices: dict[str, Decimal] | None = None,
        slippage_bps: Decimal = Decimal(0),
    ) -> Rig:
        store = await SQLiteStore.open(path)
        if account_id is None:
            account_id = (await store.create_account("trader")).id
        bus = MemoryBus()
        feed = MarketFeed(dict(prices or PRICES), interval=0)
        paper = PaperExchange(feed, FEE, slippage_bps)
        engine = Engine(store, bus, Venues(paper), config or EngineConfig())
        await engine.start()
        return cls(path, store, bus, feed, paper, engine, account_id, slippage_bps)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.engine.close()
        await self.bus.close()
        await self.store.close()

    async def restart(self) -> Rig:
        """A new process on the same store file, the market where it was."""
        prices = {s: t.last for s in self.feed.markets if (t := self.feed.ticker(s)) is not None}
        await self.close()
        self.successor = await Rig.open(
            self.path, self.account_id, config=self.engine.config, prices=prices, slippage_bps=self.slippage_bps
        )
        return self.successor

    def set_price(self, price: Decimal | str | int, symbol: str = SYMBOL) -> Ticker:
        return self.feed.set_price(symbol, Decimal(price))

    async def settle(self) -> None:
        """Let the fills and protective closes that ticks started run to the end."""
        for _ in range(100):
            pending = [*self.paper._pending, *self.engine._tasks]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)
        raise AssertionError("the engine kept spawning work")

    async def book(self) -> Book:
        return await self.engine.book(self.account_id)

    async def limits(self, **limits: Any) -> None:
        """Change the envelope the way PUT /v1/risk/envelope does (stored with the book)."""

        async def command(changes: Changes) -> None:
            changes.book.envelope = replace(changes.book.envelope, **{k: _limit(v) for k, v in limits.items()})
            changes.book_changed = True

        await self.engine.run(self.account_id, command)

    async def set_state(self, state: str) -> None:
        async def command(changes: Changes) -> None:
            changes.book.state = state  # type: ignore[assignment]
            changes.book_changed = True

        await self.engine.run(self.account_id, command)

    def as_account(self, account_id: str) -> Rig:
        """The same engine, trading for another account."""
        return replace(self, account_id=account_id, successor=None)

    async def order(self, side: str, quantity: Decimal | str, **fields: Any) -> Order:
        req = OrderRequest.model_validate({"symbol": SYMBOL, "side": side, "quantity": quantity, **fields})
        return await trading.place_order(self.engine, self.account_id, req)

    async def position(self, side: str, quantity: Decimal | str, **fields: Any) -> Position:
        req = PositionRequest.model_validate({"symbol": SYMBOL, "side": side, "quantity": quantity, **fields})
        position, _ = await trading.open_position(self.engine, self.account_id, req)
        return position

    async def close_position(self, position_id: str) -> Position:
        return await trading.close_position(self.engine, self.account_id, position_id)

    async def history(self, channel: str = "events") -> list[Delivery]:
        deliveries = await self.bus.history(self.account_id, channel, 0)
        assert deliveries is not None
        return deliveries

    async def event_names(self, channel: str = "events") -> list[str]:
        return [d.event.event for d in await self.history(channel)]

    async def stored_positions(self, *status: str) -> list[Position]:
        positions, _ = await self.store.list_positions(self.account_id, list(status) or None, None, None, 500, 0)
        return positions

    async def stored_orders(self, *status: str) -> list[Order]:
        orders, _ = await self.store.list_orders(self.account_id, list(status) or None, None, None, 500, 0)
        return orders


def _limit(value: Any) -> Any:
    return value if isinstance(value, int) else Decimal(value)


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    """Open a rig on its own store file (keyword arguments as Rig.open); every rig and its restarts close at the end."""
    made: list[Rig] = []

    async def factory(**kwargs: Any) -> Rig:
        opened = await Rig.open(str(tmp_path / f"rt{len(made)}.db"), **kwargs)
        made.append(opened)
        return opened

    try:
        yield factory
    finally:
        for first in made:
            current: Rig | None = first
            while current is not None:
                await current.close()
                current = current.successor


@pytest.fixture
async def rig(make_rig: RigFactory) -> Rig:
    return await make_rig()
