"""Orders and positions: the engine functions REST routes and WebSocket commands both call."""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from typing import Any

from rt import metrics
from rt.engine import ledger, risk, rules
from rt.engine.engine import Changes, Engine
from rt.engine.requests import EntryUpdate, OrderRequest, PositionRequest, PositionUpdate
from rt.errors import BadRequest, NotFound, RtError
from rt.exchanges import Exchange, Fill, OrderSpec, Side, Ticker
from rt.records.ids import new_id
from rt.records.trading import Book, Order, Position, now

log = logging.getLogger("rt.engine")


class OrderNotOpen(RtError):
    status, code = 409, "ORDER_NOT_OPEN"


class PositionNotOpen(RtError):
    status, code = 409, "POSITION_NOT_OPEN"


def spec_of(order: Order) -> OrderSpec:
    return OrderSpec(order.symbol, order.side, order.type, order.quantity, order.price, order.stop_price, order.id)


def _estimate(order: Order, ticker: Ticker) -> Decimal:
    """The price Cerberus judges an order at: never below what it can fill at now. A sell limit under the bid fills at
    once at the bid, so the market price counts when it is the larger; a stop sell, resting under the bid, too."""
    market = ticker.ask if order.side == "buy" else ticker.bid
    own = order.price if order.type == "limit" else order.stop_price if order.type == "stop" else None
    if own is None:
        return market
    return max(own, market) if order.side == "sell" or order.type == "stop" else own


async def _submit(
    engine: Engine, changes: Changes, venue: Exchange, order: Order, reason: str = "order"
) -> list[risk.Check]:
    """Cerberus, then the venue, then the books. Raises ValidationFailed (order stored as rejected)."""
    book = changes.book
    ledger.mark_simulated(book, order, venue.simulated)
    ticker = await venue.ticker(order.symbol)
    if order.type == "stop":
        assert order.stop_price is not None
        rules.check_trigger(order.side, order.stop_price, ticker)
    order.cross_rate = engine.ticks.cross_rate(book.account_id, order.exchange, order.symbol)
    checks = _judge(engine, book, order, ticker, order.cross_rate)
    failed = [c for c in checks if not c.passed]
    if failed:
        order.status = "rejected"
        order.reject_reason = f"{failed[0].check}: {failed[0].reason}"
        changes.order(order, "order.rejected")
        risk.enforce(checks, order_id=order.id)
    metrics.ORDERS_ACCEPTED.inc()
    placed = await venue.place(spec_of(order))
    order.venue_order_id = placed.venue_order_id
    changes.order(order, "order.created")
    if placed.status == "filled" and placed.fill is not None:
        _book_fill(engine, changes, order, placed.fill, reason)
    elif placed.status == "open":
        book.orders[order.id] = order
        engine.track(order)
    else:
        order.status = "rejected"
        order.reject_reason = "rejected by the venue"
        changes.order(order, "order.rejected")
    return checks


def _judge(engine: Engine, book: Book, order: Order, ticker: Ticker, cross_rate: Decimal | None) -> list[risk.Check]:
    """Cerberus's checks of an order on this book, and its strategy's own limits on an order of a strategy."""
    proposal = risk.Proposal(
        order.exchange,
        order.symbol,
        order.side,
        order.quantity,
        _estimate(order, ticker),
        order.position_id if order.intent == "close" else None,
        nets=order.intent == "net",
        strategy_id=order.strategy_id,
        cross_rate=cross_rate,
    )
    checks = risk.evaluate(book, proposal, engine.config.leverage)
    if order.strategy_id is not None and order.intent != "close" and engine.strategies is not None:
        added = risk.increase_of(book, proposal)
        checks += engine.strategies.checks(book.account_id, order.strategy_id, proposal.value(added), added > 0)
    return checks


def _book_fill(engine: Engine, changes: Changes, order: Order, fill: Fill, reason: str) -> None:
    applied = ledger.apply_fill(changes.book, order, fill, new_id("pos"), reason)
    engine.untrack(order)
    changes.order(order, "order.filled")
    for position in applied.closed:
        changes.position(position, "position.closed", reason=position.close_reason)
        engine.ticks.done_closing(position.id)
    for position in applied.updated:
        changes.position(position, "position.updated")
    for position in applied.opened:
        changes.position(position, "position.opened")


def _new_order(account_id: str, req: OrderRequest) -> Order:
    return Order(
        id=new_id("ord"),
        account_id=account_id,
        exchange=req.exchange,
        symbol=req.symbol,
        side=req.side,
        type=req.type,
        quantity=req.quantity,
        status="open",
        intent="net",
        price=req.price,
        stop_price=req.stop_price,
        stop_loss=req.stop_loss,
        take_profit=req.take_profit,
        client_order_id=req.client_order_id,
        strategy_id=req.strategy_id,
    )


async def place_order(engine: Engine, account_id: str, req: OrderRequest, *, test_key: bool = False) -> Order:
    venue = engine.venues.get(account_id, req.exchange, test_key=test_key)
    await rules.check_steps(venue, req.symbol, req.quantity, rules.prices_of(req, rules.ORDER_PRICES))
    if req.stop_loss is not None or req.take_profit is not None:
        reference = req.price or req.stop_price or (await venue.ticker(req.symbol)).last
        _check_protection("long" if req.side == "buy" else "short", reference, req.stop_loss, req.take_profit)
    order = _new_order(account_id, req)

    async def command(changes: Changes) -> Order:
        await _submit(engine, changes, venue, order)
        return order

    return await engine.run(account_id, command)


async def cancel_order(engine: Engine, account_id: str, order_id: str) -> Order:
    async def command(changes: Changes) -> Order:
        order = changes.book.orders.get(order_id)
        if order is None:
            stored = await engine.store.get_order(account_id, order_id)
            if stored is None:
                raise NotFound(f"no order {order_id}")
            raise OrderNotOpen(f"order {order_id} is {stored.status}; only open orders can be canceled")
        if order.status != "open":
            raise OrderNotOpen(f"order {order_id} is {order.status}; only open orders can be canceled")
        venue = engine.venues.get(account_id, order.exchange)
        assert order.venue_order_id is not None
        answer = await venue.cancel(order.venue_order_id, order.symbol)
        if answer.status != "canceled":
            if answer.fill is not None:
                book_resting_fill(engine, changes, order, answer.fill)
            raise OrderNotOpen(f"order {order_id} has already filled")
        _mark_canceled(engine, changes, order)
        return order

    return await engine.run(account_id, command)


def _mark_canceled(engine: Engine, changes: Changes, order: Order) -> None:
    order.status = "canceled"
    order.updated_at = now()
    engine.untrack(order)
    changes.book.orders.pop(order.id, None)
    changes.order(order, "order.canceled")
    if order.intent == "open" and order.position_id:
        position = changes.book.positions.pop(order.position_id, None)
        if position is not None and position.status == "pending":
            position.status = "canceled"
            position.closed_at = now()
            position.close_reason = "entry_canceled"
            changes.position(position, "position.canceled", reason="entry_canceled")


def _validation(checks: list[risk.Check]) -> dict[str, Any]:
    return {"cerberus_status": "passed", "checks": [c.check for c in checks], "results": [c.as_json() for c in checks]}


async def open_position(
    engine: Engine, account_id: str, req: PositionRequest, *, test_key: bool = False, position_id: str | None = None
) -> tuple[Position, dict[str, Any]]:
    """Open at market (status open) or rest a limit or stop entry at entry_price (status pending); with Cerberus's
    verdict."""
    venue = engine.venues.get(account_id, req.exchange, test_key=test_key)
    await rules.check_steps(venue, req.symbol, req.quantity, rules.prices_of(req, rules.POSITION_PRICES))

    async def command(changes: Changes) -> tuple[Position, dict[str, Any]]:
        nonlocal position_id
        position_id = position_id or new_id("pos")
        side: Side = "buy" if req.side == "long" else "sell"
        order = Order(
            id=new_id("ord"),
            account_id=account_id,
            exchange=req.exchange,
            symbol=req.symbol,
            side=side,
            type="market" if req.entry_price is None else req.entry_type,
            quantity=req.quantity,
            status="open",
            intent="open",
            price=req.entry_price if req.entry_type == "limit" else None,
            stop_price=req.entry_price if req.entry_type == "stop" else None,
            stop_loss=req.stop_loss,
            take_profit=req.take_profit,
            position_id=position_id,
            strategy_id=req.strategy_id,
        )
        ticker = await venue.ticker(req.symbol)
        _check_protection(req.side, req.entry_price or ticker.last, req.stop_loss, req.take_profit)
        pending = Position(
            id=position_id,
            account_id=account_id,
            exchange=req.exchange,
            symbol=req.symbol,
            side=req.side,
            quantity=req.quantity,
            entry_price=req.entry_price or ticker.last,
            status="pending",
            current_price=ticker.last,
            stop_loss=req.stop_loss,
            take_profit=req.take_profit,
            strategy_id=req.strategy_id,
            entry_order_id=order.id,
        )
        changes.book.positions[position_id] = pending
        try:
            checks = await _submit(engine, changes, venue, order)
        except BaseException:
            changes.book.positions.pop(position_id, None)
            if order.status == "rejected":
                pending.status = "rejected"
                pending.closed_at = now()
                changes.position(pending, "position.rejected", reason=order.reject_reason)
            raise
        position = changes.book.positions[position_id]
        if order.status == "open":
            changes.position(position)
        return position, _validation(checks)

    return await engine.run(account_id, command)


async def amend_entry(
    engine: Engine, account_id: str, position_id: str, req: EntryUpdate, *, test_key: bool = False
) -> Position:
    """Move a pending position's entry, or change only its stop loss / take profit. A new price replaces the resting
    entry order in one command (Cerberus judges the new one in place of the old, then the old is canceled at the
    venue and the new one placed); the position keeps its id. An entry that filled meanwhile is booked, and 409."""

    async def command(changes: Changes) -> Position:
        position, entry = await _pending_entry_of(engine, changes, position_id)
        given = req.model_fields_set
        old_price = entry.price if entry.type == "limit" else entry.stop_price
        assert old_price is not None
        price = req.entry_price if "entry_price" in given and req.entry_price is not None else old_price
        stop_loss = req.stop_loss if "stop_loss" in given else position.stop_loss
        take_profit = req.take_profit if "take_profit" in given else position.take_profit
        venue = engine.venues.get(account_id, position.exchange, test_key=test_key)
        prices = {"entry_price": price, "stop_loss": req.stop_loss, "take_profit": req.take_profit}
        await rules.check_steps(venue, position.symbol, None, prices)
        _check_protection(position.side, price, stop_loss, take_profit)
        if price == old_price:
            position.stop_loss, position.take_profit = stop_loss, take_profit
            entry.stop_loss, entry.take_profit = stop_loss, take_profit
            entry.updated_at = now()
            changes.order(entry)
            changes.position(position, "position.updated")
            return position
        order = replace(
            entry,
            id=new_id("ord"),
            price=price if entry.type == "limit" else None,
            stop_price=price if entry.type == "stop" else None,
            stop_loss=stop_loss,
            take_profit=take_profit,
            venue_order_id=None,
            created_at=now(),
            updated_at=now(),
        )
        ticker = await venue.ticker(position.symbol)
        if order.type == "stop":
            assert order.stop_price is not None
            rules.check_trigger(order.side, order.stop_price, ticker)
        _judge_in_place_of(engine, changes, entry, order, ticker)
        assert entry.venue_order_id is not None
        answer = await venue.cancel(entry.venue_order_id, entry.symbol)
        if answer.status != "canceled":
            if answer.fill is not None:
                book_resting_fill(engine, changes, entry, answer.fill)
            raise OrderNotOpen(f"the entry of position {position_id} has already filled")
        entry.status, entry.updated_at = "canceled", now()
        engine.untrack(entry)
        changes.book.orders.pop(entry.id, None)
        changes.order(entry, "order.canceled")
        position.entry_order_id, position.entry_price = order.id, price
        position.stop_loss, position.take_profit = stop_loss, take_profit
        try:
            await _submit(engine, changes, venue, order)
        except BaseException:
            # The old entry is gone at the venue and the new one never rested: the position has no entry any more.
            changes.book.positions.pop(position_id, None)
            position.closed_at = now()
            if order.status == "rejected":
                position.status = "rejected"
                changes.position(position, "position.rejected", reason=order.reject_reason)
            else:
                position.status, position.close_reason = "canceled", "entry_canceled"
                changes.position(position, "position.canceled", reason="entry_canceled")
            raise
        if order.status == "open":
            changes.position(position, "position.updated")
        return changes.book.positions.get(position_id, position)

    return await engine.run(account_id, command)


async def _pending_entry_of(engine: Engine, changes: Changes, position_id: str) -> tuple[Position, Order]:
    position = changes.book.positions.get(position_id)
    if position is None:
        stored = await engine.store.get_position(changes.book.account_id, position_id)
        if stored is None:
            raise NotFound(f"no position {position_id}")
        raise OrderNotOpen(f"position {position_id} is {stored.status}; only a pending entry can be changed")
    entry = changes.book.orders.get(position.entry_order_id or "")
    if position.status != "pending" or entry is None or entry.status != "open":
        raise OrderNotOpen(f"position {position_id} is {position.status}; only a pending entry can be changed")
    return position, entry


def _judge_in_place_of(engine: Engine, changes: Changes, old: Order, new: Order, ticker: Ticker) -> None:
    """Cerberus on the new entry as if the old one no longer rested, before anything changes at the venue: a refused
    amendment leaves the old entry as it was."""
    book = changes.book
    book.orders.pop(old.id, None)
    try:
        checks = _judge(engine, book, new, ticker, engine.ticks.cross_rate(book.account_id, new.exchange, new.symbol))
    finally:
        book.orders[old.id] = old
    risk.enforce(checks, position_id=new.position_id)


def _check_protection(side: str, price: Decimal, stop_loss: Decimal | None, take_profit: Decimal | None) -> None:
    long = side == "long"
    errors = []
    if stop_loss is not None and (stop_loss >= price if long else stop_loss <= price):
        errors.append({"field": "stop_loss", "message": f"must be {'below' if long else 'above'} the price {price}"})
    if take_profit is not None and (take_profit <= price if long else take_profit >= price):
        errors.append({"field": "take_profit", "message": f"must be {'above' if long else 'below'} the price {price}"})
    if errors:
        raise BadRequest("stop loss / take profit on the wrong side of the price", errors=errors)


async def close_position(engine: Engine, account_id: str, position_id: str, reason: str = "manual") -> Position:
    async def command(changes: Changes) -> Position:
        position = await _open_position_of(engine, changes, position_id)
        await _close(engine, changes, position, reason)
        return position

    return await engine.run(account_id, command)


async def _open_position_of(engine: Engine, changes: Changes, position_id: str) -> Position:
    """The open position from the book, which holds every live one. The store only tells a finished position from
    a missing one: its copy may predate a close that just committed, and acting on it would trade the close again."""
    position = changes.book.positions.get(position_id)
    if position is None:
        stored = await engine.store.get_position(changes.book.account_id, position_id)
        if stored is None:
            raise NotFound(f"no position {position_id}")
        raise PositionNotOpen(f"position {position_id} is no longer open")
    if position.status != "open":
        raise PositionNotOpen(f"position {position_id} is {position.status}")
    return position


async def _close(engine: Engine, changes: Changes, position: Position, reason: str) -> None:
    order = Order(
        id=new_id("ord"),
        account_id=position.account_id,
        exchange=position.exchange,
        symbol=position.symbol,
        side="sell" if position.side == "long" else "buy",
        type="market",
        quantity=position.quantity,
        status="open",
        intent="close",
        position_id=position.id,
        strategy_id=position.strategy_id,
    )
    venue = engine.venues.get(position.account_id, position.exchange)
    await _submit(engine, changes, venue, order, reason=reason)


async def update_position(engine: Engine, account_id: str, position_id: str, req: PositionUpdate) -> Position:
    async def command(changes: Changes) -> Position:
        position = await _open_position_of(engine, changes, position_id)
        given = req.model_fields_set
        stop_loss = req.stop_loss if "stop_loss" in given else position.stop_loss
        take_profit = req.take_profit if "take_profit" in given else position.take_profit
        venue = engine.venues.get(account_id, position.exchange)
        await rules.check_steps(venue, position.symbol, None, rules.prices_of(req, rules.PROTECTION_PRICES))
        _check_protection(position.side, position.current_price, stop_loss, take_profit)
        position.stop_loss, position.take_profit = stop_loss, take_profit
        changes.position(position, "position.updated")
        return position

    return await engine.run(account_id, command)


def book_resting_fill(engine: Engine, changes: Changes, order: Order, fill: Fill) -> None:
    """Book the fill of a resting order: from its venue's fill handler, or from a cancel that came too late."""
    changes.book.orders.pop(order.id, None)
    _book_fill(engine, changes, order, fill, "order")
