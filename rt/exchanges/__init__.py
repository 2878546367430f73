"""The Exchange seam: markets, tickers, orders, fills. `paper` (built in, simulated market) and its aliases under
real exchange ids (rt.exchanges.alias) | `ccxt` (real venues)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Context, Decimal
from typing import Literal, Protocol

from rt.errors import RtError

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop"]
VenueStatus = Literal["open", "filled", "canceled", "rejected"]


class ExchangeUnavailable(RtError):
    status, code = 503, "EXCHANGE_UNAVAILABLE"


class ExchangeRejected(RtError):
    """The venue refused the order (insufficient funds, bad symbol, ...)."""

    status, code = 422, "VALIDATION_FAILED"


@dataclass(frozen=True)
class Market:
    symbol: str
    base: str
    quote: str
    price_step: Decimal
    amount_step: Decimal
    min_amount: Decimal

    def round_price(self, price: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
        """`price` on this market's price step, the nearest by default (for prices rt computes: grid levels, stops)."""
        return _to_step(price, self.price_step, rounding)

    def round_amount(self, amount: Decimal, rounding: str = ROUND_DOWN) -> Decimal:
        """`amount` on this market's amount step, rounded down by default so it never exceeds what was meant."""
        return _to_step(amount, self.amount_step, rounding)

    def price_on_step(self, price: Decimal) -> bool:
        return _on_step(price, self.price_step)

    def amount_on_step(self, amount: Decimal) -> bool:
        return _on_step(amount, self.amount_step)


# Enough digits for any value over the finest step a venue gives (1e15 / 1e-30), so the division is exact.
_STEPS = Context(prec=60)


def _to_step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    if step <= 0:  # the venue gives no step: any value goes
        return value
    return _STEPS.multiply(_STEPS.divide(value, step).to_integral_value(rounding), step)


def _on_step(value: Decimal, step: Decimal) -> bool:
    return step <= 0 or _STEPS.remainder(value, step) == 0


@dataclass(frozen=True)
class Ticker:
    symbol: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    ts_ms: int
    # The symbol's tick number in the one market of several instances (set by the market's holder, 0 elsewhere), so
    # every instance gives a tick the same `seq` on its ticks channel.
    seq: int = 0

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2

    def triggers(self, side: Side, stop_price: Decimal) -> bool:
        """A stop buy triggers when the ask reaches its stop price, a stop sell when the bid does."""
        return self.ask >= stop_price if side == "buy" else self.bid <= stop_price


@dataclass(frozen=True)
class OrderSpec:
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class Fill:
    venue_order_id: str
    price: Decimal
    quantity: Decimal
    fee: Decimal


@dataclass(frozen=True)
class VenueOrder:
    venue_order_id: str
    status: VenueStatus
    fill: Fill | None = None


FillHandler = Callable[[Fill], Awaitable[None]]
TickHandler = Callable[[Ticker], None]


class Exchange(Protocol):
    id: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    @property
    def connected(self) -> bool: ...
    @property
    def simulated(self) -> bool:
        """True when nothing real is at stake: the paper venue and its aliases, a ccxt venue in sandbox mode."""

    async def markets(self) -> list[Market]: ...
    async def market(self, symbol: str) -> Market | None:
        """The market for `symbol`, or None when the venue lists no such (active) market."""

    async def ticker(self, symbol: str) -> Ticker:
        """Raises ExchangeUnavailable when the venue cannot be reached, BadRequest for an unknown symbol."""

    async def place(self, spec: OrderSpec) -> VenueOrder:
        """A market order answers filled; a resting one answers open and fills later through the fill handler."""

    async def cancel(self, venue_order_id: str, symbol: str) -> VenueOrder: ...
    async def balances(self) -> dict[str, Decimal]: ...
    def on_fill(self, handler: FillHandler) -> None: ...
    def on_tick(self, handler: TickHandler) -> None: ...
    def adopt(self, venue_order_id: str, spec: OrderSpec) -> None:
        """Follow an open order the store holds (placed before a restart, or by another instance) until it fills."""

    def forget(self, venue_order_id: str) -> None:
        """Stop following an order that is no longer open in the store (it filled or was canceled elsewhere)."""

    def watch(self, symbol: str) -> None:
        """Tick this symbol from now on (a position is open on it)."""


__all__ = [
    "Exchange",
    "ExchangeRejected",
    "ExchangeUnavailable",
    "Fill",
    "FillHandler",
    "Market",
    "OrderSpec",
    "TickHandler",
    "Ticker",
    "VenueOrder",
]
