"""What an alert does once it is authenticated and new: the hook's own limits, then the same engine calls as
POST /v1/orders (buy, sell) or a close of the symbol's positions (close; flat also cancels its open orders), and the
event that says how it went, stored with the write."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from rt.alerts.parse import Alert, refuse
from rt.engine import trading
from rt.engine.engine import Changes, Engine
from rt.engine.requests import OrderRequest
from rt.engine.trading import _close, _mark_canceled, book_resting_fill
from rt.errors import RtError, ValidationFailed
from rt.records.alerts import AlertHook

CLOSE_REASON = "alert"


def check_limits(hook: AlertHook, symbol: str, quantity: Decimal | None) -> None:
    """The hook's symbols and max_quantity, refused as Cerberus refuses (422 with `details`)."""
    if hook.symbols and symbol not in hook.symbols:
        raise ValidationFailed(
            f"this hook does not trade {symbol}",
            details={
                "check": "alert_symbols",
                "reason": f"{symbol} is not one of the hook's symbols",
                "limit": list(hook.symbols),
                "requested": symbol,
            },
        )
    if quantity is not None and quantity > hook.max_quantity:
        raise ValidationFailed(
            f"quantity {quantity} is over this hook's max_quantity {hook.max_quantity}",
            details={
                "check": "alert_max_quantity",
                "reason": "quantity over the hook's max_quantity",
                "limit": hook.max_quantity,
                "requested": quantity,
            },
        )


def order_request(hook: AlertHook, alert: Alert) -> OrderRequest:
    defaults = hook.defaults
    quantity = alert.quantity if alert.quantity is not None else defaults.get("quantity")
    if quantity is None:
        raise refuse("quantity", "is required: this hook has no default quantity")
    check_limits(hook, alert.symbol, quantity)
    kind = alert.type or defaults.get("type") or "market"
    if kind == "limit" and alert.price is None:
        raise refuse("price", "a limit alert needs a price (the hook's default type is limit)")
    fields: dict[str, Any] = {
        "exchange": defaults.get("exchange") or "paper",
        "symbol": alert.symbol,
        "side": alert.action,
        "type": kind,
        "quantity": quantity,
        "stop_loss": alert.stop_loss,
        "take_profit": alert.take_profit,
    }
    fields["stop_price" if kind == "stop" else "price"] = alert.price if kind != "market" else None
    try:
        return OrderRequest(**fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise refuse(".".join(str(p) for p in first["loc"]) or "body", first["msg"]) from None


async def execute(engine: Engine, hook: AlertHook, alert: Alert, alert_id: str) -> list[str]:
    """The ids of the orders the alert made; raises the RtError that refused it. alert.executed is stored with it."""
    if alert.action in ("buy", "sell"):
        order = await trading.place_order(engine, hook.account_id, order_request(hook, alert), test_key=hook.test)
        await emit(engine, hook.account_id, "alert.executed", executed(hook, alert, alert_id, [order.id]))
        return [order.id]
    check_limits(hook, alert.symbol, None)
    return await flatten(engine, hook, alert, alert_id)


async def flatten(engine: Engine, hook: AlertHook, alert: Alert, alert_id: str) -> list[str]:
    """Close every open position of the symbol on the hook's exchange; `flat` first cancels its open orders too."""
    exchange = hook.defaults.get("exchange") or "paper"
    engine.venues.get(hook.account_id, exchange, test_key=hook.test)

    async def command(changes: Changes) -> list[str]:
        if alert.action == "flat":
            await _cancel_resting(engine, changes, exchange, alert.symbol)
        made: list[str] = []
        for position in changes.book.open_positions():
            if position.exchange == exchange and position.symbol == alert.symbol:
                before = set(changes.orders)
                await _close(engine, changes, position, CLOSE_REASON)
                made.extend(order_id for order_id in changes.orders if order_id not in before)
        changes.event("alert.executed", executed(hook, alert, alert_id, made))
        return made

    return await engine.run(hook.account_id, command)


async def _cancel_resting(engine: Engine, changes: Changes, exchange: str, symbol: str) -> None:
    resting = [
        o for o in changes.book.orders.values() if o.status == "open" and o.exchange == exchange and o.symbol == symbol
    ]
    for order in resting:
        venue = engine.venues.get(order.account_id, order.exchange)
        assert order.venue_order_id is not None
        answer = await venue.cancel(order.venue_order_id, order.symbol)
        if answer.status == "canceled":
            _mark_canceled(engine, changes, order)
        elif answer.fill is not None:
            # Filled before the cancel arrived: booked now, so the close that follows sees the position.
            book_resting_fill(engine, changes, order, answer.fill)


def executed(hook: AlertHook, alert: Alert, alert_id: str, order_ids: list[str]) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "hook_id": hook.id,
        "action": alert.action,
        "symbol": alert.symbol,
        "order_ids": order_ids,
    }


async def rejected(engine: Engine, hook: AlertHook, alert_id: str, error: RtError) -> None:
    data = {"alert_id": alert_id, "hook_id": hook.id, "code": error.code, "detail": error.detail}
    await emit(engine, hook.account_id, "alert.rejected", data)


async def emit(engine: Engine, account_id: str, name: str, data: dict[str, Any]) -> None:
    async def command(changes: Changes) -> None:
        changes.event(name, data)

    await engine.run(account_id, command)
