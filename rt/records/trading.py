"""Orders, positions and an account's book, and what one write of them stores. Money is Decimal here; floats only at
the wire."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from rt.records.events import Event

PositionSide = Literal["long", "short"]
PositionStatus = Literal["pending_validation", "pending", "open", "closed", "rejected", "canceled"]
OrderStatus = Literal["open", "filled", "canceled", "rejected"]
TradingState = Literal["active", "reducing", "locked"]
# What a fill does: open a new position, reduce one position, or net against the symbol's positions (FIFO).
Intent = Literal["open", "close", "net"]

ZERO = Decimal(0)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Envelope:
    max_position_size: Decimal = Decimal("25000")
    max_exposure: Decimal = Decimal("3")
    max_daily_loss: Decimal = Decimal("5000")
    max_concurrent_positions: int = 20

    def as_json(self) -> dict[str, Any]:
        return {
            "max_position_size": self.max_position_size,
            "max_exposure": self.max_exposure,
            "max_daily_loss": self.max_daily_loss,
            "max_concurrent_positions": self.max_concurrent_positions,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Envelope:
        return cls(
            max_position_size=Decimal(str(data["max_position_size"])),
            max_exposure=Decimal(str(data["max_exposure"])),
            max_daily_loss=Decimal(str(data["max_daily_loss"])),
            max_concurrent_positions=int(data["max_concurrent_positions"]),
        )


@dataclass
class Position:
    id: str
    account_id: str
    exchange: str
    symbol: str
    side: PositionSide
    quantity: Decimal
    entry_price: Decimal
    status: PositionStatus
    current_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    strategy_id: str | None = None
    close_reason: str | None = None
    entry_order_id: str | None = None
    created_at: datetime = field(default_factory=now)
    closed_at: datetime | None = None
    # Booked on a simulated venue (paper, an alias of it, a sandbox): nothing real is at stake.
    simulated: bool = False

    @property
    def sign(self) -> int:
        return 1 if self.side == "long" else -1

    @property
    def unrealized_pnl(self) -> Decimal:
        if self.status != "open":
            return ZERO
        return (self.current_price - self.entry_price) * self.quantity * self.sign

    @property
    def notional(self) -> Decimal:
        return self.current_price * self.quantity

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "side": self.side,
            "entry_price": self.entry_price,
            "current_price": self.current_price,
            "quantity": self.quantity,
            "unrealized_pnl": self.unrealized_pnl,
            "realized_pnl": self.realized_pnl,
            "stop_loss": self.stop_loss,
            "take_profit": self.take_profit,
            "status": self.status,
            "strategy_id": self.strategy_id,
            "close_reason": self.close_reason,
            "created_at": self.created_at,
            "closed_at": self.closed_at,
            "simulated": self.simulated,
        }


@dataclass
class Order:
    id: str
    account_id: str
    exchange: str
    symbol: str
    side: Literal["buy", "sell"]
    type: Literal["market", "limit", "stop"]
    quantity: Decimal
    status: OrderStatus
    intent: Intent = "net"
    price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    client_order_id: str | None = None
    position_id: str | None = None
    strategy_id: str | None = None
    venue_order_id: str | None = None
    filled_quantity: Decimal = ZERO
    average_price: Decimal | None = None
    fee: Decimal = ZERO
    reject_reason: str | None = None
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)
    # Placed on a simulated venue (paper, an alias of it, a sandbox): nothing real is at stake.
    simulated: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "side": self.side,
            "type": self.type,
            "quantity": self.quantity,
            "price": self.price,
            "stop_price": self.stop_price,
            "stop_loss": self.stop_loss,
            "take_profit": self.take_profit,
            "status": self.status,
            "filled_quantity": self.filled_quantity,
            "average_price": self.average_price,
            "fee": self.fee,
            "position_id": self.position_id,
            "strategy_id": self.strategy_id,
            "reject_reason": self.reject_reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "simulated": self.simulated,
        }


@dataclass
class Book:
    """One account's live trading state, owned by its writer."""

    account_id: str
    balance: Decimal
    currency: str = "USDT"
    state: TradingState = "active"
    envelope: Envelope = field(default_factory=Envelope)
    day: str = ""
    day_realized: Decimal = ZERO
    realized_total: Decimal = ZERO
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    alerts: dict[str, str] = field(default_factory=dict)
    # Counts the account's stored writes: an instance whose copy is behind the store's reloads it before writing.
    version: int = 0

    def open_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if p.status == "open"]


@dataclass(frozen=True)
class StoredResponse:
    """An idempotent write's first answer."""

    fingerprint: str
    status: int
    body: bytes


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first answer to an account's idempotency key, stored with what the write changed."""

    account_id: str
    key: str
    response: StoredResponse


@dataclass
class TradeBatch:
    """Everything one write changed, written in one transaction: a crash leaves all of it or none."""

    books: list[Book] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    responses: list[IdempotencyRecord] = field(default_factory=list)
