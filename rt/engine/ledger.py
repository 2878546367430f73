"""P&L, margin and fills: pure functions over a Book (see docs/trading.md for the model). Every amount booked is in
the account's currency: a fill's P&L and fee, in the market's quote currency, count at the quote's rate then."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rt.exchanges import Fill
from rt.records.trading import ZERO, Book, Order, Position, now, to_account


@dataclass
class Applied:
    """What one fill changed."""

    opened: list[Position] = field(default_factory=list)
    updated: list[Position] = field(default_factory=list)
    closed: list[Position] = field(default_factory=list)
    realized: Decimal = ZERO


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def roll_day(book: Book, day: str | None = None) -> None:
    day = day or today()
    if book.day != day:
        book.day = day
        book.day_realized = ZERO


def unrealized(book: Book) -> Decimal:
    return sum((p.unrealized_pnl for p in book.open_positions()), ZERO)


def equity(book: Book) -> Decimal:
    return book.balance + unrealized(book)


def margin_used(book: Book, leverage: Decimal) -> Decimal:
    return sum((p.entry_notional for p in book.open_positions()), ZERO) / leverage


def exposure_notional(book: Book) -> Decimal:
    return sum((p.notional for p in book.open_positions()), ZERO)


def daily_pnl(book: Book) -> Decimal:
    """Realized since 00:00 UTC plus the unrealized P&L of every open position."""
    roll_day(book)
    return book.day_realized + unrealized(book)


def summary(book: Book, leverage: Decimal) -> dict[str, Any]:
    eq = equity(book)
    used = margin_used(book, leverage)
    return {
        "account_id": book.account_id,
        "currency": book.currency,
        "balance": book.balance,
        "equity": eq,
        "margin_used": used,
        "free_margin": eq - used,
        "realized_pnl": book.realized_total,
        "unrealized_pnl": eq - book.balance,
        "daily_pnl": daily_pnl(book),
        "open_positions": len(book.open_positions()),
        "open_orders": sum(1 for o in book.orders.values() if o.status == "open"),
        "trading_state": book.state,
    }


def _realize(book: Book, amount: Decimal) -> None:
    roll_day(book)
    book.balance += amount
    book.day_realized += amount
    book.realized_total += amount


def reduce_position(
    book: Book, position: Position, price: Decimal, quantity: Decimal, fee: Decimal, reason: str, out: Applied
) -> None:
    pnl = to_account(
        (price - position.entry_price) * quantity * position.sign - fee, position.symbol, price, position.cross_rate
    )
    position.realized_pnl += pnl
    position.current_price = price
    _realize(book, pnl)
    out.realized += pnl
    if quantity >= position.quantity:
        # A closed position keeps the quantity it last held, so the record says what was closed.
        position.status = "closed"
        position.closed_at = now()
        position.close_reason = reason
        out.closed.append(position)
    else:
        position.quantity -= quantity
        out.updated.append(position)


def open_position(
    book: Book, order: Order, price: Decimal, quantity: Decimal, fee: Decimal, position_id: str, out: Applied
) -> Position:
    position = book.positions.get(position_id)
    if position is None or position.status != "pending":
        position = Position(
            id=position_id,
            account_id=book.account_id,
            exchange=order.exchange,
            symbol=order.symbol,
            side="long" if order.side == "buy" else "short",
            quantity=quantity,
            entry_price=price,
            status="open",
            stop_loss=order.stop_loss,
            take_profit=order.take_profit,
            strategy_id=order.strategy_id,
            entry_order_id=order.id,
        )
        book.positions[position.id] = position
    position.simulated = order.simulated
    position.status = "open"
    position.quantity = quantity
    position.entry_price = price
    position.current_price = price
    if order.cross_rate is not None:
        position.cross_rate = order.cross_rate
    fee = to_account(fee, order.symbol, price, order.cross_rate)
    position.realized_pnl -= fee
    _realize(book, -fee)
    out.realized -= fee
    out.opened.append(position)
    return position


def mark_simulated(book: Book, order: Order, simulated: bool) -> None:
    """An order says whether its venue is simulated, and so does the pending position its entry opens."""
    order.simulated = simulated
    pending = book.positions.get(order.position_id or "") if order.intent == "open" else None
    if pending is not None and pending.status == "pending":
        pending.simulated = simulated


def nettable(book: Book, exchange: str, symbol: str, side: str, owner: str | None) -> list[Position]:
    """The open positions an order on this side may reduce: the opposite side, same venue and symbol, same owner
    (a strategy's orders net only against that strategy's positions, manual orders only against manual ones)."""
    opposite = "short" if side == "buy" else "long"
    return [
        p
        for p in book.open_positions()
        if p.exchange == exchange and p.symbol == symbol and p.side == opposite and p.strategy_id == owner
    ]


def _age(position: Position) -> datetime:
    return position.created_at


def apply_fill(book: Book, order: Order, fill: Fill, new_position_id: str, reason: str = "order") -> Applied:
    """Book a fill: update the order, then open, reduce or net positions as the order's intent says."""
    out = Applied()
    order.status = "filled"
    order.filled_quantity = fill.quantity
    order.average_price = fill.price
    order.fee = fill.fee
    order.updated_at = now()
    remaining = fill.quantity
    target = book.positions.get(order.position_id or "")
    if order.intent == "close" and target is not None and target.status == "open":
        reduce_position(book, target, fill.price, min(remaining, target.quantity), fill.fee, reason, out)
        return out
    # A close whose position is already gone (closed by another fill first) still moved the market: it nets.
    if order.intent in ("net", "close"):
        for position in sorted(nettable(book, order.exchange, order.symbol, order.side, order.strategy_id), key=_age):
            if remaining <= 0:
                break
            take = min(remaining, position.quantity)
            reduce_position(book, position, fill.price, take, fill.fee * take / fill.quantity, reason, out)
            remaining -= take
            order.position_id = order.position_id or position.id
    if remaining > 0:
        position_id = order.position_id if order.intent == "open" and order.position_id else new_position_id
        if order.intent == "close":
            position_id = new_position_id
        fee = fill.fee * remaining / fill.quantity
        opened = open_position(book, order, fill.price, remaining, fee, position_id, out)
        order.position_id = opened.id
    return out
